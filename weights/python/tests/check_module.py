"""Checks the thaw_weights module against the safetensors files it was indexed from.

Run by tests/weights_python.rs: python3 check_module.py TAG MODEL_DIR. Compares every tensor
that NumPy can type (and, where torch and a GPU exist, every tensor on cuda:0) byte for byte
with the file, and checks the mapping interface, errors and memory lifetime.
"""

import gc
import json
import struct
import sys
from pathlib import Path

import numpy as np
import thaw_weights

tag, model_dir = sys.argv[1], Path(sys.argv[2])


def file_tensors():
    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        header.pop("__metadata__", None)
        for name, info in header.items():
            begin, end = info["data_offsets"]
            out[name] = (info["dtype"], info["shape"], raw[8 + n + begin : 8 + n + end])
    return out


expected = file_tensors()
model = thaw_weights.load(tag, device="cpu", lanes=3)
assert model.device == "cpu", model.device
assert len(model) == len(expected), (len(model), len(expected))
assert sorted(model.keys()) == sorted(expected), model.keys()
assert model.report["tensor_bytes"] == sum(len(b) for _, _, b in expected.values())

numpy_types = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_}
arrays = {}
for name, tensor in model.items():
    dtype, shape, data = expected[name]
    assert tensor.dtype == dtype and list(tensor.shape) == shape, (name, tensor)
    assert tensor.read() == data, name
    if dtype in numpy_types:
        array = np.from_dlpack(tensor)
        assert array.dtype == numpy_types[dtype], (name, array.dtype)
        assert list(array.shape) == shape, (name, array.shape)
        assert array.tobytes() == data, name
        arrays[name] = array
    else:
        try:
            np.from_dlpack(tensor)
        except Exception:
            pass  # NumPy has no bfloat16; the bytes were compared above
assert arrays, "no tensor went through DLPack"

try:
    model["no-such-tensor"]
    raise AssertionError("a missing name must raise KeyError")
except KeyError:
    pass
try:
    thaw_weights.load(tag, device="tpu:0")
    raise AssertionError("a bad device must raise ValueError")
except ValueError as e:
    assert "cuda:N" in str(e), e
try:
    thaw_weights.load("no-such-model", device="cpu")
    raise AssertionError("an unknown tag must raise RuntimeError")
except RuntimeError as e:
    assert "no-such-model" in str(e), e

# The arrays keep the allocation alive after the model is gone.
del model
gc.collect()
for name, array in arrays.items():
    assert array.tobytes() == expected[name][2], f"{name} changed after the model was dropped"
print(f"cpu: {len(expected)} tensors equal ({len(arrays)} through numpy DLPack)")

try:
    import torch
except ImportError:
    torch = None
if torch is None or not torch.cuda.is_available():
    print("SKIPPED: torch with CUDA is not available; the cuda:0 DLPack check was not run")
else:
    model = thaw_weights.load(tag, device="cuda:0")
    for name, tensor in model.items():
        t = torch.from_dlpack(tensor)
        assert t.device.type == "cuda", t.device
        host = t.contiguous().view(torch.uint8).cpu().numpy().tobytes() if t.numel() else b""
        assert host == expected[name][2], name
    # A kernel uses a loaded tensor correctly: a matmul on the GPU against float64 on the host
    # (the U8 tensor: the float ones hold random bits, NaNs among them).
    w = torch.from_dlpack(model["bytes"])[:3_000_000].view(1000, 3000).float()
    x = torch.randn(w.shape[1], 64, dtype=torch.float32, device="cuda")
    got = (w @ x).double().cpu()
    want = w.double().cpu() @ x.double().cpu()
    error = float((got - want).norm() / want.norm())
    assert error < 1e-3, f"matmul on cuda:0 off by {error}"
    print(f"cuda:0: {len(model)} tensors equal through torch DLPack; matmul error {error:.1e}")
