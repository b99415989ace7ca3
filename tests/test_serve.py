"""``xlstm-autotune serve`` end to end: a real local Prefect server, the real ``flows.flows:autotune``
deployment on the narrowed tuner (``flow_helpers.NARROW_ENV``), a published profile and a held machine
lock. A scheduled run must wait for the lock, then re-validate the published winner (keep) and record
its tuning run in the DB; ``serve`` must stop the server it started on Ctrl-C.

One test on purpose: the server start costs about a minute on 2 cores, the flow run ~30 s more.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import xlstm_kernels as xk
from flow_helpers import GOOD, NARROW_ENV
from flows.flows import artifact_key
from flows.server import attach_local_server, scheduling_server, state_path
from tuner import machine_lock
from xlstm_kernels.profiles.profile import machine_profile_path

REPO = Path(__file__).resolve().parent.parent
HOLD_S = 8.0  # the lock stays held this long after the scheduled run is seen running (the flow opens
# its DB run within ~2 s of starting when nothing blocks it)


def _api(api_url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    req = urllib.request.Request(api_url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _scheduled_runs(api_url: str, *states: str) -> list[dict[str, Any]]:
    """Flow runs of a deployment (scheduled, not ad hoc) in one of the Prefect state types ``states``."""
    runs = _api(api_url, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": list(states)}}}})
    return [r for r in runs if r["deployment_id"]]


def _db_runs(db: Path) -> list[dict[str, Any]]:
    """Rows of the tuning DB's ``runs`` table, oldest first (read-only: never creates the DB)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY id")]
    except sqlite3.OperationalError:  # the schema is being created right now
        return []
    finally:
        con.close()


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C ``serve`` (it cancels its run, pauses the schedule, stops its server); kill it after 45 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _publish_good(home: Path) -> tuple[str, Path]:
    """Publish a profile for GOOD at this machine's path; returns (machine id, path).

    Its winner (recurrent hpb2 T1, in the narrowed space) is published at 10 s with no paired
    speedup, so the re-validation's fresh quick re-time (well under a second) keeps it: ``keep``.
    """
    fp = xk.fingerprint("cpu")
    wl = xk.Workload.parse(GOOD)
    cfg = xk.KernelConfig("recurrent", chunk_size=16, heads_per_band=2, t_inner=1)
    entry = xk.ProfileEntry(workload=GOOD, config=cfg.to_dict(), t_inner_requested=1, t_inner_effective=1,
                            median_s=10.0, tokens_per_s=wl.tokens() / 10.0, speedup_vs_default=1.0,
                            equivalence_error=1e-7)
    path = machine_profile_path(home, fp.machine_id)
    xk.publish_profile(xk.Profile.for_machine(fp, [entry]), path)
    return fp.machine_id, path


@pytest.mark.server
def test_serve_scheduled_run_waits_for_lock_then_revalidates(tmp_path):
    home = tmp_path / "home"
    machine_id, profile = _publish_good(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "XLSTM_AUTOTUNE_"))}
    env.update({f"XLSTM_AUTOTUNE_{k}": v for k, v in NARROW_ENV.items()})
    env.update(
        PYTHONPATH=str(REPO),
        XLSTM_AUTOTUNE_HOME=str(home),
        XLSTM_AUTOTUNE_DEVICE="cpu",
        XLSTM_AUTOTUNE_WORKLOADS=json.dumps([GOOD]),
        XLSTM_AUTOTUNE_SERVE_LOCK_WAIT_S="600",
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",  # default 60: schedule the first runs sooner
    )
    db = home / "tuning.db"
    out_path = tmp_path / "serve.out"
    out = out_path.open("w")
    with machine_lock(home, "tune") as holder:  # a manual `tune` holds the machine
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--interval", "10"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 420
            running: list[dict[str, Any]] = []
            info = None
            while time.monotonic() < deadline and proc.poll() is None and not running:
                info = attach_local_server(home)
                running = _scheduled_runs(info.api_url, "RUNNING") if info is not None else []
                time.sleep(1)
            assert running, f"no scheduled run started; serve output:\n{out_path.read_text()[-3000:]}"
            # the scheduled run is running, and waits: it opens no tuning run while the lock is held
            held_until = time.monotonic() + HOLD_S
            while time.monotonic() < held_until:
                assert _db_runs(db) == [], "the scheduled run started tuning while the machine lock was held"
                time.sleep(0.5)
            assert [r["id"] for r in _scheduled_runs(info.api_url, "RUNNING")] == [running[0]["id"]]
            released = dt.datetime.now(dt.timezone.utc)
        except BaseException:
            _stop(proc)  # Ctrl-C, so that serve stops the server it started
            out.close()
            raise
    assert holder.pid == os.getpid()
    try:
        completed: list[dict[str, Any]] = []
        while time.monotonic() < deadline and proc.poll() is None and not completed:
            completed = [r for r in _scheduled_runs(info.api_url, "COMPLETED") if r["id"] == running[0]["id"]]
            failed = [r for r in _scheduled_runs(info.api_url, "FAILED", "CRASHED", "CANCELLED")
                      if r["id"] == running[0]["id"]]
            assert not failed, f"{failed[0]['state']['message']}\n{out_path.read_text()[-3000:]}"
            time.sleep(1)
        log = out_path.read_text()
        assert completed, f"the scheduled run did not complete after the lock was released:\n{log[-3000:]}"
        run = completed[0]
        assert run["auto_scheduled"]
        # ... after the release: its tuning run opened then, and the DB records it completed
        rows = _db_runs(db)
        assert rows, "the DB records no tuning run"
        first = rows[0]
        assert first["status"] == "completed" and first["device"] == "cpu" and first["machine_id"] == machine_id
        opened = dt.datetime.fromisoformat(first["started_at"])
        assert opened > released
        waited = (opened - dt.datetime.fromisoformat(run["start_time"])).total_seconds()
        assert waited >= HOLD_S - 0.5, f"the flow run opened its tuning run {waited:.1f} s after it started"
        # re-validated: the published winner was kept, nothing tuned, the profile not re-published
        assert run["state"]["message"] == "1 workload(s): 0 tuned, 1 kept"
        arts = _api(info.api_url, "/artifacts/filter",
                    {"artifacts": {"key": {"any_": [artifact_key("autotune-summary", machine_id)]}}})
        summary = next(a["data"] for a in arts if a["flow_run_id"] == run["id"])
        assert f"| {GOOD} | keep | re-validated: " in summary and "ms vs 1e+04 ms published" in summary
        assert f"Tuning run: {first['id']}." in summary
        assert xk.load_profile(profile).publication.version == 1
        # the server: a second command attaches to the one serve started and leaves it running
        assert info.kind == "attached"
        with scheduling_server(home, api_url="") as second:
            assert second.kind == "attached" and second.pid == info.pid
        assert attach_local_server(home) is not None
        assert "started a local Prefect server at http://127.0.0.1:" in log
        server_pid = info.pid
    finally:
        _stop(proc)
        out.close()
    assert proc.returncode == 0, out_path.read_text()[-3000:]  # Ctrl-C: serve stops cleanly ...
    assert not state_path(home).exists()  # ... and stops the server it started
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    assert (home / "logs" / "prefect-server.log").stat().st_size > 0
