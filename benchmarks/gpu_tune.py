"""A real tuning run on the GPU machine (issue 7) through the library that `xlstm-autotune tune` runs.

The `device` machine has no Prefect (nothing can be installed there beyond carried wheels), so this
calls what the `autotune` flow's tasks call — `tuner.run_tuning`, then `tuner.publish_entries` — and
prints the winners and the published profile. The search space is narrowed through the `tune_*`
settings (environment), e.g. XLSTM_AUTOTUNE_TUNE_FAMILIES='["chunkwise"]'.

Run: ``python benchmarks/gpu_tune.py --out DIR -w 1,8,2048,256,512,bfloat16 ...``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tuner  # noqa: E402
from xlstm_kernels.profiles.fingerprint import fingerprint  # noqa: E402
from xlstm_kernels.settings import get_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-w", "--workload", action="append", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="copy the profile and a JSON summary here")
    args = ap.parse_args()
    settings = get_settings()
    t0 = time.perf_counter()
    with tuner.RichProgress() as progress:
        result = tuner.run_tuning(args.workload, device=args.device, quick=args.quick,
                                  n_trials=args.trials, progress=progress)
    entries = [tuner.profile_entry(w) for w in result.workloads if w.winner is not None]
    published = tuner.publish_entries(fingerprint(args.device), entries, run_id=result.run_id)
    wall = time.perf_counter() - t0
    for w in result.workloads:
        win = w.winner
        print(f"{w.workload}: {w.n_trials} trials of {w.n_candidates}, "
              + (f"winner {win.config.short(w.workload.mode)} {win.median_ms:.3f} ms, err {win.equivalence_error:.1e}, "
                 f"{w.speedup:.2f}x default" if win else "no winner"), flush=True)
        for r in w.rejected:
            print(f"   rejected {r.config.short(w.workload.mode)}: {r.status}: {r.reason[:160]}", flush=True)
    print(f"profile v{published.version} -> {published.path} ({wall:.0f} s, db {settings.resolved_db_path()})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(published.path, args.out / "profile.json")
        (args.out / "tune_result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))


if __name__ == "__main__":
    main()
