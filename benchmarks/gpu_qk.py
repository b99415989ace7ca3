"""q·kᵀ of bf16 inputs at a prefill shape like the xLSTM-7B one on CUDA: the ways to compute it, timed, and
their error vs a float64 reference (why ``families.half_matmul`` uses ``bmm(out_dtype=float32)``).

Shape (B, heads, chunks, L, D) = (1, 8, 8, 256, 512) (the 7B model: D = DHQK = 256); each way eager and under ``torch.compile``,
with TF32 off and on; ms per call (mean of 50 after 3 warm-ups).

    python3 benchmarks/gpu_qk.py
"""
import time

import torch

torch.manual_seed(0)
dev = "cuda"
B, HB, NC, L, D = 1, 8, 8, 256, 512
q = torch.randn(B, HB, NC, L, D, device=dev).to(torch.bfloat16)
k = torch.randn(B, HB, NC, L, D, device=dev).to(torch.bfloat16)
ref = q.double() @ k.double().transpose(-2, -1)

def up(q, k):
    return q.float() @ k.float().transpose(-2, -1)

def red(q, k):
    return (q.float()[..., :, None, :] * k.float()[..., None, :, :]).sum(-1)

def outdt(q, k):
    q3 = q.reshape(-1, L, D); k3 = k.reshape(-1, L, D)
    return torch.bmm(q3, k3.transpose(-2, -1), out_dtype=torch.float32).reshape(B, HB, NC, L, L)

def half(q, k):
    return (q @ k.transpose(-2, -1)).float()

def timeit(f, n=50):
    for _ in range(3): f(q, k)
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): f(q, k)
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n * 1e3

for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    for name, f in [("upcast", up), ("reduction", red), ("bmm out_dtype", outdt), ("bf16 mm", half)]:
        for comp in (False, True):
            g = torch.compile(f, fullgraph=True) if comp else f
            try:
                err = ((g(q, k).double() - ref).abs().max() / ref.abs().max()).item()
                print(f"tf32={tf32} {name:14s} compiled={comp}: {timeit(g):.3f} ms  rel err {err:.2e}", flush=True)
            except Exception as e:
                print(f"tf32={tf32} {name} compiled={comp}: {type(e).__name__}: {str(e)[:200]}", flush=True)
