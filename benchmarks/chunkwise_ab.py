"""CPU cost of a change to the chunkwise block: the compiled block of an earlier families.py (A) vs
the current one (B), same compile key and options as the product's, interleaved rounds.

Default shape: cpu_prefill's (B=1, NH=4, S=512, DHQK=64, DHV=128, float32), chunk 64, T_inner 8 (one
compiled call covers the sequence). Prints per-config JSON: median ms of A and B, the median of the
per-round ratios B/A (each round times A and B back to back, alternating which goes first, so slow
drifts of a shared machine cancel), and whether the outputs are bit-identical on normal-range gates.
Run (quiet machine): ``python benchmarks/chunkwise_ab.py --old OLD_families.py [--rounds 30]``; get
OLD with ``git show ed67592:xlstm_kernels/families.py > /tmp/old_families.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import xlstm_kernels as xk  # noqa: E402
from common import make_inputs  # noqa: E402
from xlstm_kernels.kernels.compiler import build_compiled, fresh_code_copy, use_cpp_wrapper  # noqa: E402
from xlstm_kernels.kernels.drivers import kernel_key, plan  # noqa: E402
from xlstm_kernels.kernels.families import make_chunkwise_block  # noqa: E402


def load_old(path: Path) -> types.ModuleType:
    """An earlier families.py as a module (its relative imports pointed at the package)."""
    mod = types.ModuleType("old_families")
    src = path.read_text().replace("from .", "from xlstm_kernels.kernels.")
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=5, help="calls per sample")
    ap.add_argument("--shape", default="1,4,512,64,128", help="B,NH,S,DHQK,DHV (S a multiple of L*T)")
    ap.add_argument("--configs", default="64x8,128x4,32x16", help="chunk_size x t_inner, comma-separated")
    args = ap.parse_args()
    B, NH, S, DHQK, DHV = (int(x) for x in args.shape.split(","))
    old = load_old(args.old)
    torch.manual_seed(0)
    x = make_inputs(B, NH, S, DHQK, DHV, torch.float32, "cpu")
    states = (torch.zeros(B, NH, DHQK, DHV), torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1))
    for spec in args.configs.split(","):
        L, T = (int(v) for v in spec.split("x"))
        cfg = xk.KernelConfig("chunkwise", chunk_size=L, t_inner=T)
        p = plan(cfg, NH, S)
        assert p.blocks == 1 and p.padded_len == S, "pick S = chunk_size * t_inner (one compiled call)"
        key = kernel_key(cfg, p, B, DHQK, DHV, torch.float32, torch.device("cpu"), 1e-6, use_cpp_wrapper("cpu"))
        fa = build_compiled(key, fresh_code_copy(old.make_chunkwise_block(T, L, 1e-6, False), "ab_old"))
        fb = build_compiled(key, fresh_code_copy(make_chunkwise_block(T, L, 1e-6, False, False), "ab_new"))
        t0 = time.perf_counter()
        out_a = fa(*x, *states)
        ca = time.perf_counter() - t0
        t0 = time.perf_counter()
        out_b = fb(*x, *states)
        cb = time.perf_counter() - t0
        same = all(torch.equal(a, b) for a, b in zip(out_a, out_b))
        for _ in range(3):
            fa(*x, *states)
            fb(*x, *states)
        ta, tb, ratios = [], [], []
        for r in range(args.rounds):
            pair = {}
            for name, fn in ((("a", fa), ("b", fb)) if r % 2 == 0 else (("b", fb), ("a", fa))):
                t = time.perf_counter()
                for _ in range(args.calls):
                    fn(*x, *states)
                pair[name] = (time.perf_counter() - t) * 1e3 / args.calls
            ta.append(pair["a"])
            tb.append(pair["b"])
            ratios.append(pair["b"] / pair["a"])
        print(json.dumps({"config": cfg.short(), "shape": args.shape, "old_ms": statistics.median(ta),
                          "new_ms": statistics.median(tb), "ratio_new_over_old": statistics.median(ratios),
                          "ratio_p25_p75": statistics.quantiles(ratios, n=4)[::2] if len(ratios) >= 4 else None,
                          "bit_identical": same, "compile_s_old_new": [round(ca, 1), round(cb, 1)],
                          "rounds": args.rounds, "torch": torch.__version__, "threads": torch.get_num_threads()}),
              flush=True)


if __name__ == "__main__":
    main()
