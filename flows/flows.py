"""The ``autotune`` Prefect flow and the per-machine scheduled deployment.

fingerprint the machine -> open ONE tuning run in the DB (``tuner.tuning_run``) -> [re-validate the
published profile: keep / re-tune / tune per workload] -> one task per workload to tune, one after the
other (never two studies timing on the device at once), each calling ``tune_fn`` (``tuner.tune_workload``)
-> publish the winners with ``publish_fn`` (``tuner.publish_entries``: atomic, versioned, recorded in the
DB) -> HTML report of the run's studies -> a table, a markdown (the report's summary) and a link artifact.
A workload that fails is reported, the others' results are kept and published; the flow then ends Failed
naming the failures.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State

from xlstm_kernels.config import Workload
from flows.settings import FlowSettings

from .outcome import AutotuneResult, WorkloadOutcome, summary_markdown, winners_table
from .tasks import (
    PUBLISH_FN,
    TUNE_FN,
    fingerprint_task,
    publish_profile_task,
    report_task,
    revalidate_task,
    tune_workload_task,
)

__all__ = [
    "AutotuneCrashed",
    "AutotuneResult",
    "WorkloadOutcome",
    "artifact_key",
    "autotune",
    "deployment_name",
    "run_autotune",
    "serve_deployment",
]


class AutotuneCrashed(RuntimeError):
    """Prefect could not run the autotune flow at all (no state to report)."""


def artifact_key(prefix: str, machine_id: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for ``prefix`` on ``machine_id``."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{machine_id}".lower()).strip("-")


def deployment_name(machine_id: str, host: str | None = None) -> str:
    """This machine's deployment name: host name and hardware id, e.g. ``mac-studio-3f2a9c1b7d04``."""
    host = (host or socket.gethostname()).split(".")[0]
    return artifact_key(host, machine_id)


def _failure_message(state: State) -> str:
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # noqa: BLE001 - we report whatever the tuner raised, by type and message
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.type.value


