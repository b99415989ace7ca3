"""Precision modes on spiky gates with carried-in states (issue 15): h and state errors vs float64.

Shape B=2, NH=12, DHQK=64, DHV=192, S=1000 (``--quick``: S=200), inputs from ``xk.validation_inputs``
(carried-in C, n, m; one input-gate spike i=+12 and one forget gate f=-30 per head), bf16 and fp32
inputs. Rows: every precision mode through ``xk.mlstm`` (compiled), and with ``--old PATH`` (a copy of
an earlier ``xlstm_kernels/kernels/families.py``) the old and the new chunkwise block run eagerly under the
same matmul precision, the before/after of one change. Prints one JSON row per case.
Run (CUDA): ``python benchmarks/precision_spikes.py [--old /path/to/old_families.py] [--quick]``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import xlstm_kernels as xk  # noqa: E402
from xlstm_kernels.kernels.families import make_chunkwise_block  # noqa: E402

SHAPE = dict(B=2, NH=12, S=1000, DHQK=64, DHV=192)
L, T_INNER = 64, 4


def eager_block(fn, x: tuple[torch.Tensor, ...], tf32: bool):
    """One eager call of a chunkwise block over the whole (padded) sequence under the given TF32 flag."""
    q, k, v, i, f, c, n, m = x
    S = q.shape[2]
    pad = math.ceil(S / L) * L - S
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    i, f = F.pad(i, (0, pad), value=float("-inf")), F.pad(f, (0, pad), value=float("inf"))
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        h, c, n, m = fn(q, k, v, i, f, c, n, m)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return h[:, :, :S], (c, n, m)


def errors(out, ref) -> dict[str, float]:
    """rel_err of h and each state (inf where non-finite)."""
    names = ("h", "C", "n", "m")
    vals = (out[0], *out[1])
    refs = (ref[0], *ref[1])
    return {k: (xk.rel_err(a, b) if torch.isfinite(a).all() else math.inf) for k, a, b in zip(names, vals, refs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, help="an earlier families.py: eager before/after rows")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    shape = {**SHAPE, "S": 200} if args.quick else SHAPE
    old = None
    if args.old:
        old = types.ModuleType("old_families")
        src = args.old.read_text().replace("from .reference import", "from xlstm_kernels.kernels.reference import")
        exec(compile(src, str(args.old), "exec"), old.__dict__)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        x = xk.validation_inputs(**shape, dtype=dtype, device=dev, seed=0)
        ref = xk.mlstm_reference(*x)
        base = {"dtype": str(dtype).split(".")[-1], **shape, "device": torch.cuda.get_device_name() if dev == "cuda" else dev,
                "torch": torch.__version__}
        for prec in ("fp32", "tf32", "mixed"):
            cfg = xk.KernelConfig("chunkwise", chunk_size=L, t_inner=T_INNER, precision=prec)
            h, st = xk.mlstm(*x, config=cfg)
            rows.append({**base, "case": f"compiled {prec}", **errors((h, st), ref)})
        if old is not None:
            for prec in ("tf32", "mixed"):
                mixed, tf32 = prec == "mixed", prec == "tf32"
                old_fn = old.make_chunkwise_block  # an old block with float32 scores gets them, as xk.mlstm's does
                extra = {"fp32_scores": True} if "fp32_scores" in inspect.signature(old_fn).parameters else {}
                before = eager_block(old_fn(math.ceil(shape["S"] / L), L, 1e-6, mixed, **extra), x, tf32)
                after = eager_block(make_chunkwise_block(math.ceil(shape["S"] / L), L, 1e-6, mixed, True), x, tf32)
                rows.append({**base, "case": f"eager {prec} before", **errors(before, ref)})
                rows.append({**base, "case": f"eager {prec} after", **errors(after, ref)})
        for r in rows[-7 if old is not None else -3:]:
            print(json.dumps(r), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
