"""Generate tokens with a small xLSTMLarge (random weights, no downloads): native kernels vs ours vs the runner.

    PYTHONPATH=. python examples/generate.py                 # uses this machine's published profile
    PYTHONPATH=. python examples/generate.py --quick-tune    # first time on a machine without a profile

The model's native kernels on a machine without Triton (CPU, MPS) are ``chunkwise--native_autograd``
(prefill, padded to a multiple of ``chunk_size``) and the ``native`` step kernel (decode). "Ours" is
the same model after ``use_xlstm_kernels(model)``: configs from this machine's profile (shown by
``xk.explain_config``). Both run in one process, interleaved, on the same weights and prompt; greedy
tokens must agree. "runner" is ``xk.compile_model(model)``: the whole decode step as one compiled graph
over static state, prefill through compiled block pieces around our kernel (docs/runner.md); its
prefill computes the last position's logits only, as generation needs.

``--quick-tune`` runs the tuner (``--quick``) on exactly this model's two workloads and publishes the
winners as this machine's profile, as ``xlstm-autotune tune -w ... --quick`` would (without Prefect).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

import xlstm_kernels as xk
from xlstm_kernels.models.xlstm_adapter import use_xlstm_kernels

if TYPE_CHECKING:
    import tuner

def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """A small xLSTMLarge with the native PyTorch kernels, in inference mode, random weights."""
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    cfg = xLSTMLargeConfig(
        embedding_dim=args.embedding_dim, num_heads=args.heads, num_blocks=args.blocks,
        vocab_size=args.vocab, mode="inference", chunkwise_kernel="chunkwise--native_autograd",
        sequence_kernel="native_sequence__native", step_kernel="native", chunk_size=64,
        return_last_states=True, autocast_kernel_dtype="float32",
    )
    torch.manual_seed(0)
    return xLSTMLarge(cfg).eval()


def workloads(args: argparse.Namespace) -> tuple[xk.Workload, xk.Workload]:
    """The mLSTM workloads this model runs: prefill of the prompt and one decode step."""
    dhqk = int(args.embedding_dim * 0.5) // args.heads
    dhv = args.embedding_dim // args.heads
    return (xk.Workload(args.batch, args.heads, args.prompt, dhqk, dhv),
            xk.Workload(args.batch, args.heads, 1, dhqk, dhv, mode="decode"))


def _inputs(w: xk.Workload) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(w.B, w.NH, w.S, w.DHQK, generator=g), torch.randn(w.B, w.NH, w.S, w.DHQK, generator=g)
    v = torch.randn(w.B, w.NH, w.S, w.DHV, generator=g)
    i, f = torch.randn(w.B, w.NH, w.S, generator=g) * 3, torch.randn(w.B, w.NH, w.S, generator=g) * 3 + 2
    return q, k, v, i, f


def quick_tune(args: argparse.Namespace) -> tuner.AutotuneResult:
    """Tune this model's two workloads with the real tuner (``--quick``) and publish the winners.

    The library function that ``xlstm-autotune tune`` runs (without Prefect): ``tuner.autotune`` -
    one tuning run, the winners published atomically (versioned, recorded in the tuning DB), a report.
    """
    import tuner

    result = tuner.autotune(list(workloads(args)), device="cpu", quick=True)
    for o in result.outcomes:
        print(f"  {o.workload}: {o.config_short()} {o.median_ms:.3f} ms, {o.speedup:.2f}x default")
    for w, why in result.failed.items():
        print(f"  {w}: no validated config ({why})")
    return result


def timed_generate(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> tuple[float, float, torch.Tensor]:
    """(prefill seconds, mean decode seconds per step, generated tokens) of one greedy generation."""
    with torch.no_grad():
        t0 = time.perf_counter()
        logits, state = model(prompt)
        t1 = time.perf_counter()
        tokens = []
        nxt = logits[:, -1:].argmax(-1)
        t2 = time.perf_counter()
        for _ in range(new):
            tokens.append(nxt)
            logits, state = model(nxt, state)
            nxt = logits[:, -1:].argmax(-1)
        t3 = time.perf_counter()
    return t1 - t0, (t3 - t2) / new, torch.cat(tokens, dim=1)


def timed_runner(runner: xk.ModelRunner, prompt: torch.Tensor, new: int) -> tuple[float, float, torch.Tensor]:
    """(prefill seconds incl. the first greedy token, mean decode seconds per step, generated tokens)."""
    t0 = time.perf_counter()
    logits, state = runner.prefill(prompt, last_only=True)
    nxt = logits.argmax(-1)
    t1 = time.perf_counter()
    tokens = []
    for _ in range(new):
        tokens.append(nxt)
        logits, state = runner.decode(nxt, state)
        nxt = logits.argmax(-1)
    t2 = time.perf_counter()
    return t1 - t0, (t2 - t1) / new, torch.stack(tokens, dim=1)


@contextlib.contextmanager
def backend_time(model: torch.nn.Module) -> Iterator[dict[str, float]]:
    """Seconds spent inside the model's mLSTM backends meanwhile, split into prefill and decode calls."""
    spent = {"prefill": 0.0, "decode": 0.0}
    backends = [m.mlstm_backend for m in model.modules() if hasattr(m, "mlstm_backend")]

    def timed(orig):
        def forward(*a, **kw):
            q = kw["q"] if "q" in kw else a[0]
            t0 = time.perf_counter()
            out = orig(*a, **kw)
            spent["decode" if q.shape[2] == 1 else "prefill"] += time.perf_counter() - t0
            return out
        return forward

    for be in backends:
        be.forward = timed(be.forward)
    try:
        yield spent
    finally:
        for be in backends:
            del be.forward  # the instance attribute; the class's forward shows through again


