"""`xlstm-autotune dashboard` (optuna-dashboard) and `xlstm-autotune db` (Datasette): each starts as its own
process, answers HTTP on 127.0.0.1 with the tuning data, and stops cleanly on SIGTERM (bounded, by PID)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from report_helpers import PREFILL, synthetic_study
from typer.testing import CliRunner

import storage
from flows.cli import app

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 180  # importing the CLI on a loaded 2-core box takes tens of seconds


@pytest.fixture()
def home(tuner_home):
    """A fresh HOME with settings re-read (conftest's ``tuner_home``)."""
    return tuner_home


def _start(args: list[str], home: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """Start the CLI with ``args``; wait (bounded) for the URL it prints; return (process, URL, output lines)."""
    env = dict(os.environ, XLSTM_AUTOTUNE_HOME=str(home),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", "from flows.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "http://127.0.0.1:" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(STARTUP_S):
        _stop(proc)
        pytest.fail(f"{args[0]} printed no URL within {STARTUP_S} s: {''.join(lines)}")
    url = re.search(r"http://127\.0\.0\.1:\d+\S*", "".join(lines)).group(0)
    return proc, url, lines


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM to our process by PID; SIGKILL if it has not exited within 30 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            pytest.fail("the viewer did not stop within 30 s of SIGTERM")
    return proc.returncode


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_dashboard_lists_the_tuners_studies_and_stops_cleanly(home):
    study = synthetic_study(f"sqlite:///{home / 'tuning.optuna.db'}", 6)  # where `tune` writes them
    proc, url, lines = _start(["dashboard"], home)
    try:
        assert url.endswith("/dashboard/") and "tuning.optuna.db" in lines[-1]
        base = url.removesuffix("dashboard/")
        studies = json.loads(_get(base + "api/studies"))["study_summaries"]
        [listed] = [s for s in studies if s["study_name"] == study.study_name]
        assert {"key": "workload", "value": PREFILL} in listed["user_attrs"]
        detail = json.loads(_get(f"{base}api/studies/{listed['study_id']}"))
        labels = {a["value"] for t in detail["trials"] for a in t["user_attrs"] if a["key"] == "label"}
        assert "chunkwise L64 hpball T4 queued" in labels  # the default config's readable label
        assert "<html" in _get(url).lower()
    finally:
        code = _stop(proc)
    assert code == 0 and "dashboard stopped" in "".join(lines)


def test_dashboard_without_storage_says_so_and_creates_nothing(home):
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 1 and "no Optuna storage at" in result.output
    assert not (home / "tuning.optuna.db").exists()


def test_db_serves_the_tuning_db_with_descriptions_and_stops_cleanly(home):
    storage.open_db(home / "tuning.db").close()
    proc, url, lines = _start(["db"], home)
    try:
        assert url.endswith("/tuning")
        page = _get(url + "/trials")
        assert "Every evaluated candidate: compiled, validated" in page
        assert "ok (timed), rejected (failed the equivalence gate)" in page  # the status column's description
    finally:
        code = _stop(proc)
    assert code == 0 and "db viewer stopped" in "".join(lines)


def test_every_column_of_the_tuning_db_is_described(tmp_path):
    with storage.open_db(tmp_path / "tuning.db") as db:
        columns = {t: [c.name for c in db.db[t].columns] for t in db.db.table_names()}
    missing = [f"{t}.{c}" for t, cols in columns.items() for c in cols if storage.column_description(t, c) is None]
    assert missing == []
    meta = storage.datasette_metadata("tuning", columns)["databases"]["tuning"]["tables"]
    assert set(meta) == set(columns) and all(meta[t]["description"] for t in meta)
