"""CPU: what applying a config's thread count around each call costs (``KernelConfig.threads``).

    PYTHONPATH=. python benchmarks/thread_call_overhead.py [--rounds 9] [--calls 200]

In one process, interleaved rounds (order alternating) of repeat calls that take the fast path:
  * the decode step (B=1, NH=4, 32x64, ``xk.mlstm_step``) and a small prefill (B=1, NH=4, S=64, 32x64,
    chunkwise L64 T1: one compiled call), each with ``threads=None`` (nothing applied) against
    ``threads=<the process's count>`` (the count is read on every call, nothing set): the check alone;
  * ``torch.get_num_threads()`` against nothing: what every CPU call now pays once (compile key,
    the fast path's check that the caller's count is still the one its kernel was compiled for);
  * ``xk.use_threads(n)`` around an empty block with ``n`` another count: one set and one restore,
    what a pinned config costs a caller whose count differs (on top of its kernel's own time).
Prints one JSON line per comparison: medians (µs per call) and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import xlstm_kernels as xk  # noqa: E402
from common import make_inputs  # noqa: E402


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e6 / calls


def compare(label: str, a: Callable[[], object], b: Callable[[], object], rounds: int, calls: int,
            names: tuple[str, str]) -> dict:
    """Interleaved rounds of ``a`` and ``b`` (warmed first); medians and the median paired ratio b/a."""
    for fn in (a, b):
        for _ in range(5):
            fn()
    samples: dict[str, list[float]] = {names[0]: [], names[1]: []}
    for r in range(rounds):
        for name, fn in ((names[0], a), (names[1], b)) if r % 2 == 0 else ((names[1], b), (names[0], a)):
            samples[name].append(_per_call_us(fn, calls))
    ratio = statistics.median(y / x for x, y in zip(samples[names[0]], samples[names[1]]))
    return {"call": label, "rounds": rounds, "calls_per_round": calls,
            **{f"{n}_us": round(statistics.median(s), 3) for n, s in samples.items()},
            f"{names[1]}_over_{names[0]}_paired": round(ratio, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    n = torch.get_num_threads()
    print(json.dumps({"machine": xk.fingerprint("cpu").cpu, "torch": torch.__version__, "threads": n,
                      "date": time.strftime("%Y-%m-%d")}))
    B, NH, DHQK, DHV = 1, 4, 32, 64
    q, k, v = torch.randn(B, NH, DHQK), torch.randn(B, NH, DHQK), torch.randn(B, NH, DHV)
    i, f = torch.randn(B, NH, 1), torch.randn(B, NH, 1)
    c, m0 = xk.step_layout(torch.zeros(B, NH, DHQK, DHV)), torch.zeros(B, NH, 1)
    n0 = torch.zeros(B, NH, DHQK)
    step, pinned = xk.KernelConfig(t_inner=1), xk.KernelConfig(t_inner=1, threads=n)
    print(json.dumps(compare("decode step", lambda: xk.mlstm_step(q, k, v, i, f, c, n0, m0, config=step),
                             lambda: xk.mlstm_step(q, k, v, i, f, c, n0, m0, config=pinned),
                             args.rounds, args.calls, ("none", "same_count"))), flush=True)
    x = make_inputs(B, NH, 64, DHQK, DHV, dtype=torch.float32, device="cpu")
    pre, pre_pinned = xk.KernelConfig(chunk_size=64, t_inner=1), xk.KernelConfig(chunk_size=64, t_inner=1, threads=n)
    print(json.dumps(compare("prefill S=64 L64 T1", lambda: xk.mlstm(*x, config=pre),
                             lambda: xk.mlstm(*x, config=pre_pinned),
                             args.rounds, args.calls, ("none", "same_count"))), flush=True)
    other = 1 if n != 1 else 2

    def nothing() -> None:
        pass

    print(json.dumps(compare("torch.get_num_threads()", nothing, torch.get_num_threads, args.rounds,
                             args.calls * 10, ("none", "get"))), flush=True)

    def empty() -> None:
        with xk.use_threads(None):
            pass

    def switched() -> None:
        with xk.use_threads(other):
            pass

    print(json.dumps(compare(f"use_threads({other}) around nothing", empty, switched, args.rounds,
                             args.calls * 10, ("none", "set_and_restore"))), flush=True)


if __name__ == "__main__":
    main()