def kernel_only(native: torch.nn.Module, ours: torch.nn.Module, args: argparse.Namespace) -> None:
    """Time the first mLSTM backend alone (native vs ours) on this model's prefill and decode shapes."""
    native_be = native.backbone.blocks[0].mlstm_layer.mlstm_backend
    ours_be = ours.backbone.blocks[0].mlstm_layer.mlstm_backend
    prefill, _ = workloads(args)
    q, k, v, i, f = _inputs(prefill)
    with torch.no_grad():
        _, st = native_be(q, k, v, i, f)
        one = [x[:, :, :1] for x in (q, k, v, i, f)]
        calls = {
            "prefill": {n: (lambda be=be: be(q, k, v, i, f)) for n, be in (("native", native_be), ("ours", ours_be))},
            "decode": {n: (lambda be=be: be(*one, *st)) for n, be in (("native", native_be), ("ours", ours_be))},
        }
        times: dict[tuple[str, str], list[float]] = {}
        for fns in calls.values():
            for fn in fns.values():
                fn()  # warm-up
        for _ in range(args.repeats):
            for what, fns in calls.items():
                for name, fn in fns.items():
                    n = 1 if what == "prefill" else 20
                    t0 = time.perf_counter()
                    for _ in range(n):
                        fn()
                    times.setdefault((what, name), []).append((time.perf_counter() - t0) / n)
    print(f"\nmLSTM backend alone (layer 0), median of {args.repeats}:")
    for what in calls:
        nat, our = (statistics.median(times[(what, n)]) for n in ("native", "ours"))
        print(f"  {what:<8} native {nat * 1e3:8.3f} ms   ours {our * 1e3:8.3f} ms   ratio {nat / our:5.2f}x")


