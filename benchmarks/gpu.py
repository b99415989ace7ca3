"""GPU benchmark (one `device` call): our configs next to mlstm_kernels' native and Triton kernels.

Rows: time (median ms, CUDA events around each synchronised call; ``b2b_ms``: per call of 20-50
calls enqueued back to back, as a decode loop or Triton's ``do_bench`` runs them) and relative error
of h against a float64 reference. Run: ``python benchmarks/gpu.py --out results.json``; ``--quick`` for fewer configs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import xlstm_kernels as xk  # noqa: E402
from common import make_inputs, rel_err, time_back_to_back, time_fn  # noqa: E402

PREFILL = {"P1": dict(B=1, NH=8, S=2048, DHQK=256, DHV=512), "P8": dict(B=8, NH=8, S=1024, DHQK=256, DHV=512)}
DECODE = {"D1": dict(B=1, NH=8, DHQK=256, DHV=512), "D64": dict(B=64, NH=8, DHQK=256, DHV=512)}


def our_prefill_configs(S: int, quick: bool) -> list[xk.KernelConfig]:
    out = []
    for L in (128, 256) if quick else (64, 128, 256):
        for mode in ("graph-capture", "reduce-overhead") if quick else ("default", "reduce-overhead", "graph-capture"):
            for prec in ("tf32",) if quick else ("fp32", "tf32", "mixed"):
                out.append(xk.KernelConfig("chunkwise", chunk_size=L, t_inner=min(S // L, 16),
                                           compile_mode=mode, precision=prec))
    return out


def profile_kernels(fn, label: str, top: int = 25) -> None:
    """Print the profiler's CUDA kernel list for one call of ``fn`` (after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    print(f"# profile of {label} (5 calls)", flush=True)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=70), flush=True)


def row(name, impl, stats, err, compile_s=None, **extra):
    r = {"workload": name, "impl": impl, **{k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()},
         "rel_err": err}
    if compile_s is not None:
        r["compile_s"] = round(compile_s, 2)
    r.update(extra)
    print(json.dumps(r), flush=True)
    return r


TRITON_PREFILL = {"chunkwise--triton_limit_chunk": (16, 32, 64), "chunkwise--triton_xl_chunk": (64, 128, 256)}


