"""CPU benchmark: our configs vs mlstm_kernels' chunkwise--native_autograd, side by side, compiled alike.

Prefill B=1, NH=4, S=512, DHQK=64, DHV=128, float32. The native kernel is compiled three ways:
plain ``torch.compile`` ("native plain"), and with exactly the Inductor options our kernels get
(``xlstm_kernels.kernels.compiler.mode_options``: the C++ wrapper, and max-autotune-no-cudagraphs) —
"native like-ours". Selection is kept apart from measurement: the best of ours and the best of each
native group are picked on ``--select-rounds`` interleaved rounds, then ``--rounds`` FRESH interleaved
rounds time everything; the speedups are computed on those fresh rounds only (ratio of medians, and
the median of per-round ratios). Prints one JSON row per implementation (median ms of the fresh
rounds, compile time of the first call, error vs the float64 reference), then the summary. Rows "matmuls alone" time just the four batched matmuls (q·kᵀ, kᵀ·v,
S·v, q·C) that a chunkwise call of that chunk size makes, and which the native algorithm makes too:
``speedup_ceiling`` = native / those matmuls is the speedup ours would reach if nothing but its
matmuls took time.
Run: ``python benchmarks/cpu_prefill.py [--select-rounds 3] [--rounds 7]`` (a quiet machine: nothing else compiling).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import xlstm_kernels as xk  # noqa: E402
from common import make_inputs, rel_err  # noqa: E402
from tuner._timing import time_one  # noqa: E402

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


def matmuls_alone(L: int, B: int, NH: int, S: int, DHQK: int, DHV: int) -> Callable[[], None]:
    """The batched matmuls of one chunkwise call with chunk size ``L`` (q·kᵀ, kᵀ·v, S·v, q·C), alone."""
    n = B * NH * S // L
    q, k = torch.randn(n, L, DHQK), torch.randn(n, L, DHQK)
    v, s, c = torch.randn(n, L, DHV), torch.randn(n, L, L), torch.randn(n, DHQK, DHV)
    o_qk, o_kv = torch.empty(n, L, L), torch.empty(n, DHQK, DHV)
    o_sv, o_qc = torch.empty(n, L, DHV), torch.empty(n, L, DHV)

    def run() -> None:
        torch.bmm(q, k.transpose(-2, -1), out=o_qk)
        torch.bmm(k.transpose(-2, -1), v, out=o_kv)
        torch.bmm(s, v, out=o_sv)
        torch.bmm(q, c, out=o_qc)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7, help="fresh interleaved rounds the speedups come from")
    ap.add_argument("--select-rounds", type=int, default=3, help="interleaved rounds that pick the bests")
    ap.add_argument("--reps", type=int, default=20, help="calls per implementation per round")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = make_inputs(**SHAPE, dtype=torch.float32, device="cpu")
    h_ref, _ = xk.mlstm_reference(*x)
    from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_autograd as native

    from xlstm_kernels.kernels.compiler import mode_options

    impls: dict[str, Callable[[], object]] = {}
    chunk_of: dict[str, int] = {}
    for cfg in OURS:
        impls["ours " + cfg.short()] = lambda cfg=cfg: xk.mlstm(*x, config=cfg)[0]
        chunk_of["ours " + cfg.short()] = cfg.chunk_size
    # the native lambdas below share one code object, and Dynamo keeps at most recompile_limit (8)
    # graphs per code object before running it eagerly: room for all 10 native variants
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
    variants = {"plain": None, "like-ours": mode_options("default", cpp_wrapper=True),
                "like-ours max-autotune": mode_options("max-autotune-no-cudagraphs", cpp_wrapper=True)}
    for label, opts in variants.items():
        for L in (32, 64, 128, 256) if label != "like-ours max-autotune" else (64, 128):
            # dynamic=False: these lambdas share one code object, and without it Dynamo's automatic
            # dynamic shapes would compile every chunk size after the first as one slower dynamic graph.
            compiled = torch.compile(lambda *a, L=L: native(*a, chunk_size=L), dynamic=False, options=opts)
            impls[f"native {label} L{L}"] = lambda f=compiled: f(*x)
    impls["native eager L64"] = lambda: native(*x, chunk_size=64)
    for L in sorted({cfg.chunk_size for cfg in OURS if cfg.family == "chunkwise"}):
        impls[f"matmuls alone L{L}"] = matmuls_alone(L, **SHAPE)

    first, err = {}, {}
    for name, fn in impls.items():
        t0 = time.perf_counter()
        h = fn()
        first[name] = time.perf_counter() - t0
        err[name] = rel_err(h, h_ref) if h is not None else None
        for _ in range(3):
            fn()

    def rounds(n: int) -> dict[str, list[float]]:
        """``n`` interleaved rounds: every implementation sees the same machine noise."""
        samples: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(n):
            for name, fn in impls.items():
                samples[name].append(time_one(fn, "cpu", args.reps))  # the library's timer
        return samples

    def best(samples: dict[str, list[float]], prefix: str) -> str:
        return min((n for n in samples if n.startswith(prefix)), key=lambda n: statistics.median(samples[n]))

    picked = rounds(args.select_rounds)
    ours, plain, like = best(picked, "ours"), best(picked, "native plain"), best(picked, "native like-ours")
    fresh = rounds(args.rounds)
    med = {name: statistics.median(s) for name, s in fresh.items()}
    for name in impls:
        print(json.dumps({"impl": name, "median_ms": round(med[name], 3),
                          "spread_ms": round(max(fresh[name]) - min(fresh[name]), 3),
                          "first_call_s": round(first[name], 2),
                          "rel_err": None if err[name] is None else float(f"{err[name]:.2e}")}))

    def speedup(nat: str) -> dict[str, float]:
        paired = statistics.median(a / b for a, b in zip(fresh[nat], fresh[ours]))
        return {"vs": nat, "ratio_of_medians": round(med[nat] / med[ours], 3), "paired_rounds": round(paired, 3)}

    floor = f"matmuls alone L{chunk_of[ours]}"
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "select_rounds": args.select_rounds, "rounds": args.rounds,
                      "best_ours": ours, "speedup_vs_native_like_ours": speedup(like),
                      "speedup_vs_native_plain": speedup(plain),
                      "matmul_floor_ms": round(med[floor], 3) if floor in med else None,
                      "speedup_ceiling": round(med[like] / med[floor], 2) if floor in med else None}))


if __name__ == "__main__":
    main()
