"""Size and generation time of the run report for a 200-trial study (targets: < 2 MB, < 5 s on the 2-core box).

    PYTHONPATH=. python benchmarks/report_size.py [--trials 200] [--out DIR]

Builds, in a temporary HOME (or --out), a real tuning DB with one run and its re-timed winner, and a
synthetic tuner-like study of ``--trials`` candidates in the tuner's Optuna storage beside it
(``tests/report_helpers.py``: ~10% rejected, ~5% failed, the attributes the tuner sets). Then writes the
run report twice: cold (this process packs plotly.js for the first time) and warm (packed bundle cached),
and prints the file size and both times. Not a contention-sensitive timing: run it once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    """Build the study, write the report, print size and generation time against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="HOME to build in (default: a temporary one)")
    args = parser.parse_args()

    import optuna

    import storage
    import tuner
    import xlstm_kernels as xk
    from tests.report_helpers import PREFILL, WINNER, synthetic_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    home = args.out or Path(tempfile.mkdtemp(prefix="report-size-"))
    settings = tuner.TunerSettings(home=home)
    with storage.open_db(settings.resolved_db_path()) as db:
        machine_id = db.record_machine(xk.fingerprint("cpu"))
        run_id = db.start_run(machine_id, device="cpu", torch_version="bench", triton=None, quick=False, settings={})
        t0 = time.perf_counter()
        study = synthetic_study(tuner.optuna_storage_url(db.path, settings), args.trials, workload=PREFILL)
        build_s = time.perf_counter() - t0
        db.record_result(run_id=run_id, workload=xk.Workload.parse(PREFILL), machine_id=machine_id, config=WINNER,
                         trial_id=None, t_inner_effective=WINNER.t_inner, median_ms=0.8, spread_ms=0.02,
                         tokens_per_s=6.4e5, default_median_ms=1.35, speedup=1.35 / 0.8, equivalence_error=3e-6,
                         compile_s=3.4, n_trials=args.trials, n_rejected=0, n_failed=0, retime=[])
        db.finish_run(run_id, "completed")
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            written = tuner.write_run_report(db, run_id, [study.study_name], settings=settings)
            times.append(time.perf_counter() - t0)
    n = len(study.trials)
    size_mb = written.bytes / 1e6
    print(f"study: {n} trials ({args.trials} candidates + 1 repeated draw), built in {build_s:.1f} s")
    print(f"report: {written.path}")
    print(f"size: {size_mb:.2f} MB (target < 2 MB: {'ok' if size_mb < 2 else 'MISSED'})")
    print(f"generation: cold {times[0]:.2f} s, warm {times[1]:.2f} s (target < 5 s: "
          f"{'ok' if times[0] < 5 else 'MISSED'})")


if __name__ == "__main__":
    main()
