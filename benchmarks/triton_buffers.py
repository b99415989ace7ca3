"""Static check of Inductor's generated kernels per T_inner (issue 3): kernel count and buffer
arguments per kernel, for both families, on the current device (run on the GPU machine for Triton).

Run: ``python benchmarks/triton_buffers.py [--device cuda] [--workload 1,4,256,64,128,bfloat16]``.
Prints one JSON line per (family, T_inner) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlstm_kernels.kernels.config import KernelConfig, Workload  # noqa: E402
from xlstm_kernels.probe import fuse_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workload", default="1,4,256,64,128,bfloat16")
    ap.add_argument("--limit", type=int, default=31, help="Metal's limit, checked statically")
    args = ap.parse_args()
    wl = Workload.parse(args.workload)
    rows = []
    for family, chunk in (("recurrent", 16), ("chunkwise", 16)):
        for t in (1, 2, 4, 8, 16):
            cfg = KernelConfig(family, chunk_size=chunk, t_inner=t)
            rep = fuse_report(cfg, wl, device=args.device, max_buffers=args.limit)
            scan = rep.kernels
            row = {"family": family, "chunk": chunk, "t_inner": t, "ok": rep.ok,
                   "kernels": scan.kernel_count if scan else None,
                   "max_buffers": scan.max_buffers if scan else None,
                   "over_limit": len(rep.over_limit()), "graphs": rep.graphs,
                   "graph_breaks": rep.graph_breaks, "compile_s": round(rep.compile_s or 0, 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n| family | T_inner | kernels | max buffers/kernel | kernels over {args.limit} | compile s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['family']} L{r['chunk']} | {r['t_inner']} | {r['kernels']} | {r['max_buffers']} | "
              f"{r['over_limit']} | {r['compile_s']} |")


if __name__ == "__main__":
    main()
