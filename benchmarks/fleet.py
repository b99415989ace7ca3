"""Fleet mode on this box: one vs two tuning processes of one machine class on one shared study, and the
storage overhead per trial of PostgreSQL (fleet mode: heartbeats, claims) vs the embedded SQLite.

Starts a throwaway PostgreSQL on 127.0.0.1 (``tests/fleet_servers.py``; as the ``postgres`` user when
run as root). Each "worker" is a process running the real tuner (``tuner.tune_workload``) in fleet
mode as its own node with its own HOME - the work a Prefect worker's flow run does, without Prefect's
~30 s flow-run start-up, so that the study's own wall time is measured. Compiles are warmed first
(one embedded run), so every measured run reads Inductor's disk cache.

1. ``sqlite`` and ``postgres``: one process, same space, in-process SQLAlchemy event hooks count the
   storage's SQL statements and the time spent in them -> statements and storage ms per trial.
2. ``1 worker`` vs ``2 workers`` of one class on one fresh PostgreSQL study each: wall time from start
   to the last process's end, evaluated trials, trials per minute.

    PYTHONPATH=. python benchmarks/fleet.py [--workload 1,2,64,16,16,float32] [--t-inners 1 2 4 8]
        [--hpb 1 2] [--families recurrent chunkwise] [--out fleet.json]

Smoke (the test suite's two-candidate space): ``--workload 1,2,16,8,8,float32 --families recurrent
--hpb 2 --t-inners 1``. On a 2-core box two workers share the cores: the interesting figures there are
the per-trial overheads, not the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL of the fleet tests

FAST = dict(TUNE_REPEATS="6", TUNE_WARMUP="1", TUNE_RETIME_ROUNDS="3", DEVICE="cpu")


def _space_env(a: argparse.Namespace) -> dict[str, str]:
    env = dict(FAST, TUNE_FAMILIES=json.dumps(a.families), TUNE_HEADS_PER_BAND=json.dumps(a.hpb),
               TUNE_T_INNERS=json.dumps(a.t_inners))
    return {f"XLSTM_AUTOTUNE_{k}": v for k, v in env.items()}


def _child(a: argparse.Namespace) -> None:
    """One tuning process: tune the workload, print JSON (trials, storage statements and seconds)."""
    import torch
    from sqlalchemy import event

    import tuner
    from storage import open_db
    from tuner.settings import get_tuner_settings

    torch.set_num_threads(a.threads)
    settings = get_tuner_settings()
    stats = {"statements": 0, "storage_s": 0.0}
    with open_db(settings.resolved_db_path()) as db:
        storage = tuner.optuna_storage(db, settings)
        engine = storage.engine  # RDBStorage's; the heartbeat thread's statements count too

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            context._fleet_t0 = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            stats["statements"] += 1
            stats["storage_s"] += time.perf_counter() - context._fleet_t0

        t0 = time.perf_counter()
        res = tuner.tune_workload(a.workload, db=db, device="cpu")
        wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "n_trials": res.n_trials, "study": res.study_name,
                      "winner": res.winner.config.short() if res.winner else None, **stats}))


def _spawn(a: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", "--workload", a.workload, "--threads", str(a.threads)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"tuning process failed ({p.returncode}):\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _evaluated(url: str, study: str) -> tuple[int, dict[str, int]]:
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    ev = [t for t in trials if "status" in t.user_attrs and t.user_attrs.get("duplicate_of") is None]
    by_node: dict[str, int] = {}
    for t in ev:
        by_node[t.user_attrs["node"]] = by_node.get(t.user_attrs["node"], 0) + 1
    return len(ev), by_node


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="1,2,64,16,16,float32")
    p.add_argument("--families", nargs="+", default=["recurrent", "chunkwise"])
    p.add_argument("--hpb", nargs="+", type=int, default=[1, 2])
    p.add_argument("--t-inners", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1, help="torch threads per tuning process")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return _child(a)

    from fleet_servers import pg_bindir, postgres

    import torch

    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="xlstm-fleet-bench-"))
    base = dict(os.environ, PYTHONPATH=str(ROOT), **_space_env(a))
    base.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))
    results: dict = {"workload": a.workload, "space": {"families": a.families, "hpb": a.hpb, "t_inners": a.t_inners},
                     "torch": torch.__version__, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                     "date": time.strftime("%Y-%m-%d", time.gmtime())}

    def env(name: str, **extra: str) -> dict[str, str]:
        return dict(base, XLSTM_AUTOTUNE_HOME=str(tmp / name), **{f"XLSTM_AUTOTUNE_{k}": v for k, v in extra.items()})

    print("warming compiles (embedded SQLite run) ...", flush=True)
    _collect([_spawn(a, env("warm"))])
    with postgres(bindir) as pg:
        url = pg.url("optuna")
        fleet = dict(FLEET="true", OPTUNA_STORAGE=url, FLEET_HEARTBEAT_S="5", FLEET_GRACE_S="30", FLEET_POLL_S="1")
        per_trial = {}
        for name, extra in (("sqlite", {}), ("postgres", dict(fleet, FLEET_NAME="overhead", FLEET_NODE="n1"))):
            r = _collect([_spawn(a, env(f"over-{name}", **extra))])[0]
            n = max(1, r["n_trials"])
            per_trial[name] = {"trials": r["n_trials"], "wall_s": r["wall_s"], "statements_per_trial": r["statements"] / n,
                               "storage_ms_per_trial": 1e3 * r["storage_s"] / n}
        per_trial["postgres_minus_sqlite_ms_per_trial"] = (per_trial["postgres"]["storage_ms_per_trial"]
                                                           - per_trial["sqlite"]["storage_ms_per_trial"])
        results["overhead"] = per_trial
        runs = {}
        for n_workers in (1, 2):
            fleet_name = f"w{n_workers}"
            t0 = time.perf_counter()
            procs = [_spawn(a, env(f"{fleet_name}-n{i}", **fleet, FLEET_NAME=fleet_name, FLEET_NODE=f"n{i}"))
                     for i in range(n_workers)]
            outs = _collect(procs)
            wall = time.perf_counter() - t0
            evaluated, by_node = _evaluated(url, outs[0]["study"])
            runs[f"{n_workers}_workers"] = {"wall_s": wall, "evaluated": evaluated, "by_node": by_node,
                                            "trials_per_min": 60 * evaluated / wall,
                                            "winners": [o["winner"] for o in outs]}
        results["workers"] = runs
    print(json.dumps(results, indent=2))
    o = results["overhead"]
    print(f"\nstorage per trial: SQLite {o['sqlite']['statements_per_trial']:.0f} statements, "
          f"{o['sqlite']['storage_ms_per_trial']:.1f} ms; PostgreSQL (fleet) {o['postgres']['statements_per_trial']:.0f} "
          f"statements, {o['postgres']['storage_ms_per_trial']:.1f} ms")
    for k, r in runs.items():
        print(f"{k}: {r['evaluated']} candidates in {r['wall_s']:.1f} s = {r['trials_per_min']:.1f} trials/min {r['by_node']}")
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
