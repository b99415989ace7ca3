"""The ``xlstm-autotune`` command line through typer's runner: help, exit codes, JSON output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from flows import tasks
from flows.cli import EXIT_FAILED, EXIT_LOCKED, EXIT_SERVER, EXIT_USAGE, _PUBLISH_FN, _TUNE_FN, app
from flows.lock import machine_lock
from flows.server import free_port

runner = CliRunner()
GOOD = "2,4,37,16,32,float32,prefill"
FAILING = "2,4,37,16,3,float32,prefill"
SEAMS = ["--tune-fn", "flow_helpers:tune_small", "--publish-fn", "flow_helpers:publish_json"]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XLSTM_AUTOTUNE_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture()
def dead_api():
    """Point Prefect at a loopback port nobody listens on."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


@pytest.mark.parametrize("command", ["tune", "serve", "report", "version"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 3


def test_cli_seams_match_the_tasks():
    assert (_TUNE_FN, _PUBLISH_FN) == (tasks.TUNE_FN, tasks.PUBLISH_FN)


def test_tune_without_the_tuner_says_not_yet_available(home):
    result = runner.invoke(app, ["tune", "--quick"])
    assert result.exit_code == EXIT_USAGE
    assert "not yet available" in result.output and "tuner" in result.output


def test_tune_bad_workload_is_usage_error(home):
    result = runner.invoke(app, ["tune", "-w", "1,2,3", *SEAMS])
    assert result.exit_code == EXIT_USAGE
    assert "bad input" in result.output and "6 or 7 fields" in result.output


def test_tune_unreachable_server_exits_3_with_local_hint(home, dead_api):
    result = runner.invoke(app, ["tune", "-w", GOOD, *SEAMS])
    assert result.exit_code == EXIT_SERVER
    assert dead_api in result.output and "--no-server" in result.output


def test_tune_refuses_while_machine_locked(home):
    with machine_lock(home):
        result = runner.invoke(app, ["tune", "-w", GOOD, "--no-server", "--wait", "0.3", *SEAMS])
    assert result.exit_code == EXIT_LOCKED
    assert f"pid {os.getpid()}" in result.output and "after waiting" in result.output


def test_tune_runs_flow_and_prints_json(prefect_harness, home):
    result = runner.invoke(app, ["tune", "-w", GOOD, "-w", FAILING, "--quick", "--json", *SEAMS])
    assert result.exit_code == EXIT_FAILED, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["state"] == "FAILED" and list(data["failed"]) == [FAILING]
    assert [o["workload"] for o in data["outcomes"]] == [GOOD]
    assert data["server"]["kind"] == "remote"  # the harness's API server
    assert Path(data["profile_path"]).exists() and Path(data["profile_path"]).is_relative_to(home)


def test_tune_runs_flow_and_prints_table(prefect_harness, home):
    result = runner.invoke(app, ["tune", "-w", GOOD, "--quick", *SEAMS])
    assert result.exit_code == 0, result.output
    assert "Winners on machine" in result.output and "profile:" in result.output
    assert str(home / "profiles") in result.output.replace("\n", "")


def test_serve_rejects_cron_and_interval_together(home):
    result = runner.invoke(app, ["serve", "--cron", "0 3 * * *", "--interval", "60"])
    assert result.exit_code == EXIT_USAGE and "not both" in result.output


def test_serve_without_the_tuner_says_not_yet_available(home):
    result = runner.invoke(app, ["serve", "--interval", "60"])
    assert result.exit_code == EXIT_USAGE and "not yet available" in result.output


def test_serve_unreachable_server_exits_3(home, dead_api):
    result = runner.invoke(app, ["serve", "--interval", "60", "--flow", "serve_target:touch_flow"])
    assert result.exit_code == EXIT_SERVER
    assert dead_api in result.output and "tune --no-server" in result.output


def test_report_writes_html_and_json(home):
    storage = f"sqlite:///{home / 'optuna.db'}"
    study = optuna.create_study(study_name="w1", storage=storage)
    study.optimize(lambda t: (t.suggest_int("chunk_size", 8, 64) - 40) ** 2 + t.suggest_float("x", 0, 1), n_trials=6)
    out = home / "rep.html"
    result = runner.invoke(app, ["report", "--study", "w1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["path"] == str(out) and data["bytes"] == out.stat().st_size > 1_000_000
    assert "Parameter importances" in out.read_text()
    result = runner.invoke(app, ["report", "--study", "w1"])  # default path under HOME/reports
    assert result.exit_code == 0 and (home / "reports" / "w1.html").exists()


def test_report_unknown_study_lists_known_ones(home):
    storage = f"sqlite:///{home / 'o.db'}"
    optuna.create_study(study_name="known", storage=storage)
    result = runner.invoke(app, ["report", "--study", "nope", "--storage", storage])
    assert result.exit_code == EXIT_FAILED and "known" in result.output
