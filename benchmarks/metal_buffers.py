"""Metal kernels and buffer arguments per family x T_inner, generated off-Mac (issue 21).

Inductor's own MPS code generator writes the Metal source of one tile of each block on fake MPS tensors
(``xlstm_kernels.probe.metal_codegen``); the scanner counts every kernel's buffer arguments (Metal allows 31)
and declared threadgroup memory. Not a timing: nothing is compiled by Metal or run, so any machine
gives the same table for one torch version.

Run: ``python benchmarks/metal_buffers.py [--workload 1,4,512,64,128,float32 ...] [--knob]``.
Default workloads: the settings' default prefill workload and the xLSTM-7B head shape (NH 8, DHQK 256,
DHV 512). ``--knob`` adds the max buffers under ``max_fusion_unique_io_buffers=31``. Prints one JSON
line per row, then a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from xlstm_kernels.kernels.config import T_INNER_LADDER, KernelConfig, Workload  # noqa: E402
from xlstm_kernels.kernels.drivers import kernel_key, plan  # noqa: E402
from xlstm_kernels.probe.metal_codegen import block_metal_scan  # noqa: E402
from xlstm_kernels.probe import EPS, FUSION_KNOB  # noqa: E402
from tuner.settings import get_tuner_settings  # noqa: E402

SEVEN_B = "1,8,512,256,512,float32"  # xLSTM-7B: 8 heads, DHQK 256, DHV 512


def rows_for(wl: Workload, limit: int, knob: bool) -> list[dict]:
    """One row per (family, T_inner) for one workload; chunkwise takes the largest chunk <= 64 that S fills."""
    out = []
    for family in ("recurrent", "chunkwise"):
        for t in sorted(T_INNER_LADDER):
            chunk = 16 if family == "recurrent" else min(64, max(1, wl.S // t))
            cfg = KernelConfig(family, chunk_size=chunk, t_inner=t)
            key = kernel_key(cfg, plan(cfg, wl.NH, wl.S), wl.B, wl.DHQK, wl.DHV, torch.float32,
                             torch.device("mps"), EPS)
            t0 = time.perf_counter()
            scan = block_metal_scan(key)
            row = {"workload": str(wl), "family": family, "chunk": chunk if family == "chunkwise" else None,
                   "t_inner": key.t_inner, "kernels": scan.kernel_count, "max_buffers": scan.max_buffers,
                   "over_limit": len(scan.over_limit(limit)), "max_threadgroup_bytes": scan.max_threadgroup_bytes}
            if knob:
                kscan = block_metal_scan(dataclasses.replace(key, inductor_options=((FUSION_KNOB, limit),)))
                row.update(knob_kernels=kscan.kernel_count, knob_max_buffers=kscan.max_buffers)
            row["codegen_s"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main() -> None:
    s = get_tuner_settings()
    prefill = [w for w in s.workloads if Workload.parse(w).mode == "prefill"]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", action="append", help="repeatable; default: settings' prefill workloads + 7B")
    ap.add_argument("--limit", type=int, default=s.metal_buffer_limit, help="Metal's buffer limit")
    ap.add_argument("--knob", action="store_true", help=f"also count under {FUSION_KNOB}=limit")
    args = ap.parse_args()
    wls = [Workload.parse(w) for w in (args.workload or prefill + [SEVEN_B])]
    rows = [r for wl in wls for r in rows_for(wl, args.limit, args.knob)]
    print(f"\nMetal (generated off-Mac by Inductor's MPS code generator), torch {torch.__version__}\n")
    knob_h = f" | max buffers with {FUSION_KNOB}={args.limit}" if args.knob else ""
    print(f"| workload | family | T_inner | chunk | Metal kernels | max buffers per kernel | over {args.limit} "
          f"| max threadgroup bytes{knob_h} |")
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.knob else ""))
    for r in rows:
        over = f"**{r['over_limit']}**" if r["over_limit"] else "0"
        mb = f"**{r['max_buffers']}**" if r["over_limit"] else str(r["max_buffers"])
        knob = f" | {r['knob_max_buffers']}" if args.knob else ""
        print(f"| {r['workload']} | {r['family']} | {r['t_inner']} | {r['chunk'] or '–'} | {r['kernels']} | {mb} "
              f"| {over} | {r['max_threadgroup_bytes']}{knob} |")


if __name__ == "__main__":
    main()
