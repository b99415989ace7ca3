"""CPU: what each per-call setting is worth, side by side (the figures README and the settings quote).

    PYTHONPATH=. python benchmarks/cpu_call_overhead.py [--rounds 9]

In one process, interleaved rounds of the same calls with a setting on and off:
  * ``CPP_WRAPPER`` on/off — the prefill kernel (B=1, NH=4, S=512, 64x128, chunkwise L64 T8);
  * ``DIRECT_CALLS`` on/off — per-call time of that prefill and of one decode step
    (B=1, NH=4, 32x64, ``xk.mlstm_step``), i.e. what the repeat-call fast path saves per call.
``CPU_KEEP_FREED_MEMORY`` (a process-wide mallopt) is measured in pairs of child processes, one per
value, alternating. Prints one JSON line per comparison: medians (ms or µs) and the median of the
per-round ratios off/on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

PREFILL = dict(B=1, NH=4, S=512, DHQK=64, DHV=128)
CFG = xk.KernelConfig("chunkwise", chunk_size=64, t_inner=8)


def _per_call_ms(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e3 / calls


def _with_setting(name: str, value: str) -> None:
    os.environ[f"XLSTM_AUTOTUNE_{name}"] = value
    xk.reset_settings()


def compare(setting: str, fns: dict[str, Callable[[], object]], rounds: int, calls: int, unit: str) -> dict:
    """Interleaved rounds: each round times every fn with the setting true, then false (order alternating)."""
    for value in ("true", "false"):  # compile / learn the direct calls of both first
        _with_setting(setting, value)
        for fn in fns.values():
            for _ in range(3):
                fn()
    scale = 1e3 if unit == "us" else 1.0
    out = {}
    for label, fn in fns.items():
        samples: dict[str, list[float]] = {"true": [], "false": []}
        for r in range(rounds):
            for value in (("true", "false") if r % 2 == 0 else ("false", "true")):
                _with_setting(setting, value)
                samples[value].append(_per_call_ms(fn, calls) * scale)
        ratio = statistics.median(b / a for a, b in zip(samples["true"], samples["false"]))
        out[label] = {f"on_{unit}": round(statistics.median(samples["true"]), 3),
                      f"off_{unit}": round(statistics.median(samples["false"]), 3),
                      "off_over_on_paired": round(ratio, 3)}
    os.environ.pop(f"XLSTM_AUTOTUNE_{setting}", None)
    xk.reset_settings()
    return {"setting": setting, "rounds": rounds, "calls_per_round": calls, **out}


def _child_time(keep: str, calls: int) -> float:
    """Median per-call ms of the prefill in a fresh process with CPU_KEEP_FREED_MEMORY=keep."""
    code = (
        "import sys, statistics; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/benchmarks'];"
        "import torch, xlstm_kernels as xk; from common import make_inputs;"
        "from cpu_call_overhead import PREFILL, CFG, _per_call_ms;"
        "x = make_inputs(**PREFILL, dtype=torch.float32, device='cpu');"
        "[xk.mlstm(*x, config=CFG) for _ in range(5)];"
        "print(statistics.median(_per_call_ms(lambda: xk.mlstm(*x, config=CFG), int(sys.argv[2])) for _ in range(5)))"
    )
    env = dict(os.environ, XLSTM_AUTOTUNE_CPU_KEEP_FREED_MEMORY=keep)
    res = subprocess.run([sys.executable, "-c", code, str(ROOT), str(calls)], env=env, check=True,
                         capture_output=True, text=True)
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--process-pairs", type=int, default=3, help="child-process pairs for CPU_KEEP_FREED_MEMORY")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    print(json.dumps({"machine": xk.fingerprint("cpu").cpu, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}))
    x = make_inputs(**PREFILL, dtype=torch.float32, device="cpu")
    print(json.dumps(compare("CPP_WRAPPER", {"prefill L64 T8 (ms)": lambda: xk.mlstm(*x, config=CFG)},
                             args.rounds, 20, "ms")), flush=True)
    B, NH, DHQK, DHV = 1, 4, 32, 64
    q, k, v = torch.randn(B, NH, DHQK), torch.randn(B, NH, DHQK), torch.randn(B, NH, DHV)
    i, f = torch.randn(B, NH, 1), torch.randn(B, NH, 1)
    c, n, m = xk.step_layout(torch.zeros(B, NH, DHQK, DHV)), torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1)
    step_cfg = xk.KernelConfig(t_inner=1)
    print(json.dumps(compare("DIRECT_CALLS", {
        "prefill L64 T8 (us)": lambda: xk.mlstm(*x, config=CFG),
        "decode step (us)": lambda: xk.mlstm_step(q, k, v, i, f, c, n, m, config=step_cfg),
    }, args.rounds, 200, "us")), flush=True)
    keep: dict[str, list[float]] = {"true": [], "false": []}
    for r in range(args.process_pairs):
        for value in (("true", "false") if r % 2 == 0 else ("false", "true")):
            keep[value].append(_child_time(value, 20))
    ratio = statistics.median(b / a for a, b in zip(keep["true"], keep["false"]))
    print(json.dumps({"setting": "CPU_KEEP_FREED_MEMORY", "process_pairs": args.process_pairs,
                      "on_ms": round(statistics.median(keep["true"]), 3),
                      "off_ms": round(statistics.median(keep["false"]), 3), "off_over_on_paired": round(ratio, 3)}))


if __name__ == "__main__":
    main()
