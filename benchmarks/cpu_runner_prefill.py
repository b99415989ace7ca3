"""The CPU prefill of the whole model: the native eager model vs runner variants, side by side.

The model is ``examples/generate.py``'s default small ``xLSTMLarge`` (d 256, 4 heads, 2 blocks, vocab
512, random weights, float32), B=1, prompt 256, as its TTFT figure runs it. Rows: the native eager
model; the runner with its defaults (the prefill kernel from this machine's profile, else the
default config); with ``fuse_projections``; and with ``fuse_projections`` and explicit prefill
kernel configs (chunkwise L/T). Every round times each row once, in turn, so the
box's drift hits all rows alike; printed: median ms, native/row (ratio of medians) and the median of
the per-round ratios. The runner's prefill computes the last position's logits only (``last_only``),
as generation needs; the native model computes all of them, as it does.

Run: ``PYTHONPATH=. python benchmarks/cpu_runner_prefill.py --threads 1``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import torch  # noqa: E402

import xlstm_kernels as xk  # noqa: E402
from generate import build_model  # noqa: E402

KERNELS = ((32, 8), (64, 4), (128, 2))  # chunkwise (chunk size, T_inner) rows, each one block of 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(argparse.Namespace(embedding_dim=256, heads=4, blocks=2, vocab=512))
    prompt = torch.randint(0, 512, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    configs = {"runner": xk.ModelRunConfig(), "runner+fused": xk.ModelRunConfig(fuse_projections=True)}
    for L, T in KERNELS:
        kernel = xk.KernelConfig("chunkwise", chunk_size=L, t_inner=T)
        configs[f"runner+fused L{L} T{T}"] = xk.ModelRunConfig(fuse_projections=True, prefill=kernel)
    warnings.simplefilter("ignore", xk.ProfileWarning)  # the rows name their configs; no profile is needed
    rows = {"native eager": lambda: model(prompt)}
    for name, cfg in configs.items():
        runner = xk.compile_model(model, config=cfg, max_seq_len=args.prompt + 8)
        rows[name] = lambda r=runner: r.prefill(prompt, last_only=True)
    print(f"# torch {torch.__version__}, {args.threads} thread(s), prompt {args.prompt}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} rounds", flush=True)
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.no_grad():
        for fn in rows.values():  # compile and warm up
            for _ in range(3):
                fn()
        for _ in range(args.rounds):
            for name, fn in rows.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    native = times["native eager"]
    print(f"{'row':<26} {'median ms':>10} {'native/row':>11} {'paired':>7}")
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = statistics.median(a / b for a, b in zip(native, ts))
        print(f"{name:<26} {med * 1e3:>10.2f} {statistics.median(native) / med:>11.2f} {paired:>7.2f}")


if __name__ == "__main__":
    main()