@flow(name="autotune", log_prints=True)
def autotune(
    workloads: list[str] | None = None,
    trials: int | None = None,
    time_budget_s: float | None = None,
    quick: bool = False,
    device: str | None = None,
    revalidate: bool = False,
    show_progress: bool = False,
    tune_fn: str = TUNE_FN,
    publish_fn: str = PUBLISH_FN,
    lock_wait_s: float | None = None,
) -> AutotuneResult | State:
    """Tune each workload on this machine in one tuning run, publish the winners, record artifacts.

    With ``revalidate`` (scheduled runs), a published profile's winners are re-checked first and only
    workloads the re-validation rule (``flows.schedule``) sends to (re-)tuning are tuned.
    ``lock_wait_s``: take the machine lock inside the run, waiting up to that long (scheduled runs,
    so a scheduled and a manual run never time on the device together); ``None`` when the caller
    (``xlstm-autotune tune``) already holds it.
    """
    if lock_wait_s is not None:
        from flows.settings import get_flow_settings

        from .lock import machine_lock

        with machine_lock(get_flow_settings().resolved_home(), "tune", wait_s=lock_wait_s):
            _wait_for_quiet()
            return autotune.fn(workloads, trials, time_budget_s, quick, device, revalidate, show_progress,
                               tune_fn, publish_fn, None)
    from storage import open_db
    from tuner import profile_path_for, tuning_run
    from xlstm_kernels.device import default_device
    from flows.settings import get_flow_settings
    from tuner.settings import reset_tuner_settings

    logger = get_run_logger()
    reset_tuner_settings()  # tuner and flow settings read afresh for every run (a served deployment lives long);
    # the kernel's stay, and with them the runtime's loaded profile and fast-path memo
    settings = get_flow_settings()
    names = [str(Workload.parse(w)) for w in (workloads or settings.workloads)]
    dev = str(device or settings.device or default_device())
    fp = fingerprint_task(dev)
    machine_id = fp["machine_id"]
    profile_path = profile_path_for(machine_id, settings)
    outcomes: list[WorkloadOutcome] = []
    failed: dict[str, str] = {}
    decisions: list[dict[str, str]] = []
    published = report_path = report_summary = None
    with open_db(settings.resolved_db_path()) as db, tuning_run(db, dev, quick, settings) as (run_id, _):
        to_tune = names
        if revalidate:
            rv = revalidate_task(names, fp, dev, str(profile_path))
            decisions = rv.decision_rows()
            reasons = {d.workload: d.reason for d in rv.decisions}
            outcomes += [WorkloadOutcome.from_entry(e, action="kept", reason=reasons[w]) for w, e in rv.kept.items()]
            to_tune = rv.to_tune()
        for name in to_tune:  # sequential on purpose: one study times on the device at a time
            state = tune_workload_task.with_options(task_run_name=f"tune {name}")(
                name, db=db, run_id=run_id, device=dev, trials=trials, time_budget_s=time_budget_s,
                quick=quick, show_progress=show_progress, tune_fn=tune_fn, return_state=True,
            )
            if state.is_completed():
                outcomes.append(state.result())
            else:
                failed[name] = _failure_message(state)
                logger.error("workload %s failed: %s", name, failed[name])
        tuned = [o for o in outcomes if o.action == "tuned"]
        if tuned:
            pstate = publish_profile_task(fp, outcomes, run_id=run_id, db=db, publish_fn=publish_fn,
                                          return_state=True)
            if pstate.is_completed():
                published = pstate.result()
            else:
                failed["publish"] = _failure_message(pstate)
            studies = [o.study_name for o in tuned if o.study_name]
            if studies:
                rstate = report_task(run_id, studies, db, dict(failed),
                                     str(published.path) if published is not None else None, return_state=True)
                if rstate.is_completed():
                    report_path, report_summary = str(rstate.result().path), rstate.result().summary
                else:
                    failed["report"] = _failure_message(rstate)
    if published is not None:
        path, version, checksum = str(published.path), published.version, published.checksum
    else:  # nothing re-tuned: the published profile stands unchanged
        path = str(profile_path) if outcomes and not tuned else None
        version = checksum = None
    result = AutotuneResult(machine_id, outcomes, failed, path, run_id=run_id, profile_version=version,
                            profile_checksum=checksum, report_path=report_path, decisions=decisions)
    if outcomes:
        create_table_artifact(
            table=winners_table(outcomes),
            key=artifact_key("autotune-winners", machine_id),
            description="Winner per workload: config, median time, speedup over the default, equivalence error.",
        )
    create_markdown_artifact(
        markdown=(report_summary + "\n" if report_summary else "") + summary_markdown(result),
        key=artifact_key("autotune-summary", machine_id),
        description="Autotune run summary (the report's, with a link to it) and rejected candidates with reasons.",
    )
    if report_path:
        create_link_artifact(
            link=Path(report_path).resolve().as_uri(),
            link_text=f"report of tuning run {run_id}",
            key=artifact_key("autotune-report", machine_id),
            description=f"The run's HTML report (plots, offline): {report_path}",
        )
    n_kept = sum(o.action == "kept" for o in outcomes)
    done = f"{len(outcomes) - n_kept} tuned" + (f", {n_kept} kept" if n_kept else "")
    if failed:
        return Failed(message=f"{len(failed)} failed ({', '.join(failed)}); {done}", data=result)
    return Completed(message=f"{len(outcomes)} workload(s): {done}", data=result)


