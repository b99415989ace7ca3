"""GPU benchmark of the model runner on the xLSTM-7B shape (one `device` call): TTFT and decode tok/s.

The model: ``xLSTMLarge`` with embedding 4096, 8 heads, 32 blocks, vocab 50304, random bf16 weights,
built directly on the GPU. Rows, side by side in one process on the same weights and prompt:

* ``eager+triton``   the model eagerly with ``mlstm_kernels``' Triton kernels (``--triton-chunkwise``,
                     default chunkwise--triton_limit_chunk; native_sequence__triton, triton step): NX-AI's
                     own inference path. chunkwise--triton_xl_chunk aborts the process at this head shape
                     (an LLVM assertion in Triton 3.6, H200, torch 2.11, 2026-12-01);
* ``eager+ours``     the same model after ``use_xlstm_kernels`` (our chunkwise kernel, our step);
* ``runner``         ``xk.compile_model(model)``: the whole decode step as one compiled graph over static
                     state (CUDA graphs), prefill through compiled block pieces around our kernel;
                     ``runner+fused``: with ``fuse_projections`` (one matmul for q/k/v/o/i/f per block),
                     ``+mixed``: the prefill kernel with ``precision="mixed"`` (bf16 intra-chunk matmuls),
                     ``+graphs``: with ``prefill_graphs`` (the whole prefill replayed as one CUDA graph),
                     ``+mlstm``: the prefill's mLSTM through ``mlstm_kernels``' kernel
                     (``--triton-chunkwise`` at ``--triton-chunk``, ``xk.MlstmKernelsPrefill``) instead
                     of ours: NX-AI's Triton kernels under the same compile.

TTFT = prefill of the prompt + the first greedy token (the eager rows compute all positions' logits,
as the model does; the runner only the last). Decode tok/s = B * N / wall time of N greedy steps
(``decode`` calls, enqueued back to back, one synchronisation at the end; median of the repeats). Compile time = the first calls' wall time.
Peak memory = ``torch.cuda.max_memory_allocated`` during the row. ``--profile`` prints the profiler's
top CUDA kernels of the runner's prefill and decode.

    python3 benchmarks/gpu_model.py --out $OUT/gpu_model.json [--profile]
    python3 benchmarks/gpu_model.py --small --device cpu --triton-chunkwise chunkwise--native_autograd \
        --triton-chunk 64 --rows runner runner+fused+mlstm   # a smoke run of the script on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import xlstm_kernels as xk  # noqa: E402
from xlstm_kernels.device import synchronize  # noqa: E402

SHAPE_7B = dict(embedding_dim=4096, num_heads=8, num_blocks=32, vocab_size=50304)
SHAPE_SMALL = dict(embedding_dim=256, num_heads=4, num_blocks=2, vocab_size=512)


def build_model(shape: dict, device: str, dtype: torch.dtype, triton: bool,
                triton_chunkwise: str = "chunkwise--triton_limit_chunk") -> torch.nn.Module:
    """xLSTMLarge of ``shape`` with random weights created on ``device`` in ``dtype`` (no float32 copy)."""
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    kernels = (dict(chunkwise_kernel=triton_chunkwise, sequence_kernel="native_sequence__triton",
                    step_kernel="triton") if triton else
               dict(chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                    step_kernel="native"))
    cfg = xLSTMLargeConfig(**shape, mode="inference", return_last_states=True,
                           autocast_kernel_dtype="bfloat16" if dtype == torch.bfloat16 else "float32", **kernels)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = xLSTMLarge(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    return model


def wall(fn, device: str) -> float:
    """Seconds of one synchronised call of ``fn``."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median_wall(fn, device: str, reps: int) -> float:
    return statistics.median(wall(fn, device) for _ in range(reps))


