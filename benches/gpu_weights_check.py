"""benches/gpu.sh's Python-module row: a model tag loaded with thaw_weights onto cuda:0, every
tensor compared on the device with the same tensor loaded by safetensors, and a matmul on a
loaded weight checked against float64 on the host; times both loaders in this process.

  python3 gpu_weights_check.py TAG FILE.safetensors...   (THAW_STORE / THAW_CACHE_DIR set)
"""

import sys
import time

import thaw_weights
import torch
from safetensors.torch import load_file

tag, files = sys.argv[1], sys.argv[2:]
torch.zeros(1, device="cuda")
torch.cuda.synchronize()

t0 = time.perf_counter()
model = thaw_weights.load(tag, device="cuda:0")
loaded = {name: torch.from_dlpack(tensor) for name, tensor in model.items()}
torch.cuda.synchronize()
thaw_s = time.perf_counter() - t0

t0 = time.perf_counter()
reference = {}
for f in files:
    reference.update(load_file(f, device="cuda"))
torch.cuda.synchronize()
safetensors_s = time.perf_counter() - t0

assert sorted(loaded) == sorted(reference), "the tensor names differ"
total = 0
for name, t in loaded.items():
    want = reference[name]
    assert t.device.type == "cuda" and t.dtype == want.dtype and t.shape == want.shape, name
    assert torch.equal(t.view(torch.uint8) if t.numel() else t, want.view(torch.uint8) if want.numel() else want), name
    total += t.numel() * t.element_size()

name = next(n for n, t in loaded.items() if t.dim() == 2)
w = loaded[name]
x = torch.randn(w.shape[1], 256, device="cuda", dtype=torch.bfloat16)
got = (w @ x).double().cpu()
want = w.double().cpu() @ x.double().cpu()
error = float((got - want).norm() / want.norm())
assert error < 1e-2, f"bf16 matmul off by {error}"

print(
    f"python module on cuda:0: {len(loaded)} tensors, {total / 2**30:.2f} GiB, all equal to "
    f"safetensors' on the device; matmul {name} relative error {error:.1e} (bf16)"
)
print(
    f"in-process load: thaw_weights.load {thaw_s:.3f}s ({total / thaw_s / 1e9:.2f} GB/s), "
    f"safetensors load_file(device=cuda) {safetensors_s:.3f}s ({total / safetensors_s / 1e9:.2f} GB/s), "
    f"thaw {safetensors_s / thaw_s:.2f}x faster"
)