def serve_deployment(
    flow_obj: Any,
    name: str,
    cron: str | None = None,
    interval: float | None = None,
    parameters: dict[str, Any] | None = None,
) -> str:
    """Register ``flow_obj`` as deployment ``name`` on the current Prefect API and run it on schedule.

    Blocks until Ctrl-C or SIGTERM, then cancels a run in progress, pauses the schedule and returns the
    deployment id. At most one run executes at a time (a later one waits), so scheduled studies never
    time on the device together. (``Flow.serve`` builds the same Runner, but on Ctrl-C it keeps starting
    due runs while it shuts down; here Ctrl-C stops it the way SIGTERM does.)
    """
    import asyncio
    import signal
    import threading

    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner

    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of cron or interval")
    runner = Runner(name=name, pause_on_shutdown=True, limit=1)
    deployment_id = runner.add_flow(
        flow_obj,
        name=name,
        cron=cron,
        interval=interval,
        parameters=parameters or {},
        tags=["xlstm-autotune"],
        description="Scheduled xlstm-autotune run on this machine.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )

    def _stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        get_run_logger_safe().info("stopping: cancelling runs in progress and pausing the schedule")
        if runner.started and not runner.stopping:
            runner.stopping = True
            runner.execute_in_background(runner.astop)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _stop)
    try:
        asyncio.run(runner.start())
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return str(deployment_id)


def get_run_logger_safe() -> Any:
    """Prefect's logger for this module (usable outside a flow run)."""
    from prefect.logging import get_logger

    return get_logger("xlstm_autotune.flows")


def _wait_for_quiet() -> None:
    """A scheduled run waits (bounded) for a quiet machine before timing, and logs what it found."""
    from tuner import wait_for_quiet
    from flows.settings import get_flow_settings

    logger = get_run_logger_safe()
    waited = wait_for_quiet(get_flow_settings())
    if waited.quiet:
        logger.info("machine quiet after %.0f s; timing", waited.waited_s)
    else:
        logger.warning("machine still busy after %.0f s (%s); tuning anyway: a run whose speedup "
                       "interval is too wide is marked and does not replace a published winner",
                       waited.waited_s, waited.reason)


def run_autotune(
    workloads: list[str],
    *,
    home: Any,
    trials: int | None = None,
    time_budget_s: float | None = None,
    quick: bool = False,
    device: str | None = None,
    no_server: bool = False,
    wait_s: float = 0.0,
    revalidate: bool = False,
    show_progress: bool = False,
    tune_fn: str = TUNE_FN,
    publish_fn: str = PUBLISH_FN,
    startup_timeout_s: float = 180.0,
) -> tuple[Any, State, AutotuneResult | None]:
    """One ``tune`` run now: check the seams, pick the API, take the machine lock, run the flow.

    Returns (server info, final flow state, result or None when the flow crashed before producing one).
    Raises ``SeamMissing``, ``ServerUnavailable`` or ``TuneLocked`` before any work starts, and
    ``AutotuneCrashed`` when Prefect itself could not run the flow (e.g. its temporary server did not start).
    Bad workloads (``tuner.check_workloads``: parse, heads_per_band rule, memory estimate) and a DB that
    cannot be used (``storage.StorageError``) are refused before the lock is taken or Prefect starts.
    """
    from storage import TuningDB
    from tuner import check_workloads

    from .lock import machine_lock
    from .server import select_api, use_api
    from .tasks import resolve

    settings = FlowSettings()
    names = [str(w) for w in check_workloads(workloads, device or settings.device, settings)]
    TuningDB(settings.resolved_db_path(), busy_timeout_s=settings.db_busy_timeout_s).close()
    resolve(tune_fn)
    resolve(publish_fn)
    info = select_api(no_server=no_server)
    with machine_lock(home, "tune", wait_s=wait_s), use_api(info, startup_timeout_s, home=home,
                                                            log_dir=Path(home) / "logs"):
        try:
            state = autotune(
                workloads=names,
                trials=trials,
                time_budget_s=time_budget_s,
                quick=quick,
                device=device,
                revalidate=revalidate,
                show_progress=show_progress,
                tune_fn=tune_fn,
                publish_fn=publish_fn,
                return_state=True,
            )
        except Exception as exc:  # noqa: BLE001 - errors inside the flow are in its state; these are Prefect's
            raise AutotuneCrashed(f"Prefect could not run the autotune flow: {type(exc).__name__}: {exc}") from exc
    result = state.result(raise_on_failure=False)
    return info, state, result if isinstance(result, AutotuneResult) else None
