"""Where a CPU prefill spends its time: the native eager model vs the runner, under torch.profiler.

The model is ``examples/generate.py``'s default small ``xLSTMLarge`` (d 256, 4 heads, 2 blocks, vocab
512, random weights, float32), B=1, prompt 256, as its prefill (TTFT) figure runs it. For each path:
milliseconds per prefill, the share of the matrix multiplies (``aten::mm``/``addmm``/``bmm``, the
same MKL calls in both paths) and the top operators by self CPU time.

Run: ``PYTHONPATH=. python benchmarks/cpu_prefill_profile.py --threads 1 [--python-wrapper] [--fused]``
(``--python-wrapper``: the runner's GEMMs and fused C++ kernels by name instead of one entry per graph)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import xlstm_kernels as xk  # noqa: E402
from generate import build_model  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def profiled(label: str, fn, calls: int, top: int) -> None:
    """Warm ``fn`` up, profile ``calls`` calls and print the per-call time, matmul share and top ops."""
    for _ in range(3):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / calls
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e3 / calls
    print(f"\n# {label}: {total:.2f} ms of self CPU time per prefill; matmuls {mm:.2f} ms ({mm / total:.0%})")
    print(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--python-wrapper", action="store_true", help="compile the runner with Inductor's "
                    "Python wrapper and kernel profiling, so its GEMMs and fused kernels show by name")
    ap.add_argument("--fused", action="store_true", help="the runner with fuse_projections")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.python_wrapper:
        os.environ["XLSTM_AUTOTUNE_CPP_WRAPPER"] = "0"
        xk.reset_settings()
        torch._inductor.config.cpp.enable_kernel_profile = True
    model = build_model(argparse.Namespace(embedding_dim=256, heads=4, blocks=2, vocab=512))
    prompt = torch.randint(0, 512, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    runner = xk.compile_model(model, config=xk.ModelRunConfig(fuse_projections=args.fused), max_seq_len=args.prompt + 8)
    print(f"# torch {torch.__version__}, {args.threads} thread(s), prompt {args.prompt}, {runner.config.short()}")
    with torch.no_grad():
        profiled("native eager", lambda: model(prompt), args.calls, args.top)
        profiled("runner", lambda: runner.prefill(prompt, last_only=True), args.calls, args.top)


if __name__ == "__main__":
    main()
