"""Tune a whole model and compare it side by side, through the library `tune --model` and `generate` run.

The `device` machine has no Prefect, so this calls what the `model-autotune` flow's tasks call —
`tuner.tune_model`, then `tuner.publish_entries(..., model_entries=[...])` — and then
`tuner.generate_side_by_side` (native eager vs runner default vs runner tuned), and prints both. The
space is narrowed through the `tune_model_*` settings (environment), e.g.
XLSTM_AUTOTUNE_TUNE_MODEL_STATE_DTYPES='["float32"]'.

Run: ``python benchmarks/gpu_model_tune.py --model xlstm-7b-shape --prompt 2048 --dtype bfloat16 --out DIR``
(on the CPU: ``--model tiny --prompt 64 --device cpu`` smoke-tests it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import tuner  # noqa: E402
from xlstm_kernels.profiles.fingerprint import fingerprint  # noqa: E402
from xlstm_kernels.models.workload import run_config_short  # noqa: E402
from xlstm_kernels.profiles.runtime import reload_profile  # noqa: E402
from xlstm_kernels.settings import get_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="xlstm-7b-shape")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens the side-by-side generates")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="copy the profile and JSON summaries here")
    args = ap.parse_args()
    settings = get_settings()
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else dev}",
          flush=True)
    t0 = time.perf_counter()
    with tuner.RichProgress() as progress:
        result = tuner.tune_model(args.model, batch_size=args.batch, prompt_len=args.prompt, dtype=args.dtype,
                                  device=dev, n_trials=args.trials, quick=args.quick, progress=progress)
    print(f"{result.workload}: {result.n_trials} trials of {result.n_candidates} ({result.sampler}), "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    for c in result.retimed:
        print(f"  retimed {run_config_short(c.config)}: TTFT {c.ttft_ms:.2f} ms, decode {c.decode_tokens_per_s:,.1f} "
              f"tok/s, request {c.objective_ms:.2f} ms, err {c.logits_error:.1e}, compile {c.compile_s or 0:.1f} s")
    for r in result.rejected:
        print(f"  {r.status} {run_config_short(r.config)}: {r.reason[:200]}", flush=True)
    published = None
    if result.winner is not None:
        entry = tuner.model_profile_entry(result)
        published = tuner.publish_entries(fingerprint(args.device), [], model_entries=[entry], run_id=result.run_id)
        print(f"winner {run_config_short(result.winner.config)} ({result.speedup or 1:.2f}x default); profile "
              f"v{published.version} -> {published.path} (db {settings.resolved_db_path()})", flush=True)
        reload_profile()
    side = tuner.generate_side_by_side(args.model, batch_size=args.batch, prompt_len=args.prompt,
                                       new_tokens=args.new_tokens, dtype=args.dtype, device=dev, rounds=args.rounds)
    print(f"\n{side.workload}: {side.new_tokens} new tokens, median of {side.rounds}; tuned: {side.tuned_source}")
    for row in side.rows:
        if row.error:
            print(f"  {row.name:<8} failed: {row.error}")
            continue
        dec = f"{row.decode_tokens_per_s:,.1f}" if row.decode_tokens_per_s else "-"
        print(f"  {row.name:<8} first {row.first_s:7.2f} s  TTFT {row.ttft_ms:9.2f} ms  prefill "
              f"{row.prefill_tokens_per_s:12,.0f} tok/s  decode {dec:>9} tok/s  same tokens {row.tokens_match}  "
              f"{row.config}")
    if dev.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if published is not None:
            shutil.copy(published.path, args.out / "profile.json")
        (args.out / "model_tune.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
        (args.out / "generate.json").write_text(json.dumps(side.to_dict(), indent=1, default=str))


if __name__ == "__main__":
    main()
