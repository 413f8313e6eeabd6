"""A CUDA process for benches/gpu.sh's snapshot rows: holds GPU state, says when it is ready,
and answers checks through files, so a restored copy can prove its device memory came back.

  python3 gpu_holder.py buffer GIB STATE   # GIB GiB of random bytes in device memory
  python3 gpu_holder.py model STATE        # a small bf16 MLP server: weights built, warmed up

Writes STATE/ready (the checksum, then the seconds from start to ready) once ready. Each time
STATE/check appears it removes it, recomputes the checksum, launches a kernel it has not run
before (a matmul of fresh tensors) and writes STATE/result ("CHECKSUM MATMUL_OK").
"""

import os
import sys
import time

started = time.perf_counter()
import torch  # noqa: E402  (the import is part of what a start from scratch pays)

mode = sys.argv[1]
state = sys.argv[-1]


def publish(name, text):
    tmp = os.path.join(state, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(state, name))


if mode == "buffer":
    n = int(float(sys.argv[2]) * (1 << 30))
    generator = torch.Generator(device="cuda").manual_seed(1)
    held = torch.randint(0, 256, (n,), dtype=torch.uint8, device="cuda", generator=generator)

    def checksum():
        words = held.view(torch.int32)
        weights = torch.arange(1, 1 + min(words.numel(), 1 << 20), device="cuda", dtype=torch.int64)
        # Position-weighted over a prefix and plain over the whole: a moved or lost page changes it.
        return int(words.sum(dtype=torch.int64)) * 31 + int((words[: weights.numel()] * weights).sum())

elif mode == "model":
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4096, 4096, bias=False) for _ in range(8)]
    held = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.GELU())])
    held = held.to(device="cuda", dtype=torch.bfloat16).eval()
    probe = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):  # warm-up: cuBLAS handles, kernels chosen
            held(probe)

    def checksum():
        with torch.no_grad():
            return float(held(probe).float().sum())

else:
    sys.exit(f"unknown mode {mode!r}: buffer GIB STATE or model STATE")

first = checksum()
torch.cuda.synchronize()
publish("ready", f"{first!r} {time.perf_counter() - started:.3f}")
while True:
    if os.path.exists(os.path.join(state, "check")):
        os.remove(os.path.join(state, "check"))
        again = checksum()
        a = torch.ones(256, 256, device="cuda")
        matmul_ok = float((a @ a).sum()) == 256.0**3
        publish("result", f"{again!r} {matmul_ok}")
    time.sleep(0.005)
