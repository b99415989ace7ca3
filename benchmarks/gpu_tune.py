"""A real tuning run on the GPU machine (issue 7) through the library that `xlstm-autotune tune` runs.

The `device` machine has no Prefect (nothing can be installed there beyond carried wheels), so this
calls what the `autotune` flow calls — `tuner.autotune`: one run, the winners published, a report — and
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
import xlstm_kernels as xk  # noqa: E402
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
        result = tuner.autotune(args.workload, device=args.device, quick=args.quick, trials=args.trials,
                                progress=progress)
    wall = time.perf_counter() - t0
    for o in result.outcomes:
        print(f"{o.workload}: {o.reason}; winner {o.config_short()} {o.median_ms:.3f} ms, err {o.equiv_err:.1e}, "
              f"{o.speedup:.2f}x default", flush=True)
        for config, reason in o.rejected:
            print(f"   rejected {tuner.config_short(config, xk.Workload.parse(o.workload).mode)}: {reason[:160]}",
                  flush=True)
    for w, why in result.failed.items():
        print(f"{w}: failed: {why}", flush=True)
    print(f"profile v{result.profile_version} -> {result.profile_path} ({wall:.0f} s, "
          f"db {settings.resolved_db_path()}, report {result.report_path})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if result.profile_path:
            shutil.copy(result.profile_path, args.out / "profile.json")
        (args.out / "tune_result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))


if __name__ == "__main__":
    main()
