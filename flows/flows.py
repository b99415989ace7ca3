"""The ``autotune`` Prefect flow and the per-machine scheduled deployment.

The run itself is the library's ``tuner.autotune`` (fingerprint, one tuning run in the DB, re-validation,
one tuning per workload, publish, report); the flow adds Prefect around it: every step a task run of its
own (``flows.tasks.as_task``: one per workload, logs on Prefect's run logger), a table, a markdown (the
report's summary) and a link artifact, and a final state - Failed naming the failures, while the
others' results are kept and published.
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

import tuner
from tuner import AutotuneResult, WorkloadOutcome, run_summary_markdown, winners_table

from .settings import FlowSettings
from .tasks import as_task

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


@flow(name="autotune", log_prints=True)
def autotune(
    workloads: list[str] | None = None,
    trials: int | None = None,
    time_budget_s: float | None = None,
    quick: bool = False,
    device: str | None = None,
    revalidate: bool = False,
    show_progress: bool = False,
    tune_fn: tuner.TuneFn | None = None,
    publish_fn: tuner.PublishFn | None = None,
    lock_wait_s: float | None = None,
) -> AutotuneResult | State:
    """Tune each workload on this machine in one tuning run (``tuner.autotune``), record artifacts.

    With ``revalidate`` (scheduled runs), a published profile's winners are re-checked first and only
    workloads the re-validation rule sends to (re-)tuning are tuned. ``lock_wait_s``: take the machine
    lock inside the run, waiting up to that long (scheduled runs, so a scheduled and a manual run never
    time on the device together); ``None`` when the caller (``xlstm-autotune tune``) already holds it.
    ``tune_fn`` / ``publish_fn``: a ``tuner.TuneFn`` / ``tuner.PublishFn`` for in-process callers (tests);
    None (a deployment's JSON parameters) is the real ``tuner.tune_workload`` / ``tuner.publish_entries``.
    """
    from tuner.settings import reset_tuner_settings

    from .progress import terminal_progress

    reset_tuner_settings()  # tuner and flow settings read afresh for every run (a served deployment lives long);
    # the kernel's stay, and with them the runtime's loaded profile and fast-path memo
    with terminal_progress(show_progress) as progress:
        result = tuner.autotune(workloads, device=device, revalidate=revalidate, quick=quick, trials=trials,
                                time_budget_s=time_budget_s, progress=progress,
                                tune_fn=tune_fn or tuner.tune_workload, publish_fn=publish_fn or tuner.publish_entries,
                                lock_wait_s=lock_wait_s, step=as_task, log=get_run_logger())
    _artifacts(result)
    if result.failed:
        return Failed(message=result.status_message(), data=result)
    return Completed(message=result.status_message(), data=result)


def _artifacts(result: AutotuneResult) -> None:
    """The run's Prefect artifacts: winners table, summary markdown, link to the HTML report."""
    machine_id = result.machine_id
    if result.outcomes:
        create_table_artifact(
            table=winners_table(result.outcomes),
            key=artifact_key("autotune-winners", machine_id),
            description="Winner per workload: config, median time, speedup over the default, equivalence error.",
        )
    create_markdown_artifact(
        markdown=(result.report_summary + "\n" if result.report_summary else "") + run_summary_markdown(result),
        key=artifact_key("autotune-summary", machine_id),
        description="Autotune run summary (the report's, with a link to it) and rejected candidates with reasons.",
    )
    if result.report_path:
        create_link_artifact(
            link=Path(result.report_path).resolve().as_uri(),
            link_text=f"report of tuning run {result.run_id}",
            key=artifact_key("autotune-report", machine_id),
            description=f"The run's HTML report (plots, offline): {result.report_path}",
        )


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
    tune_fn: tuner.TuneFn | None = None,
    publish_fn: tuner.PublishFn | None = None,
    startup_timeout_s: float = 180.0,
) -> tuple[Any, State, AutotuneResult | None]:
    """One ``tune`` run now: check the input, pick the API, take the machine lock, run the flow.

    Returns (server info, final flow state, result or None when the flow crashed before producing one).
    Raises ``ServerUnavailable`` or ``TuneLocked`` before any work starts, and
    ``AutotuneCrashed`` when Prefect itself could not run the flow (e.g. its temporary server did not start).
    Bad workloads (``tuner.check_workloads``: parse, heads_per_band rule, memory estimate) and a DB that
    cannot be used (``storage.StorageError``) are refused before the lock is taken or Prefect starts.
    """
    from storage import TuningDB
    from tuner import check_workloads, machine_lock

    from .server import select_api, use_api

    settings = FlowSettings()
    names = [str(w) for w in check_workloads(workloads, device or settings.device, settings)]
    TuningDB(settings.resolved_db_path(), busy_timeout_s=settings.db_busy_timeout_s).close()
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
