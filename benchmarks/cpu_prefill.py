"""CPU benchmark (issue 2): our configs vs mlstm_kernels' chunkwise--native_autograd, side by side.

Prefill B=1, NH=4, S=512, DHQK=64, DHV=128, float32. Prints one JSON row per implementation
(median ms over interleaved rounds, compile time of the first call, error vs float64 reference)
and the speedup of our best config over the best compiled native chunk size.
Run: ``python benchmarks/cpu_prefill.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import xlstm_kernels as xk  # noqa: E402
from common import make_inputs, rel_err  # noqa: E402

SHAPE = dict(B=1, NH=4, S=512, DHQK=64, DHV=128)
OURS = [
    xk.KernelConfig("chunkwise", chunk_size=64, t_inner=8, compile_mode="max-autotune-no-cudagraphs"),
    xk.KernelConfig("chunkwise", chunk_size=128, t_inner=4, compile_mode="max-autotune-no-cudagraphs"),
    xk.KernelConfig("chunkwise", chunk_size=64, t_inner=8),
    xk.KernelConfig("chunkwise", chunk_size=128, t_inner=4),
    xk.KernelConfig("chunkwise", chunk_size=32, t_inner=16),
    xk.KernelConfig("chunkwise", chunk_size=64, t_inner=8, heads_per_band=2),
    xk.KernelConfig("recurrent", chunk_size=16, t_inner=16),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--reps", type=int, default=20, help="calls per implementation per round")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = make_inputs(**SHAPE, dtype=torch.float32, device="cpu")
    h_ref, _ = xk.mlstm_reference(*x)
    from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_autograd as native

    impls: dict[str, object] = {}
    for cfg in OURS:
        impls["ours " + cfg.short()] = lambda cfg=cfg: xk.mlstm(*x, config=cfg)[0]
    for L in (32, 64, 128, 256):
        # dynamic=False: these lambdas share one code object, and without it Dynamo's automatic
        # dynamic shapes would compile every chunk size after the first as one slower dynamic graph.
        compiled = torch.compile(lambda *a, L=L: native(*a, chunk_size=L), dynamic=False)
        impls[f"native compiled L{L}"] = lambda f=compiled: f(*x)
    impls["native eager L64"] = lambda: native(*x, chunk_size=64)

    first, err = {}, {}
    for name, fn in impls.items():
        t0 = time.perf_counter()
        h = fn()
        first[name] = time.perf_counter() - t0
        err[name] = rel_err(h, h_ref)
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.rounds):  # interleaved: every implementation sees the same machine noise
        for name, fn in impls.items():
            t0 = time.perf_counter()
            for _ in range(args.reps):
                fn()
            samples[name].append((time.perf_counter() - t0) * 1e3 / args.reps)
    med = {name: statistics.median(s) for name, s in samples.items()}
    for name in impls:
        print(json.dumps({"impl": name, "median_ms": round(med[name], 3),
                          "spread_ms": round(max(samples[name]) - min(samples[name]), 3),
                          "first_call_s": round(first[name], 2), "rel_err": float(f"{err[name]:.2e}")}))
    ours = min((n for n in med if n.startswith("ours")), key=med.get)
    nat = min((n for n in med if n.startswith("native compiled")), key=med.get)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "best_ours": ours, "best_native_compiled": nat,
                      "speedup": round(med[nat] / med[ours], 2)}))


if __name__ == "__main__":
    main()