def bench_prefill(name, shape, quick, rows, profile=False):
    dev = "cuda"
    x = make_inputs(**shape, dtype=torch.bfloat16, device=dev)
    t0 = time.perf_counter()
    h_ref, _ = xk.mlstm_reference(*x)
    print(f"# {name}: float64 reference in {time.perf_counter() - t0:.1f}s", flush=True)
    for cfg in our_prefill_configs(shape["S"], quick):
        try:
            st = time_fn(lambda: xk.mlstm(*x, config=cfg), dev)
            st["b2b_ms"] = time_back_to_back(lambda: xk.mlstm(*x, config=cfg), dev, calls=20)
            h = xk.mlstm(*x, config=cfg)[0]
            rows.append(row(name, "ours " + cfg.short(), st, rel_err(h, h_ref), compile_s=st["first_ms"] / 1e3))
            if profile:
                profile_kernels(lambda: xk.mlstm(*x, config=cfg), f"{name} {cfg.short()}")
                profile = False
        except Exception as exc:  # noqa: BLE001 - a failed candidate is a row, not the end of the run
            print(f"# {name} ours {cfg.short()} FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    try:
        from mlstm_kernels.torch import get_mlstm_kernel
    except ImportError:
        print("# mlstm_kernels not importable: baselines skipped", flush=True)
        return
    native = get_mlstm_kernel("chunkwise--native_autograd")
    for L in (256,) if quick else (128, 256):
        for mode in ("default", "reduce-overhead"):
            # dynamic=False: one code object for every L (and workload); automatic dynamic shapes would
            # otherwise compile later chunk sizes and shapes as a slower dynamic graph.
            fn = torch.compile(lambda *a, L=L: native(*a, chunk_size=L), mode=None if mode == "default" else mode,
                               dynamic=False)
            st = time_fn(lambda: fn(*x), dev)
            st["b2b_ms"] = time_back_to_back(lambda: fn(*x), dev, calls=20)
            rows.append(row(name, f"mlstm_kernels native compiled L{L} {mode}", st, rel_err(fn(*x), h_ref),
                            compile_s=st["first_ms"] / 1e3))
    xf = tuple(t.float() for t in x)  # the eager native kernel cannot mix bf16 inputs with its float32 states
    st = time_fn(lambda: native(*xf, chunk_size=256), dev, reps=10)
    rows.append(row(name, "mlstm_kernels native eager L256 (fp32 in)", st, rel_err(native(*xf, chunk_size=256), h_ref)))
    # Triton at each of its kernels' chunk sizes, as ours is: the best Triton row is the baseline
    for kernel, chunks in TRITON_PREFILL.items():
        for L in chunks:
            try:
                tri = get_mlstm_kernel(kernel)
                st = time_fn(lambda: tri(*x, chunk_size=L), dev)
                st["b2b_ms"] = time_back_to_back(lambda: tri(*x, chunk_size=L), dev, calls=20)
                rows.append(row(name, f"mlstm_kernels {kernel.split('--')[1]} L{L}", st,
                                rel_err(tri(*x, chunk_size=L), h_ref)))
            except Exception as exc:  # noqa: BLE001
                print(f"# {kernel} L{L} FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)


def bench_decode(name, shape, rows, profile=False):
    dev = "cuda"
    B, NH, DHQK, DHV = shape["B"], shape["NH"], shape["DHQK"], shape["DHV"]
    q, k, v, i, f = make_inputs(B, NH, 2, DHQK, DHV, dtype=torch.bfloat16, device=dev)
    # a realistic state: one step of history
    _, (c, n, m) = xk.mlstm_reference(q[:, :, :1], k[:, :, :1], v[:, :, :1], i[:, :, :1], f[:, :, :1])
    c, n, m = c.float(), n.float(), m.float()
    c_ours = xk.step_layout(c)  # as our step returns it, fed back in a decode loop
    args = (q[:, :, 1], k[:, :, 1], v[:, :, 1], i[:, :, 1:2], f[:, :, 1:2])
    h_ref, _ = xk.mlstm_reference(*(x[:, :, 1:2] for x in (q, k, v, i, f)), c, n, m)
    h_ref = h_ref[:, :, 0]
    runs = [(mode, c_ours, f"ours step {mode}")
            for mode in ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "graph-capture")]
    # the first step after a prefill gets C contiguous: a graph of its own, as fast as before step_layout
    runs.append(("default", c, "ours step default, C contiguous"))
    for mode, c_in, label in runs:
        cfg = xk.KernelConfig(compile_mode=mode)
        step = lambda cfg=cfg, c_in=c_in: xk.mlstm_step(*args, c_in, n, m, config=cfg)  # noqa: E731
        st = time_fn(step, dev, reps=100)
        st["b2b_ms"] = time_back_to_back(step, dev)
        rows.append(row(name, label, st, rel_err(step()[0], h_ref), compile_s=st["first_ms"] / 1e3))
        if profile and label == "ours step default":
            profile_kernels(step, f"{name} step {mode}", top=12)
    try:
        from mlstm_kernels.torch import get_mlstm_step_kernel
    except ImportError:
        return
    nat = get_mlstm_step_kernel("native")
    for mode in ("default", "reduce-overhead"):
        fn = torch.compile(nat, mode=None if mode == "default" else mode, dynamic=False)  # D64 after D1: static
        st = time_fn(lambda: fn(*args, c, n, m), dev, reps=100)
        st["b2b_ms"] = time_back_to_back(lambda: fn(*args, c, n, m), dev)
        rows.append(row(name, f"mlstm_kernels native step compiled {mode}", st, rel_err(fn(*args, c, n, m)[0], h_ref)))
    try:
        tri = get_mlstm_step_kernel("triton")
        st = time_fn(lambda: tri(*args, c, n, m), dev, reps=100)
        st["b2b_ms"] = time_back_to_back(lambda: tri(*args, c, n, m), dev)
        rows.append(row(name, "mlstm_kernels triton step", st, rel_err(tri(*args, c, n, m)[0], h_ref)))
    except Exception as exc:  # noqa: BLE001
        print(f"# triton step FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="workload names (P1 P8 D1 D64)")
    ap.add_argument("--profile", action="store_true", help="print the kernel list of the first config")
    args = ap.parse_args()
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    for name, shape in PREFILL.items():
        if args.only is None or name in args.only:
            bench_prefill(name, shape, args.quick, rows, profile=args.profile)
    for name, shape in DECODE.items():
        if args.only is None or name in args.only:
            bench_decode(name, shape, rows, profile=args.profile and name == "D64")
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
