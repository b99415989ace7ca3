"""Flows: machine lock, server selection, re-validation rule, artifacts content, HTML report, the
autotune flow under Prefect's test harness (``serve`` against a real local Prefect server: test_serve.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flow_helpers import GOOD, UNBANDABLE  # the real tuner on a two-candidate space
from flows.server import (
    ServerInfo,
    ServerUnavailable,
    attach_local_server,
    free_port,
    scheduling_server,
    select_api,
    state_path,
)
from tuner import AutotuneResult, PublishedEntry, Remeasurement, TuneLocked, WorkloadOutcome, decide
from tuner import lock_path, machine_lock, needs_remeasure, read_holder, winners_table
from tuner import run_summary_markdown as summary_markdown

REPO = Path(__file__).resolve().parent.parent
FAILING = UNBANDABLE


def _holder_script(home: Path, seconds: float) -> str:
    return textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tuner import machine_lock
        with machine_lock({str(home)!r}):
            print("locked", flush=True)
            time.sleep({seconds})
        """
    )


def _start_holder(home: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _holder_script(home, seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# --- lock -------------------------------------------------------------------------------------------


def test_lock_second_run_refused_naming_holder(tmp_path):
    with machine_lock(tmp_path) as me:
        assert read_holder(lock_path(tmp_path)) == me
        with pytest.raises(TuneLocked) as err:
            with machine_lock(tmp_path):
                pass
    assert err.value.holder.pid == os.getpid()
    assert f"pid {os.getpid()}" in str(err.value) and "--wait" in str(err.value)
    with machine_lock(tmp_path):  # released on exit
        pass


def test_lock_held_by_other_process_then_stale_after_kill(tmp_path):
    proc = _start_holder(tmp_path, 60)
    try:
        t0 = time.monotonic()
        with pytest.raises(TuneLocked) as err:
            with machine_lock(tmp_path, wait_s=0.5):
                pass
        assert time.monotonic() - t0 >= 0.5
        assert err.value.holder.pid == proc.pid and f"pid {proc.pid}" in str(err.value)
    finally:
        proc.kill()
        proc.wait()
    assert read_holder(lock_path(tmp_path)).pid == proc.pid  # the file still names the dead holder ...
    with machine_lock(tmp_path) as me:  # ... but the lock is free
        assert me.pid == os.getpid()


def test_lock_waits_for_holder(tmp_path):
    proc = _start_holder(tmp_path, 1.5)
    t0 = time.monotonic()
    with machine_lock(tmp_path, wait_s=60):
        waited = time.monotonic() - t0
    proc.wait()
    assert 0.3 < waited < 30


def test_lock_rejects_negative_wait(tmp_path):
    with pytest.raises(ValueError, match="wait_s"):
        with machine_lock(tmp_path, wait_s=-1):
            pass


# --- server selection -------------------------------------------------------------------------------


def test_select_api_unreachable_url_says_how_to_run_locally():
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(ServerUnavailable) as err:
        select_api(api_url=url, timeout_s=1)
    assert url in str(err.value) and "--no-server" in str(err.value)
    assert select_api(no_server=True, api_url=url).kind == "ephemeral"
    assert select_api(api_url="").kind == "ephemeral"


def test_scheduling_server_unreachable_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(ServerUnavailable, match="tune --no-server"):
        with scheduling_server(tmp_path, api_url=url):
            pass


def test_attach_ignores_stale_or_damaged_state(tmp_path):
    assert attach_local_server(tmp_path) is None
    state_path(tmp_path).write_text("{not json")
    assert attach_local_server(tmp_path) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    port = free_port()
    state_path(tmp_path).write_text(json.dumps({"pid": dead.pid, "port": port, "api_url": f"http://127.0.0.1:{port}/api"}))
    assert attach_local_server(tmp_path) is None


def test_server_info_describe():
    assert "started a local" in ServerInfo("http://x/api", "started", 1, 2, "/l").describe()
    assert "attached" in ServerInfo("http://x/api", "attached", 1, 2).describe()
    assert "temporary" in ServerInfo("", "ephemeral").describe()


def test_use_api_points_prefect_and_child_processes(monkeypatch):
    from prefect.settings import get_current_settings

    from flows.server import use_api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with use_api(ServerInfo("", "ephemeral"), startup_timeout_s=240):
        assert "PREFECT_API_URL" not in os.environ and get_current_settings().api.url is None
        assert get_current_settings().server.ephemeral.startup_timeout_seconds >= 240
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
    with use_api(ServerInfo("http://127.0.0.1:8/api", "remote")):
        assert os.environ["PREFECT_API_URL"] == get_current_settings().api.url == "http://127.0.0.1:8/api"
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"


def test_temporary_server_sends_no_telemetry_and_logs_its_startup_to_a_file(tmp_path):
    """Offline machines printed a telemetry error on every `tune`; the server's start-up lines belong in HOME/logs."""
    import logging

    from prefect.settings import get_current_settings

    from flows.server import use_api

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep, prefect_logger = Keep(), logging.getLogger("prefect")
    prefect_logger.addHandler(keep)
    try:
        with use_api(ServerInfo("", "ephemeral"), log_dir=tmp_path / "logs"):
            settings = get_current_settings()  # what Prefect hands the server's subprocess, too
            assert settings.server.analytics_enabled is False
            assert settings.to_environment_variables(exclude_unset=True)["PREFECT_SERVER_ANALYTICS_ENABLED"] == "False"
            for path, msg in (("/x/prefect/server/api/server.py", "Starting temporary server on http://x"),
                              ("/x/prefect/flow_engine.py", "a run line")):
                prefect_logger.handle(logging.LogRecord("prefect", logging.INFO, path, 1, msg, None, None))
    finally:
        prefect_logger.removeHandler(keep)
    assert keep.messages == ["a run line"]  # the terminal's handlers see only the other line
    assert "Starting temporary server" in (tmp_path / "logs" / "prefect-server.log").read_text()


def test_deployment_and_artifact_names():
    from flows.flows import artifact_key, deployment_name

    assert deployment_name("3f2a9c1b7d04", host="Mac-Studio.local") == "mac-studio-3f2a9c1b7d04"
    assert artifact_key("autotune-winners", "AB_12") == "autotune-winners-ab-12"


# --- re-validation rule -----------------------------------------------------------------------------

SW = {"torch": "2.13.0", "triton": None, "python": "3.11.9"}
CFG = {"family": "chunkwise", "chunk_size": 64}


def _pub(w, ms=10.0, sw=SW):
    return PublishedEntry(w, CFG, ms, dict(sw))


def test_revalidation_rule_each_branch():
    published = {w: _pub(w) for w in ("keep", "slow", "sw", "equiv", "gone", "faster")}
    published["sw"] = _pub("sw", sw=SW | {"torch": "2.12.0"})
    fresh = {
        "keep": Remeasurement("keep", 11.4, True),  # +14% <= 15%
        "slow": Remeasurement("slow", 11.6, True),  # +16% > 15%
        "equiv": Remeasurement("equiv", 9.0, False, "max err 3e-2"),
        "gone": Remeasurement("gone", None, False, "compile failed"),
        "faster": Remeasurement("faster", 5.0, True),
    }
    order = ["keep", "slow", "sw", "equiv", "gone", "faster", "new"]
    got = {d.workload: d for d in decide(order, published, fresh, SW, slowdown=0.15)}
    assert [d.workload for d in decide(order, published, fresh, SW)] == order
    assert {w: d.action for w, d in got.items()} == {
        "keep": "keep", "slow": "retune", "sw": "retune", "equiv": "retune",
        "gone": "retune", "faster": "keep", "new": "tune",
    }  # fmt: skip
    assert "16%" in got["slow"].reason and "15%" in got["slow"].reason
    assert "torch 2.12.0 -> 2.13.0" in got["sw"].reason
    assert "equivalence" in got["equiv"].reason and "compile failed" in got["gone"].reason
    assert needs_remeasure(order, published, SW) == ["keep", "slow", "equiv", "gone", "faster"]
    # the threshold is a parameter: at 20% the 16% slowdown is kept
    assert decide(["slow"], published, fresh, SW, slowdown=0.2)[0].action == "keep"
    with pytest.raises(ValueError):
        decide(["slow"], published, fresh, SW, slowdown=0)


# --- outcome, artifact content ----------------------------------------------------------------------


def test_outcome_coerce_and_artifact_content():
    import xlstm_kernels as xk

    cfg = xk.KernelConfig("recurrent", chunk_size=8, t_inner=4)
    bad = xk.KernelConfig("chunkwise", chunk_size=16, t_inner=2)
    o = WorkloadOutcome.coerce(
        {"winner": cfg, "median_ms": 1.5, "speedup": 2.0, "equiv_err": 3e-6, "rejected": [(bad, "equiv 2e-2 > 1e-4")]},
        workload=GOOD,
    )
    assert o.config == cfg.to_dict() and o.rejected == [(bad.to_dict(), "equiv 2e-2 > 1e-4")]
    with pytest.raises(TypeError, match="median_ms"):
        WorkloadOutcome.coerce({"config": cfg, "speedup": 1.0, "equiv_err": 0.0}, workload=GOOD)
    with pytest.raises(ValueError, match="median_ms"):
        WorkloadOutcome(GOOD, cfg.to_dict(), float("nan"), 1.0, 0.0)
    rows = winners_table([o])
    assert rows == [
        {"workload": GOOD, "action": "tuned", "config": cfg.short(), "median_ms": 1.5, "speedup_vs_default": 2.0,
         "equiv_err": "3.00e-06"}
    ]
    md = summary_markdown(AutotuneResult("abc123", [o], {FAILING: "RuntimeError: boom"}, "/p/abc123.json"))
    assert "1 workload(s) tuned, 1 failed" in md and "`/p/abc123.json`" in md
    assert f"`{FAILING}`: RuntimeError: boom" in md
    assert f"| {GOOD} | {bad.short()} | equiv 2e-2 > 1e-4 |" in md
    assert f"| {GOOD} | tuned | {cfg.short()} | 1.5 | 2.0x | 3.00e-06 |" in md
    assert "None." in summary_markdown(AutotuneResult("m", [], {}, None))


# --- the autotune flow under Prefect's test harness, with the real tuner ----------------------------


def _artifacts(key: str, flow_run_id):
    """The artifacts with ``key`` that one flow run created (other tests' runs share the harness)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))



def test_autotune_flow_real_tuner_end_to_end_then_revalidates(prefect_harness, tuner_home, monkeypatch):
    import storage
    import xlstm_kernels as xk
    from flows.flows import artifact_key, autotune
    
    state = autotune(workloads=[GOOD, UNBANDABLE], quick=True, return_state=True)
    assert state.is_failed() and UNBANDABLE in state.message and "1 tuned" in state.message
    result = state.result(raise_on_failure=False)
    assert isinstance(result, AutotuneResult)
    assert "UnbandableWorkload" in result.failed[UNBANDABLE] and list(result.failed) == [UNBANDABLE]
    [won] = result.outcomes
    assert won.workload == GOOD and won.action == "tuned" and won.speedup > 0

    # profile: published atomically at this machine's path, loadable, one entry per winner
    profile = xk.load_profile(result.profile_path)
    assert Path(result.profile_path) == tuner_home / "profiles" / f"{result.machine_id}.json"
    assert profile.publication.version == result.profile_version == 1
    assert profile.publication.checksum == result.profile_checksum
    assert profile.tuning_run.run_id == str(result.run_id) and profile.machine_id == result.machine_id
    assert profile.tuning_run.started_at is not None and profile.tuning_run.source == "tuner"
    [entry] = profile.entries
    assert entry.workload == GOOD and entry.config == won.config
    assert entry.t_inner_effective == won.config["t_inner"] <= entry.t_inner_requested
    assert entry.median_s == pytest.approx(won.median_ms / 1e3) and entry.tokens_per_s > 0

    # DB: one run (completed), its trials (both candidates), the result, the recorded profile
    with storage.open_db(tuner_home / "tuning.db") as db:
        [run] = db.runs()
        assert run["id"] == result.run_id and run["status"] == "completed"
        trials = db.trials(run_id=result.run_id)
        assert len(trials) == 2 and {t["status"] for t in trials} == {"ok"}
        assert db.best(xk.Workload.parse(GOOD), result.machine_id).median_ms > 0
        [prow] = db.profiles(result.machine_id)
        assert (prow["version"], prow["checksum"], prow["run_id"]) == (1, result.profile_checksum, result.run_id)

    # artifacts and the HTML report of the run's study
    flow_run_id = state.state_details.flow_run_id
    table = _artifacts(artifact_key("autotune-winners", result.machine_id), flow_run_id)
    summary = _artifacts(artifact_key("autotune-summary", result.machine_id), flow_run_id)
    assert table[0].type == "table" and GOOD in str(table[0].data)
    assert summary[0].type == "markdown" and "## Failed workloads" in summary[0].data
    assert "UnbandableWorkload" in summary[0].data and "version 1" in summary[0].data
    report = Path(result.report_path)
    assert report == tuner_home / "reports" / f"run-{result.run_id}.html"
    assert won.study_name in report.read_text() and "winner <b><code>" in report.read_text()
    assert f"Profile v1 <code>{result.profile_path}</code> now says: <code>{GOOD}</code>" in report.read_text()
    import optuna  # the study reads well in optuna-dashboard: its workload, each trial's label and T_inner
    st = optuna.load_study(study_name=won.study_name, storage=f"sqlite:///{tuner_home / 'tuning.optuna.db'}")
    assert st.user_attrs["workload"] == GOOD
    assert all({"label", "t_inner_effective", "is_default"} <= set(t.user_attrs) for t in st.trials)
    [link] = _artifacts(artifact_key("autotune-report", result.machine_id), flow_run_id)
    assert link.data == f"[report of tuning run {result.run_id}]({report.resolve().as_uri()})"  # Prefect's link form
    assert f"## xlstm-autotune run {result.run_id}" in summary[0].data and report.resolve().as_uri() in summary[0].data

    # a scheduled run re-validates: the published winner re-checks and re-times -> kept, nothing re-tuned
    monkeypatch.setenv("XLSTM_AUTOTUNE_RETUNE_SLOWDOWN", "1000")  # timing noise can't re-tune it here
    state = autotune(workloads=[GOOD], quick=True, revalidate=True, return_state=True)
    assert state.is_completed(), state.message
    kept = state.result()
    assert [d["action"] for d in kept.decisions] == ["keep"] and "re-validated" in kept.decisions[0]["reason"]
    assert [o.action for o in kept.outcomes] == ["kept"] and kept.outcomes[0].config == won.config
    assert kept.profile_version is None and kept.report_path is None
    assert xk.load_profile(result.profile_path).publication.version == 1  # not re-published

    # ... and a winner that re-times far slower than published is re-tuned and re-published
    slow = profile.entries[0].model_copy(update={"median_s": 1e-9, "tokens_per_s": 1e12,  # and its speedup:
                                                 "speedup_vs_default": 1e6})  # the paired-rounds rule reads it
    xk.publish_profile(profile.model_copy(update={"entries": [slow], "publication": None}), result.profile_path)
    for knob in ("TUNE_UNSTABLE_SPREAD", "TUNE_UNSTABLE_TAIL", "TUNE_SPEEDUP_MAX_WIDTH", "BUSY_LOAD_PER_CORE"):
        monkeypatch.setenv(f"XLSTM_AUTOTUNE_{knob}", "1e9")  # a busy CI box must not keep the old entry
    state = autotune(workloads=[GOOD], quick=True, revalidate=True, return_state=True)
    assert state.is_completed(), state.message
    redo = state.result()
    assert [d["action"] for d in redo.decisions] == ["retune"] and "slowed" in redo.decisions[0]["reason"]
    assert [o.action for o in redo.outcomes] == ["tuned"] and redo.profile_version == 3
    assert redo.outcomes[0].busy_reason is None, redo.outcomes[0].busy_reason
    assert xk.load_profile(result.profile_path).entries[0].median_s > 1e-6
    with storage.open_db(tuner_home / "tuning.db") as db:
        assert [r["status"] for r in db.runs()] == ["completed"] * 3


def test_autotune_flow_fails_cleanly_when_publish_fails(prefect_harness, tuner_home):
    import functools

    import tuner
    from flows.flows import autotune

    unwritable = functools.partial(tuner.publish_entries, path=tuner_home)  # a directory: the profile cannot be written
    state = autotune(workloads=[GOOD], quick=True, publish_fn=unwritable, return_state=True)
    assert state.is_failed() and "publish" in state.message
    result = state.result(raise_on_failure=False)
    assert [o.workload for o in result.outcomes] == [GOOD] and result.profile_path is None
    assert "ProfileWriteError" in result.failed["publish"] and str(tuner_home) in result.failed["publish"]


def test_autotune_library_runs_each_step_without_prefect(tuner_home):
    """``tuner.autotune`` is the whole run: every step through the ``step`` seam, the tuned entry published as is."""
    import storage
    import tuner
    import xlstm_kernels as xk

    steps: list[tuple[str, str]] = []

    def record(step, label, fn):
        steps.append((step, label))
        return fn()

    result = tuner.autotune([GOOD, FAILING], quick=True, report=False, step=record)
    assert steps == [("fingerprint", "fingerprint"), ("tune-workload", f"tune {GOOD}"),
                     ("tune-workload", f"tune {FAILING}"), ("publish-profile", "publish-profile")]
    assert list(result.failed) == [FAILING] and "UnbandableWorkload" in result.failed[FAILING]
    assert result.status_message() == f"1 failed ({FAILING}); 1 tuned" and result.report_path is None
    [won] = result.outcomes
    [entry] = xk.load_profile(result.profile_path).entries
    assert entry == won.entry and entry.median_s == won.median_ms / 1e3  # converted once, published as is
    with storage.open_db(tuner_home / "tuning.db") as db:
        assert [(r["id"], r["status"]) for r in db.runs()] == [(result.run_id, "completed")]


def test_scheduled_run_takes_the_machine_lock(prefect_harness, tuner_home):
    """A scheduled run (lock_wait_s set) refuses while a manual tune holds the machine."""
    from flows.flows import autotune

    with machine_lock(tuner_home, "tune"):
        state = autotune(workloads=[GOOD], quick=True, lock_wait_s=0.0, return_state=True)
    assert state.is_failed() and "holds this machine" in state.message
    state = autotune(workloads=[GOOD], quick=True, lock_wait_s=0.0, return_state=True)  # lock free now
    assert state.is_completed(), state.message
    assert [o.workload for o in state.result().outcomes] == [GOOD]
    assert read_holder(lock_path(tuner_home, "tune")) is None  # released after the run


# --- re-validation wiring with the real Evaluator (no Prefect) ----------------------------------------


def _published(tmp_path: Path, name: str, entries, **fp_changes):
    import xlstm_kernels as xk

    fp = xk.fingerprint("cpu")
    if fp_changes:
        fields = {k: v for k, v in fp.to_dict().items() if k != "machine_id"}
        fp = xk.Fingerprint(**{**fields, **fp_changes})
    path = tmp_path / f"{name}.json"
    xk.publish_profile(xk.Profile.for_machine(fp, entries), path)
    return path


def test_revalidate_decisions_with_the_real_evaluator(tmp_path):
    import xlstm_kernels as xk
    from tuner import revalidate
    from tuner.settings import TunerSettings

    fp = xk.fingerprint("cpu")
    settings = TunerSettings(tune_repeats=3, tune_warmup=1)
    wl = xk.Workload.parse(GOOD)
    cfg = xk.KernelConfig("recurrent", chunk_size=16, heads_per_band=2, t_inner=1)  # in the narrowed space

    def entry(median_s: float, config=cfg):
        return xk.ProfileEntry(workload=GOOD, config=config.to_dict(), t_inner_requested=1, t_inner_effective=1,
                               median_s=median_s, tokens_per_s=wl.tokens() / median_s, speedup_vs_default=1.0,
                               equivalence_error=1e-7)

    def run(path, s=settings, workloads=(GOOD,)):
        return revalidate(list(workloads), fingerprint=fp, device="cpu", profile_path=path, settings=s)

    keep = run(_published(tmp_path, "keep", [entry(10.0)]))  # published 10 s: any re-time is faster
    assert [d.action for d in keep.decisions] == ["keep"] and keep.to_tune() == []
    assert keep.fresh[GOOD].checked and keep.fresh[GOOD].median_ms < 10_000 and GOOD in keep.kept

    slow = run(_published(tmp_path, "slow", [entry(1e-9)]))
    assert slow.to_tune() == [GOOD] and "slowed" in slow.decisions[0].reason

    strict = TunerSettings(tune_repeats=3, tune_warmup=1, tol_fp32=1e-30)  # nothing passes this gate
    equiv = run(_published(tmp_path, "equiv", [entry(10.0)]), s=strict)
    assert equiv.to_tune() == [GOOD] and "equivalence" in equiv.decisions[0].reason
    assert equiv.fresh[GOOD].median_ms is None  # an invalid winner is never timed

    broken = cfg.replace(heads_per_band=3)  # 3 heads per band cannot run NH=2
    gone = run(_published(tmp_path, "gone", [entry(1.0, broken)]))
    assert gone.to_tune() == [GOOD] and "could not be re-timed" in gone.decisions[0].reason

    stale = run(_published(tmp_path, "stale", [entry(10.0)], torch="0.0.1"))
    assert stale.to_tune() == [GOOD] and "software changed: torch 0.0.1" in stale.decisions[0].reason
    assert stale.fresh == {}  # a software change re-tunes without re-timing the old winner

    new = run(tmp_path / "none.json", workloads=(GOOD, "1,2,1,8,8,float32,decode"))
    assert [d.action for d in new.decisions] == ["tune", "tune"] and "no usable published profile" in new.note


# --- the glue: winner -> profile entry -> published and recorded ---------------------------------------


def test_publish_entries_records_and_keeps_other_workloads(tmp_path):
    import storage
    import xlstm_kernels as xk
    from tuner import build_profile, publish_entries

    fp = xk.fingerprint("cpu")
    wl = xk.Workload.parse(GOOD)

    def entry(workload, median_s):
        return xk.ProfileEntry(workload=workload, config=xk.DEFAULT_CONFIG.replace(t_inner=1).to_dict(),
                               t_inner_requested=4, t_inner_effective=1, median_s=median_s,
                               tokens_per_s=wl.tokens() / median_s, speedup_vs_default=1.0, equivalence_error=0.0)

    path, db_path = tmp_path / "p.json", tmp_path / "t.db"
    first = publish_entries(fp, [entry(GOOD, 1e-3), entry("2,2,16,8,8,float32", 2e-3)], db=db_path, path=path)
    second = publish_entries(fp, [entry(GOOD, 5e-4)], db=db_path, path=path)
    assert (first.version, second.version) == (1, 2)
    got = {e.workload: e.median_s for e in xk.load_profile(path).entries}
    assert got == {GOOD: 5e-4, "2,2,16,8,8,float32,prefill": 2e-3}  # the other workload carried over
    with storage.open_db(db_path) as db:
        assert [(r["version"], r["checksum"]) for r in db.profiles(fp.machine_id)] == [
            (2, second.checksum), (1, first.checksum)]
    other_sw = xk.Profile.for_machine(fp, [entry("2,2,16,8,8,float32", 2e-3)]).model_copy(update={"torch": "0.0.1"})
    assert [e.workload for e in build_profile(fp, [entry(GOOD, 1e-3)], previous=other_sw).entries] == [GOOD]


def test_local_server_that_cannot_start_is_reported_and_reaped(tmp_path):
    from flows.server import ServerStartError, start_local_server

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = "not-a-database-url://"  # the server exits at startup
    with pytest.raises(ServerStartError, match="exited with code .*prefect-server.log"):
        start_local_server(tmp_path, startup_timeout_s=120, env=env)
    assert not state_path(tmp_path).exists()
    assert (tmp_path / "logs" / "prefect-server.log").read_text().strip()


def test_terminal_progress_renders_tuner_events(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich squeezes the bar's columns away at 80
    from flows.progress import terminal_progress
    from tuner import ProgressEvent

    with terminal_progress(False) as none:
        assert none is None
    with terminal_progress(True) as progress:
        progress(ProgressEvent(GOOD, "trial", 1, 2, "ok", "recurrent L16 hpb2 T1", 0.25, 0.25, "recurrent L16 hpb2 T1", 1.0))
    err = capsys.readouterr().err
    assert "1,2,16,8,8" in err and "1/2" in err and "best 0.250 ms" in err