def main() -> None:
    """Parse arguments, (optionally) quick-tune, then compare native and tuned kernels side by side."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=256, help="prompt length (prefill tokens)")
    p.add_argument("--new", type=int, default=32, help="tokens to generate")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick-tune", action="store_true",
                   help="tune this model's workloads (the real tuner, --quick) and publish a profile first")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.quick_tune:
        print("quick-tune (tuner.autotune, as `xlstm-autotune tune --quick` runs it):")
        res = quick_tune(args)
        print(f"published {res.profile_path} v{res.profile_version} {(res.profile_checksum or '')[:19]}...")
        xk.reload_profile()

    native = build_model(args)
    ours = copy.deepcopy(native)
    use_xlstm_kernels(ours)
    prefill, decode = workloads(args)
    q, k, v, *_ = _inputs(prefill)
    print(f"machine {xk.fingerprint().machine_id} ({xk.fingerprint().device_name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print("prefill config:\n  " + str(xk.explain_config(q, k, v)).replace("\n", "\n  "))
    print("decode config:\n  " + str(xk.explain_config(q[:, :, 0], k[:, :, 0], v[:, :, 0])).replace("\n", "\n  "))

    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    runner = xk.compile_model(native, max_batch_size=args.batch, max_seq_len=args.prompt + args.new + 1)
    results: dict[str, list[tuple[float, float]]] = {"native": [], "ours": [], "runner": []}
    toks = {}
    for name, model in (("native", native), ("ours", ours)):  # warm-up: compiles, not timed
        toks[name] = timed_generate(model, prompt, args.new)[2]
    t0 = time.perf_counter()
    toks["runner"] = timed_runner(runner, prompt, args.new)[2]
    runner_compile_s = time.perf_counter() - t0
    inside = {name: {"prefill": 0.0, "decode": 0.0} for name in ("native", "ours")}
    for _ in range(args.repeats):  # interleaved, so drifting load on a shared CPU hits all alike
        for name, model in (("native", native), ("ours", ours)):
            with backend_time(model) as spent:
                pre, dec, _ = timed_generate(model, prompt, args.new)
            results[name].append((pre, dec))
            inside[name]["prefill"] += spent["prefill"] / pre
            inside[name]["decode"] += spent["decode"] / (dec * args.new)
        pre, dec, _ = timed_runner(runner, prompt, args.new)
        results["runner"].append((pre, dec))
    same = torch.equal(toks["native"], toks["ours"]) and torch.equal(toks["native"], toks["runner"])
    print(f"\nB={args.batch} prompt={args.prompt} new={args.new} model: d={args.embedding_dim} heads={args.heads} "
          f"blocks={args.blocks} vocab={args.vocab}; median of {args.repeats}; greedy tokens identical "
          f"(native, ours, runner): {same}; runner first calls (compile) {runner_compile_s:.1f}s")
    print(f"{'path':<8} {'prefill tok/s':>14} {'TTFT ms':>9} {'decode tok/s':>13}")
    med = {}
    for name, rows in results.items():
        pre = statistics.median(r[0] for r in rows)
        dec = statistics.median(r[1] for r in rows)
        med[name] = (args.batch * args.prompt / pre, pre * 1e3, args.batch / dec)
        print(f"{name:<8} {med[name][0]:>14,.0f} {med[name][1]:>9.2f} {med[name][2]:>13,.1f}")
    for name in ("ours", "runner"):
        print(f"{name + '/nat':<8} {med[name][0] / med['native'][0]:>13.2f}x {med['native'][1] / med[name][1]:>8.2f}x "
              f"{med[name][2] / med['native'][2]:>12.2f}x")
    print("share of the time inside the mLSTM backends (mean of the runs; the rest of the model is the same):")
    for name, share in inside.items():
        print(f"  {name:<8} prefill {share['prefill'] / args.repeats:6.1%}   decode {share['decode'] / args.repeats:6.1%}")
    nat = {k: v / args.repeats for k, v in inside["native"].items()}
    print(f"  bound: with a backend that cost nothing, prefill {1 / (1 - nat['prefill']):.2f}x and decode "
          f"{1 / (1 - nat['decode']):.2f}x native at most")
    kernel_only(native, ours, args)


if __name__ == "__main__":
    main()
