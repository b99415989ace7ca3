"""The ``xlstm-autotune`` command line through typer's runner: help, exit codes, JSON output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import storage
import xlstm_kernels as xk
from flows.cli import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_SERVER, EXIT_USAGE, app
from flows.server import free_port
from tuner import machine_lock

runner = CliRunner()
from flow_helpers import GOOD  # the real tuner on a two-candidate space
from flow_helpers import UNBANDABLE as FAILING

REC = xk.KernelConfig("recurrent", chunk_size=16, heads_per_band=2, t_inner=1)  # a candidate of that space


@pytest.fixture()
def home(tuner_home):
    """The conftest's ``tuner_home`` under this file's name."""
    return tuner_home


@pytest.fixture()
def dead_api():
    """Point Prefect at a loopback port nobody listens on."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


@pytest.mark.parametrize("command", ["tune", "serve", "report", "version", "bench"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 3


def test_seams_default_to_the_real_tuner_and_publisher():
    import inspect

    import tuner
    from flows.flows import autotune

    lib = inspect.signature(tuner.autotune).parameters
    assert lib["tune_fn"].default is tuner.tune_workload and lib["publish_fn"].default is tuner.publish_entries
    flow = inspect.signature(autotune.fn).parameters  # a deployment's JSON parameters leave them None: the defaults
    assert flow["tune_fn"].default is None and flow["publish_fn"].default is None


def test_tune_bad_workload_is_usage_error(home):
    result = runner.invoke(app, ["tune", "-w", "1,2,3"])
    assert result.exit_code == EXIT_USAGE
    assert "bad input" in result.output and "6 or 7 fields" in result.output


def test_tune_unreachable_server_exits_3_with_local_hint(home, dead_api):
    result = runner.invoke(app, ["tune", "-w", GOOD])
    assert result.exit_code == EXIT_SERVER
    assert dead_api in result.output and "--no-server" in result.output


def test_tune_refuses_while_machine_locked(home):
    with machine_lock(home):
        result = runner.invoke(app, ["tune", "-w", GOOD, "--no-server", "--wait", "0.3"])
    assert result.exit_code == EXIT_LOCKED
    assert f"pid {os.getpid()}" in result.output and "after waiting" in result.output


def test_tune_runs_flow_and_prints_json(prefect_harness, home):
    refused = runner.invoke(app, ["tune", "-w", GOOD, "-w", FAILING, "--quick", "--json"])
    assert refused.exit_code == EXIT_USAGE and "cannot band NH=3" in refused.output  # before Prefect starts
    assert not (home / "tuning.db").exists() and not (home / "profiles").exists()  # nothing written
    result = runner.invoke(app, ["tune", "-w", GOOD, "--quick", "--json"])
    assert result.exit_code == EXIT_OK, result.output
    out = result.stdout  # Prefect may log (to stderr, or late) after the JSON document: parse just that
    data, _ = json.JSONDecoder().raw_decode(out, out.index("{"))
    assert data["state"] == "COMPLETED" and data["failed"] == {}
    assert [o["workload"] for o in data["outcomes"]] == [GOOD] and data["outcomes"][0]["action"] == "tuned"
    assert data["server"]["kind"] == "remote"  # the harness's API server
    profile = xk.load_profile(data["profile_path"])
    assert Path(data["profile_path"]).is_relative_to(home) and profile.publication.version == data["profile_version"]
    assert Path(data["report_path"]).exists() and data["run_id"] == 1
    with storage.open_db(home / "tuning.db") as db:
        assert db.profiles()[0]["checksum"] == data["profile_checksum"]


def test_tune_prints_table_profile_and_report(prefect_harness, home):
    result = runner.invoke(app, ["tune", "-w", GOOD, "--quick"])
    assert result.exit_code == 0, result.output
    out = result.output.replace("\n", "")
    assert "Winners on machine" in out and "not yet available" not in out
    assert f"profile v1 published to {home / 'profiles'}" in out
    assert f"report written to {home / 'reports' / 'run-1.html'}" in out


def test_bench_given_config_and_profile_pick(home):
    result = runner.invoke(app, ["bench", "-w", GOOD, "--config", json.dumps(REC.to_dict()), "--rounds", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["source"] == "given" and data["chosen"]["config"] == REC.to_dict()
    # the speedup is the median of the per-round ratios of paired rounds (not the ratio of two medians)
    assert len(data["ratios"]) == 3 and data["speedup"] == pytest.approx(sorted(data["ratios"])[1])
    assert data["chosen"]["equivalence_error"] >= 0 and data["default"]["equivalence_error"] >= 0  # reported
    # with a published profile, bench takes the profile's pick for the workload
    wl = xk.Workload.parse(GOOD)
    entry = xk.ProfileEntry(workload=GOOD, config=REC.to_dict(), t_inner_requested=1, t_inner_effective=1,
                            median_s=1e-3, tokens_per_s=wl.tokens() / 1e-3, speedup_vs_default=1.0,
                            equivalence_error=0.0)
    xk.publish_profile(xk.Profile.for_machine(xk.fingerprint("cpu"), [entry]))
    xk.reload_profile()
    result = runner.invoke(app, ["bench", "-w", GOOD, "--rounds", "3"])
    assert result.exit_code == 0, result.output
    assert "(exact: exact workload match)" in result.output and REC.short() in result.output
    assert "x over the default config" in result.output


def test_bench_bad_input_and_failing_config(home):
    bad = runner.invoke(app, ["bench", "-w", GOOD, "--config", "{nope"])
    assert bad.exit_code == EXIT_USAGE and "not JSON" in bad.output
    unbandable = json.dumps(REC.replace(heads_per_band=3).to_dict())  # cannot band NH=2: bad input, as in probe/tune
    refused = runner.invoke(app, ["bench", "-w", GOOD, "--config", unbandable])
    assert refused.exit_code == EXIT_USAGE and "heads_per_band (3) must divide" in refused.output
    broken = json.dumps(REC.replace(compile_mode="reduce-overhead").to_dict())  # CUDA graphs on CPU: fails to run
    failed = runner.invoke(app, ["bench", "-w", GOOD, "--config", broken])
    assert failed.exit_code == EXIT_FAILED and "chosen config" in failed.output and "failed" in failed.output


def test_profile_publish_records_the_version_in_the_db(home):
    wl = xk.Workload.parse(GOOD)
    entry = xk.ProfileEntry(workload=GOOD, config=REC.to_dict(), t_inner_requested=1, t_inner_effective=1,
                            median_s=1e-3, tokens_per_s=wl.tokens() / 1e-3, speedup_vs_default=1.0,
                            equivalence_error=0.0)
    src = home / "tuned.json"
    src.write_text(xk.Profile.for_machine(xk.fingerprint("cpu"), [entry]).to_json())
    assert not (home / "tuning.db").exists()
    outs = [json.loads(runner.invoke(app, ["profile", "publish", str(src)]).output) for _ in range(2)]
    with storage.open_db(home / "tuning.db") as db:  # created by the first publish
        rows = db.profiles()
    assert [(r["version"], r["checksum"], r["path"]) for r in rows] == [
        (o["version"], o["checksum"], o["path"]) for o in reversed(outs)]
    assert [o["version"] for o in outs] == [1, 2]


def test_serve_rejects_cron_and_interval_together(home):
    result = runner.invoke(app, ["serve", "--cron", "0 3 * * *", "--interval", "60"])
    assert result.exit_code == EXIT_USAGE and "not both" in result.output


def test_serve_unreachable_server_exits_3(home, dead_api):
    result = runner.invoke(app, ["serve", "--interval", "60"])
    assert result.exit_code == EXIT_SERVER
    assert dead_api in result.output and "tune --no-server" in result.output


def test_report_writes_html_and_json(home):
    storage = f"sqlite:///{home / 'tuning.optuna.db'}"  # where `tune` writes its studies
    study = optuna.create_study(study_name="w1", storage=storage)
    study.optimize(lambda t: (t.suggest_int("chunk_size", 8, 64) - 40) ** 2 + t.suggest_float("x", 0, 1), n_trials=6)
    out = home / "rep.html"
    result = runner.invoke(app, ["report", "--study", "w1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["path"] == str(out) and data["bytes"] == out.stat().st_size > 1_000_000
    assert f"winner <b><code>chunk_size={study.best_params['chunk_size']}" in out.read_text()
    result = runner.invoke(app, ["report", "--study", "w1"])  # default path under HOME/reports
    assert result.exit_code == 0 and (home / "reports" / "w1.html").exists()


def test_report_unknown_study_lists_known_ones(home):
    storage = f"sqlite:///{home / 'o.db'}"
    optuna.create_study(study_name="known", storage=storage)
    result = runner.invoke(app, ["report", "--study", "nope", "--storage", storage])
    assert result.exit_code == EXIT_FAILED and "known" in result.output
