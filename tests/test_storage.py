"""The tuning database: schema and migrations, refusing foreign/newer files, transactions,
kill-safety, two concurrent writer processes, queries (best, profiles, probes) and the best CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import storage
import xlstm_kernels as xk
from flows.cli import app
from storage import NoTunedConfig, NotADatabase, SchemaTooNew, TuningDB

ROOT = Path(__file__).resolve().parent.parent
WL = xk.Workload.parse("1,2,16,8,8,float32")
CFG = xk.KernelConfig("recurrent", chunk_size=16, t_inner=2, heads_per_band=2)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fp(cpu: str | None = None) -> xk.Fingerprint:
    fp = xk.fingerprint("cpu")
    return dataclasses.replace(fp, cpu=cpu) if cpu else fp


def _run(db: TuningDB, fp: xk.Fingerprint | None = None) -> tuple[int, str]:
    fp = fp or _fp()
    mid = db.record_machine(fp)
    return db.start_run(mid, device="cpu", torch_version=fp.torch, triton=fp.triton), mid


def _ok_trial(db: TuningDB, run_id: int, mid: str, median: float, cfg: xk.KernelConfig = CFG) -> int:
    return db.record_trial(run_id=run_id, workload=WL, machine_id=mid, config=cfg, effective=cfg,
                           status="ok", t_inner_effective=cfg.t_inner, compile_s=3.0,
                           equivalence_error=1e-7, tolerance=1e-4, median_ms=median, spread_ms=0.1,
                           min_ms=median * 0.9, repeats=5, tokens_per_s=16 / (median / 1e3))


def _spawn(code: str) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- schema ---------------------------------------------------------------------------------------

def test_new_database_has_schema_wal_and_version(fresh_db):
    assert fresh_db.schema_version == storage.SCHEMA_VERSION
    assert fresh_db.db.journal_mode == "wal"
    assert set(fresh_db.db.table_names()) == {"machines", "runs", "workloads", "trials", "results",
                                              "probes", "profiles"}
    assert "compile_s" in fresh_db.db["trials"].columns_dict
    assert "median_ms" in fresh_db.db["trials"].columns_dict


def test_reopen_keeps_data_and_empty_file_is_initialised(db_path, tmp_path):
    with TuningDB(db_path) as db:
        run_id, _ = _run(db)
    with TuningDB(db_path) as db:
        assert db.run(run_id)["status"] == "running"
        assert db.schema_version == storage.SCHEMA_VERSION
    empty = tmp_path / "empty.db"
    empty.touch()
    with TuningDB(empty) as db:
        assert db.schema_version == storage.SCHEMA_VERSION


def test_not_sqlite_file_is_refused_and_untouched(tmp_path):
    bad = tmp_path / "tuning.db"
    bad.write_text("these are my notes, not a database\n" * 10)
    before = _digest(bad)
    with pytest.raises(NotADatabase, match="not an SQLite database"):
        TuningDB(bad)
    assert _digest(bad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuning.db"]  # no -wal/-shm left behind


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    before = _digest(other)
    with pytest.raises(NotADatabase, match="customers"):
        TuningDB(other)
    assert _digest(other) == before


def test_newer_schema_is_refused_and_untouched(db_path):
    TuningDB(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = _digest(db_path)
    with pytest.raises(SchemaTooNew, match=f"99.*up to {storage.SCHEMA_VERSION}"):
        TuningDB(db_path)
    assert _digest(db_path) == before


# -- writes ---------------------------------------------------------------------------------------

def test_trial_rules_non_ok_needs_reason_and_no_timing(fresh_db):
    run_id, mid = _run(fresh_db)
    kw = dict(run_id=run_id, workload=WL, machine_id=mid, config=CFG, effective=CFG)
    with pytest.raises(ValueError, match="needs a reason"):
        fresh_db.record_trial(status="rejected", **kw)
    with pytest.raises(ValueError, match="only an ok"):
        fresh_db.record_trial(status="rejected", reason="bad", median_ms=1.0, **kw)
    with pytest.raises(ValueError, match="must be one of"):
        fresh_db.record_trial(status="great", **kw)
    with pytest.raises(sqlite3.IntegrityError):  # the table enforces it too
        with fresh_db.write():
            fresh_db.conn.execute(
                "INSERT INTO trials (run_id, workload_id, machine_id, config_json, effective_json, "
                "config_key, status, median_ms, created_at) VALUES (?, ?, ?, '{}', '{}', '{}', "
                "'rejected', 1.0, 'now')", (run_id, fresh_db.workload_id(WL), mid))
    assert fresh_db.trials() == []


def test_write_transaction_is_all_or_nothing(fresh_db):
    run_id, mid = _run(fresh_db)
    with pytest.raises(RuntimeError):
        with fresh_db.write() as db:
            db["profiles"].insert(dict(machine_id=mid, version=1, path="/p", checksum="x",
                                       run_id=run_id, created_at="t"))
            raise RuntimeError("crash between two writes")
    assert fresh_db.profiles() == []


def test_killed_mid_transaction_leaves_no_half_rows_and_run_is_interrupted(db_path):
    proc = _spawn(f"""
        import os, signal
        import storage, xlstm_kernels as xk
        wl = xk.Workload.parse("{WL}")
        cfg = xk.KernelConfig("recurrent", chunk_size=16, t_inner=2, heads_per_band=2)
        db = storage.TuningDB({str(db_path)!r})
        fp = xk.fingerprint("cpu")
        mid = db.record_machine(fp)
        run_id = db.start_run(mid, device="cpu", torch_version=fp.torch, triton=None)
        kw = dict(run_id=run_id, workload=wl, machine_id=mid, config=cfg, effective=cfg,
                  status="failed", reason="boom")
        db.record_trial(**kw)
        print(run_id, flush=True)
        with db.write():
            db.conn.execute("INSERT INTO profiles (machine_id, version, path, checksum, created_at) "
                            "VALUES (?, 1, 'p', 'c', 't')", (mid,))
            os.kill(os.getpid(), signal.SIGKILL)  # killed before COMMIT
    """)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    run_id = int(out.split()[0])
    with TuningDB(db_path) as db:
        assert db.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(db.trials(run_id=run_id)) == 1
        assert db.profiles() == []  # the uncommitted row is gone
        assert db.run(run_id)["status"] == "running"
        assert db.recover_stale_runs() == [run_id]
        run = db.run(run_id)
        assert run["status"] == "interrupted" and "killed" in run["error"]
        assert db.recover_stale_runs() == []


def test_a_live_running_run_is_not_marked_interrupted(fresh_db):
    run_id, _ = _run(fresh_db)  # owned by this (live) process
    assert fresh_db.recover_stale_runs() == []
    assert fresh_db.run(run_id)["status"] == "running"


def test_two_writer_processes(db_path):
    TuningDB(db_path).close()
    n = 40
    barrier = db_path.parent / "ready"
    barrier.mkdir()
    code = f"""
        import os, time
        from pathlib import Path
        import storage, xlstm_kernels as xk
        wl = xk.Workload.parse("{WL}")
        db = storage.TuningDB({str(db_path)!r}, busy_timeout_s=60)
        fp = xk.fingerprint("cpu")
        mid = db.record_machine(fp)
        barrier = Path({str(barrier)!r})
        (barrier / str(os.getpid())).touch()
        deadline = time.time() + 120
        while len(list(barrier.iterdir())) < 2 and time.time() < deadline:  # start together
            time.sleep(0.01)
        run_id = db.start_run(mid, device="cpu", torch_version=fp.torch, triton=None)
        for t in range(1, {n} + 1):
            cfg = xk.KernelConfig("recurrent", chunk_size=16, t_inner=1, heads_per_band=2)
            db.record_trial(run_id=run_id, workload=wl, machine_id=mid, config=cfg, effective=cfg,
                            status="ok", median_ms=float(t), spread_ms=0.0, tokens_per_s=1.0)
            db.heartbeat(run_id)
        db.record_profile(machine_id=mid, path=f"/p/{{run_id}}.json", checksum="c", run_id=run_id)
        db.finish_run(run_id, "completed")
        print(run_id)
    """
    procs = [_spawn(code), _spawn(code)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    run_ids = sorted(int(o[0].split()[-1]) for o in outs)
    with TuningDB(db_path) as db:
        assert db.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for rid in run_ids:
            assert db.run(rid)["status"] == "completed"
            assert sorted(t["median_ms"] for t in db.trials(run_id=rid)) == [float(t) for t in range(1, n + 1)]
        assert sorted(p["version"] for p in db.profiles()) == [1, 2]  # versions never collide
        assert db.db["workloads"].count == 1


# -- queries --------------------------------------------------------------------------------------

def test_best_prefers_the_retimed_winner_then_the_fastest_ok_trial(fresh_db):
    run_id, mid = _run(fresh_db)
    with pytest.raises(NoTunedConfig, match="no tuned config for workload 1,2,16,8,8,float32,prefill"):
        fresh_db.best(WL, mid)
    fresh_db.record_trial(run_id=run_id, workload=WL, machine_id=mid, config=CFG.replace(t_inner=4),
                          effective=CFG.replace(t_inner=4), status="rejected", reason="wrong",
                          equivalence_error=0.5)
    slow = _ok_trial(fresh_db, run_id, mid, 2.0, CFG.replace(t_inner=1))
    fast = _ok_trial(fresh_db, run_id, mid, 1.0)
    best = fresh_db.best(WL, mid)
    assert best.source == "trial" and best.config == CFG and best.median_ms == 1.0
    fresh_db.record_result(run_id=run_id, workload=WL, machine_id=mid, config=CFG.replace(t_inner=1),
                           trial_id=slow, t_inner_effective=1, median_ms=1.5, spread_ms=0.1,
                           tokens_per_s=10.0, default_median_ms=3.0, speedup=2.0,
                           equivalence_error=1e-7, compile_s=2.0, n_trials=3, n_rejected=1,
                           n_failed=0, retime=[])
    best = fresh_db.best(WL, mid)
    assert best.source == "result" and best.config.t_inner == 1 and best.speedup == 2.0
    assert best.run_id == run_id and best.run_status == "running"
    assert fast  # the fastest *trial* lost to the paired re-timing's winner
    other = fresh_db.record_machine(_fp("Another CPU"))
    with pytest.raises(NoTunedConfig):
        fresh_db.best(WL, other)
    with pytest.raises(NoTunedConfig):
        fresh_db.best(xk.Workload.parse("1,2,32,8,8,float32"), mid)


def test_profiles_and_probes(fresh_db):
    run_id, mid = _run(fresh_db)
    assert fresh_db.latest_profile(mid) is None
    assert fresh_db.record_profile(machine_id=mid, path="/a.json", checksum="aa", run_id=run_id) == 1
    assert fresh_db.record_profile(machine_id=mid, path="/b.json", checksum="bb") == 2
    with pytest.raises(sqlite3.IntegrityError):
        fresh_db.record_profile(machine_id=mid, path="/c.json", checksum="cc", version=2)
    assert [p["version"] for p in fresh_db.profiles(mid)] == [2, 1]
    assert fresh_db.latest_profile(mid)["checksum"] == "bb"
    assert fresh_db.probe_outcome(mid, "2.13", "k1") is None
    fresh_db.record_probe(machine_id=mid, torch_version="2.13", compile_key="k1", config=CFG,
                          t_inner_requested=16, t_inner_effective=4, ok=True, compile_s=1.0)
    got = fresh_db.probe_outcome(mid, "2.13", "k1")
    assert got["t_inner_effective"] == 4 and got["ok"] == 1
    assert fresh_db.probe_outcome(mid, "2.12", "k1") is None


def test_finish_unknown_run(fresh_db):
    with pytest.raises(storage.UnknownRun, match="no tuning run with id 42"):
        fresh_db.finish_run(42, "completed")
    with pytest.raises(ValueError, match="completed"):
        fresh_db.finish_run(1, "running")


# -- the best command -----------------------------------------------------------------------------

def test_best_cli(db_path):
    with TuningDB(db_path) as db:
        run_id, mid = _run(db)
        _ok_trial(db, run_id, mid, 1.25)
    runner = CliRunner()
    res = runner.invoke(app, ["best", "--workload", "1,2,16,8,8,fp32", "--machine", mid,
                              "--db", str(db_path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["config"] == CFG.to_dict() and data["median_ms"] == 1.25 and data["run_id"] == run_id
    res = runner.invoke(app, ["best", "--workload", "1,2,16,8,8,float32", "--machine", mid,
                              "--db", str(db_path)])
    assert res.exit_code == 0 and "recurrent L16 hpb2 T2" in res.stdout
    res = runner.invoke(app, ["best", "--workload", "1,2,99,8,8,float32", "--machine", mid,
                              "--db", str(db_path), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["best"] is None
    assert "no tuned config" in res.stderr
    missing = db_path.parent / "missing.db"
    res = runner.invoke(app, ["best", "--workload", "1,2,16,8,8,float32", "--db", str(missing)])
    assert res.exit_code == 1 and not missing.exists()
    res = runner.invoke(app, ["best", "--workload", "1,2,16", "--db", str(db_path)])
    assert res.exit_code == 2 and "B,NH,S,DHQK,DHV,dtype" in res.stderr
    db_path.with_name("junk.db").write_text("junk")
    res = runner.invoke(app, ["best", "--workload", "1,2,16,8,8,float32", "--db",
                              str(db_path.with_name("junk.db"))])
    assert res.exit_code == 2 and "not an SQLite database" in res.stderr
