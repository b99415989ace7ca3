"""The default quick tune, quiet vs. with another tuning job sharing the box (issue 16's benchmark).

1. Quiet: a quick tune of ``--workload`` in a fresh process on a fresh DB (shared Inductor cache).
2. Loaded: the same, on another fresh DB, while a competing tuning job runs quick tunes one after
   another, each in its own process on its own home and a cold Inductor cache (compiling and timing on
   the same cores, on and off); the one running at the end is killed.
3. In this process, on the quietest footing it can get: the loaded run's winner against the quiet
   run's winner in fresh paired rounds (``tuner._timing.paired_ratios``), reported as the median time
   ratio with its order-statistic interval; the target is within 10%.
4. The loaded run's published speedup against the quiet run's interval: the target is inside it, or
   the loaded run marked itself "machine busy: results not trustworthy" (then it publishes nothing
   over a published winner).

    PYTHONPATH=. python benchmarks/tuner_under_load.py [--workload 1,4,512,64,128,float32] [--rounds 31]

Smoke (tiny space through the tuner's settings, seconds):
    XLSTM_AUTOTUNE_TUNE_FAMILIES='["recurrent"]' XLSTM_AUTOTUNE_TUNE_HEADS_PER_BAND='[2]' \\
    XLSTM_AUTOTUNE_TUNE_T_INNERS='[1,2]' PYTHONPATH=. python benchmarks/tuner_under_load.py \\
        --workload 1,2,16,8,8,float32 --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(a: argparse.Namespace) -> None:
    import tuner

    res = tuner.tune_workload(a.workload, db=a.db, device="cpu", quick=True)
    Path(a.out).write_text(json.dumps(res.to_dict()))


class Competitor:
    """The competing tuning job: quick tunes one after another, each a fresh process on a fresh home and a
    cold Inductor cache (so it compiles and times, on and off), until ``stop()`` kills the running one."""

    def __init__(self, a: argparse.Namespace, work: Path) -> None:
        self.a, self.work, self.runs = a, work, 0
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.runs += 1
            home = self.work / f"run{self.runs}"
            home.mkdir(parents=True)
            self.proc = _spawn(self.a, "tune", home / "tuning.db", home / "cache", home / "out.json")
            self.proc.wait()
            shutil.rmtree(home, ignore_errors=True)

    def stop(self) -> None:
        """Stop starting new tunes and kill the one running."""
        self._stop.set()
        if self.proc is not None:
            self.proc.kill()
        self._thread.join()


def _spawn(a: argparse.Namespace, mode: str, db: Path, cache: Path, out: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", mode, "--db", str(db), "--workload", a.workload]
    if out is not None:
        cmd += ["--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TORCHINDUCTOR_CACHE_DIR=str(cache),
               XLSTM_AUTOTUNE_HOME=str(db.parent))
    return subprocess.Popen(cmd, env=env)


def _tune(a: argparse.Namespace, work: Path, name: str, cache: Path) -> dict:
    db, out = work / name / "tuning.db", work / f"{name}.json"
    db.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    proc = _spawn(a, "tune", db, cache, out)
    if proc.wait() != 0:
        raise SystemExit(f"the {name} tune failed (exit {proc.returncode})")
    data = json.loads(out.read_text())
    data["process_wall_s"] = time.perf_counter() - t0
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="1,4,512,64,128,float32")
    p.add_argument("--rounds", type=int, default=31, help="fresh paired rounds of the final comparison")
    p.add_argument("--child", choices=["tune"], help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child == "tune":
        return _child(a)

    work = Path(tempfile.mkdtemp(prefix="tuner_under_load_"))
    cache = work / "inductor-cache"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    sys.path.insert(0, str(ROOT))
    import torch

    import tuner
    import xlstm_kernels as xk
    from tuner._timing import median_interval, paired_ratios

    print(f"# {a.workload} on {xk.fingerprint('cpu').cpu} ({os.cpu_count()} cores), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {platform.system()}; {time.strftime('%Y-%m-%d')}")
    quiet = _tune(a, work, "quiet", cache)
    competitor = Competitor(a, work / "competitor")
    try:
        time.sleep(5)  # let the competing job get going (imports, first compile)
        loaded = _tune(a, work, "loaded", cache)
    finally:
        competitor.stop()
    print(f"# the competing job ran {competitor.runs} quick tune(s) meanwhile")

    rows = {}
    for name, r in (("quiet", quiet), ("loaded", loaded)):
        w = r["winner"]
        cfg = xk.KernelConfig.from_dict(w["config"])
        iv = r["speedup_interval"] or {}
        rows[name] = cfg
        print(json.dumps({"run": name, "winner": cfg.short(), "median_ms": round(w["median_ms"], 4),
                          "speedup": r["speedup"], "speedup_low": iv.get("low"), "speedup_high": iv.get("high"),
                          "confidence": iv.get("confidence"), "trusted": r["trusted"],
                          "busy_reason": r["busy_reason"], "n_trials": r["n_trials"],
                          "unstable_retimed": [c["config"] for c in r["retimed"] if c.get("instability")],
                          "wall_s": round(r["process_wall_s"], 1)}))

    if not quiet["trusted"]:
        print("# WARNING: the quiet run was itself not trustworthy (another load shared the box): the "
              "comparison below is not a measurement of the competing job's effect; run on a quiet machine")
    wl = tuner.parse_workload(a.workload)
    x = tuner.Evaluator(wl, torch.device("cpu"), tuner.get_tuner_settings()).timing_inputs()
    ratios, t_loaded, t_quiet = paired_ratios(lambda: tuner.run_kernel(wl, x, rows["loaded"]),
                                              lambda: tuner.run_kernel(wl, x, rows["quiet"]), "cpu",
                                              rounds=a.rounds, warmup=3)
    iv = median_interval(ratios, 0.95)
    span = f"[{iv.low:.3f}, {iv.high:.3f}]" if iv.low is not None else "(too few rounds for an interval)"
    print(f"loaded winner / quiet winner time ({a.rounds} fresh paired rounds): {iv.median:.3f}, 95% interval "
          f"{span}: {'within' if iv.median <= 1.10 else 'NOT within'} 10%")
    q = quiet["speedup_interval"] or {}
    inside = q.get("low") is not None and q["low"] <= loaded["speedup"] <= q["high"]
    verdict = ("inside the quiet interval" if inside else
               "outside, but the loaded run marked itself busy" if not loaded["trusted"] else
               "OUTSIDE the quiet interval and not marked")
    print(f"published speedup: loaded {loaded['speedup']:.3f}x vs quiet {quiet['speedup']:.3f}x "
          f"[{q.get('low')}, {q.get('high')}]: {verdict}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