def eager_row(name: str, model, prompt: torch.Tensor, new: int, device: str, reps: int) -> dict:
    """TTFT and decode tok/s of the eager model (its own kernels, or ours after use_xlstm_kernels)."""
    B = prompt.shape[0]
    out: dict = {}

    def prefill():
        logits, state = model(prompt)
        out["tok"], out["state"] = logits[:, -1:].argmax(-1), state

    def decode():
        tok, state, toks = out["tok"], out["state"], []
        for _ in range(new):
            logits, state = model(tok, state)
            tok = logits[:, -1:].argmax(-1)
            toks.append(tok)
        out["toks"] = torch.cat(toks, 1)

    torch.cuda.reset_peak_memory_stats() if device.startswith("cuda") else None
    with torch.no_grad():
        first = wall(prefill, device) + wall(decode, device)  # kernel compiles / autotuning
        ttft = median_wall(prefill, device, reps)
        dec = statistics.median((prefill(), wall(decode, device))[1] for _ in range(max(2, reps // 3)))
    return dict(row=name, B=B, prompt=prompt.shape[1], ttft_ms=ttft * 1e3, decode_tok_s=B * new / dec,
                first_calls_s=first, peak_gb=_peak(device), tokens=out["toks"][0, :16].tolist())


def runner_row(name: str, runner, prompt: torch.Tensor, new: int, device: str, reps: int) -> dict:
    """TTFT and decode tok/s of the runner (compile time: its first prefill and first decode steps)."""
    B = prompt.shape[0]
    out: dict = {}

    def prefill():
        logits, out["state"] = runner.prefill(prompt, last_only=True)
        out["tok"] = logits.argmax(-1)

    def decode():
        state, tok, toks = out["state"], out["tok"], []
        for _ in range(new):
            logits, state = runner.decode(tok, state)
            tok = logits.argmax(-1)
            toks.append(tok)
        out["toks"] = torch.stack(toks, 1)

    def generate():
        out["gen"] = runner.generate(prompt, new + 1)

    torch.cuda.reset_peak_memory_stats() if device.startswith("cuda") else None
    with torch.no_grad():
        t_pre = wall(prefill, device)
        t_dec = wall(decode, device)
        wall(generate, device)
        ttft = median_wall(prefill, device, reps)
        decode_s = statistics.median((prefill(), wall(decode, device))[1] for _ in range(max(2, reps // 3)))
    same = torch.equal(out["gen"][:, prompt.shape[1] + 1:], out["toks"])
    return dict(row=name, B=B, prompt=prompt.shape[1], ttft_ms=ttft * 1e3, decode_tok_s=B * new / decode_s,
                compile_prefill_s=t_pre, compile_decode_s=t_dec, peak_gb=_peak(device),
                decode_eq_generate=same, tokens=out["gen"][0, prompt.shape[1]:prompt.shape[1] + 16].tolist(),
                config=runner.config.short())


def _peak(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def profile(label: str, fn, top: int) -> None:
    """Print the profiler's top kernels (by device time) of three calls of ``fn`` after warm-up."""
    from torch.profiler import ProfilerActivity, profile as prof_ctx

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    fn()
    synchronize("cuda" if torch.cuda.is_available() else "cpu")
    with prof_ctx(activities=acts) as prof:
        for _ in range(3):
            fn()
        synchronize("cuda" if torch.cuda.is_available() else "cpu")
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    print(f"# profile: {label} (3 calls)", flush=True)
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=80), flush=True)


def main() -> None:
    """Build the model once, run the rows, print one JSON line per row (and a summary)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="a small model (smoke run of the script)")
    p.add_argument("--prompt", type=int, default=2048)
    p.add_argument("--new", type=int, default=64, help="greedy tokens timed per decode measurement")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rows", nargs="+", default=["eager+triton", "eager+ours", "runner"])
    p.add_argument("--later-rows", nargs="+", default=None, help="rows of the batch sizes after the first "
                   "(default: --rows)")
    p.add_argument("--chunk", type=int, default=256, help="our prefill kernel's chunk size")
    p.add_argument("--t-inner", type=int, default=8)
    p.add_argument("--precision", default="tf32")
    p.add_argument("--step-mode", default="reduce-overhead", choices=list(xk.runner.STEP_COMPILE_MODES))
    p.add_argument("--triton-chunkwise", default="chunkwise--triton_limit_chunk",
                   help="mlstm_kernels' chunkwise kernel of the eager+triton and +mlstm rows")
    p.add_argument("--triton-chunk", type=int, default=64, help="its chunk size in the +mlstm rows")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    dev = args.device
    cuda = dev.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    shape = SHAPE_SMALL if args.small else SHAPE_7B
    print(f"# {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shape {shape}, {dtype}", flush=True)
    t0 = time.perf_counter()
    model = build_model(shape, dev, dtype, triton=cuda and "eager+triton" in args.rows,
                        triton_chunkwise=args.triton_chunkwise)
    print(f"# model built in {time.perf_counter() - t0:.1f}s: "
          f"{sum(x.numel() for x in model.parameters()) / 1e9:.2f}B parameters", flush=True)
    kcfg = xk.KernelConfig("chunkwise", chunk_size=args.chunk, t_inner=args.t_inner,
                           precision=args.precision if cuda else "fp32")
    rcfg = xk.ModelRunConfig(step_compile_mode=args.step_mode if cuda else "default", prefill=kcfg)
    rows = []
    gen = torch.Generator().manual_seed(1)
    runner = None
    runners: dict[str, xk.ModelRunner] = {}
    for B in args.batch:
        prompt = torch.randint(0, shape["vocab_size"], (B, args.prompt), generator=gen).to(dev)
        reps = args.reps if B == 1 else max(2, args.reps // 2)
        for name in args.rows if B == args.batch[0] else (args.later_rows or args.rows):
            if name in ("eager+triton", "eager+ours"):
                if name == "eager+ours":
                    from xlstm_kernels.models.xlstm_adapter import restore_native_kernels, use_xlstm_kernels

                    use_xlstm_kernels(model, config=kcfg)
                try:
                    r = eager_row(name, model, prompt, args.new if B == 1 else args.new // 2, dev, reps)
                finally:
                    if name == "eager+ours":
                        restore_native_kernels(model)
            else:
                if name not in runners:
                    pre = (xk.MlstmKernelsPrefill(args.triton_chunkwise, args.triton_chunk) if "+mlstm" in name
                           else kcfg.replace(precision="mixed") if "+mixed" in name else kcfg)
                    cfg = rcfg.replace(fuse_projections="+fused" in name, prefill_graphs="+graphs" in name,
                                       prefill=pre)
                    runners[name] = xk.compile_model(model, config=cfg, max_batch_size=max(args.batch),
                                                     max_seq_len=args.prompt + 4 * args.new + 8)
                runner = runners[name]
                r = runner_row(name, runner, prompt, args.new if B == 1 else args.new // 2, dev, reps)
            rows.append(r)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1))
        if args.profile and runner is not None and B == args.batch[0]:
            profile(f"{name} prefill B={B}", lambda: runner.prefill(prompt, last_only=True), 20)
            profile(f"{name} generate B={B} (prefill + 32 steps)", lambda: runner.generate(prompt, 33), 20)
    if cuda:
        from torch._dynamo.utils import counters

        print(f"# cudagraph skips (whole run): {counters['inductor']['cudagraph_skips']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
