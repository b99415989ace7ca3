"""One tuning run end to end, without Prefect: the library function behind ``xlstm-autotune tune``.

    outcome = autotune(["1,4,512,64,64,float32"], quick=True)      # -> AutotuneResult

[machine lock, quiet wait (``lock_wait_s``)] -> fingerprint -> open ONE run row (``tuning_run``) ->
[re-validate the published profile: keep / re-tune / tune per workload] -> tune each workload with
``tune_fn`` (one after the other: never two studies timing on the device at once) -> publish the
winners' profile entries with ``publish_fn`` -> the run's HTML report -> ``AutotuneResult``.
A workload that fails is recorded in ``failed`` (by type and message) and the others go on; a failed
publish or report is recorded as ``failed["publish"]`` / ``failed["report"]``.

Each step runs through ``step`` (a ``StepRunner``; default: call it): the ``autotune`` Prefect flow
passes one that runs every step as a task run of its own (logs, retries, per-workload task runs).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from storage import TuningDB, using_db
from xlstm_kernels.kernels.config import Workload
from xlstm_kernels.device import default_device
from xlstm_kernels.profiles.fingerprint import Fingerprint, fingerprint
from xlstm_kernels.profiles.profile import ProfileEntry, PublishResult, default_profile_path

from ._lock import machine_lock
from ._outcome import AutotuneResult, WorkloadOutcome
from ._progress import Progress
from ._publish import publish_entries
from ._report import write_run_report
from ._report_data import ReportFile
from ._revalidate import Revalidation, revalidate as revalidate_profile
from ._space import parse_workload
from ._study import WorkloadResult, tune_workload, tuning_run
from ._timing import wait_for_quiet
from .settings import TunerSettings, resolve_tuner_settings

T = TypeVar("T")

TuneFn = Callable[..., WorkloadResult]
"""Tunes one workload (``tuner.tune_workload``): called as ``tune_fn(workload: str, *, db: TuningDB,
device: str, n_trials: int | None, time_budget_s: float | None, progress: Progress | None, quick: bool,
run_id: int)``."""

PublishFn = Callable[..., PublishResult]
"""Publishes a run's winners (``tuner.publish_entries``): called as ``publish_fn(fingerprint: Fingerprint,
entries: list[ProfileEntry], *, run_id: int, db: TuningDB)``."""


class StepRunner(Protocol):
    """Runs one step of a tuning run: ``step`` is its kind (``tune-workload``), ``label`` this run of it."""

    def __call__(self, step: str, label: str, fn: Callable[[], T], /) -> T: ...


def call_step(step: str, label: str, fn: Callable[[], T], /) -> T:
    """The plain ``StepRunner``: call the step."""
    return fn()


def failure(exc: BaseException) -> str:
    """How a failed step is recorded in a run's ``failed``: the exception's type and message."""
    return f"{type(exc).__name__}: {exc}"


def autotune(
    workloads: Sequence[Workload | str] | None = None,
    *,
    db: TuningDB | str | Path | None = None,
    device: str | None = None,
    revalidate: bool = False,
    quick: bool = False,
    trials: int | None = None,
    time_budget_s: float | None = None,
    progress: Progress | None = None,
    tune_fn: TuneFn = tune_workload,
    publish_fn: PublishFn = publish_entries,
    report: bool = True,
    lock_wait_s: float | None = None,
    step: StepRunner = call_step,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    settings: TunerSettings | None = None,
) -> AutotuneResult:
    """Tune ``workloads`` (default: settings' workloads) on this machine in one run; publish and report.

    ``db``: an open ``TuningDB`` (kept open), a path, or None for the settings' DB. ``revalidate``:
    re-check the published winners first and tune only what the re-validation rule
    (``tuner._schedule.decide``) sends to (re-)tuning. ``lock_wait_s``: take the machine lock, waiting
    up to that long, then wait (bounded) for a quiet machine (scheduled runs); None when the caller
    holds the lock. ``report``: write the run's HTML report. Bad workloads raise ``UnknownWorkload``
    before anything is written; a held lock raises ``TuneLocked``.
    """
    settings = resolve_tuner_settings(settings)
    log = log or logging.getLogger("tuner.run")
    names = [str(parse_workload(w)) for w in (workloads or settings.workloads)]
    held = contextlib.nullcontext() if lock_wait_s is None else \
        machine_lock(settings.resolved_home(), "tune", wait_s=lock_wait_s)
    with held:
        if lock_wait_s is not None:  # a scheduled run: wait (bounded) for a quiet machine before timing
            waited = wait_for_quiet(settings)
            if waited.quiet:
                log.info("machine quiet after %.0f s; timing", waited.waited_s)
            else:
                log.warning("machine still busy after %.0f s (%s); tuning anyway: a run whose speedup interval "
                            "is too wide is marked and does not replace a published winner",
                            waited.waited_s, waited.reason)
        return _run(names, db, device, revalidate, quick, trials, time_budget_s, progress, tune_fn, publish_fn,
                    report, step, log, settings)


def _run(names: list[str], db: TuningDB | str | Path | None, device: str | None, revalidate: bool, quick: bool,
         trials: int | None, time_budget_s: float | None, progress: Progress | None, tune_fn: TuneFn,
         publish_fn: PublishFn, report: bool, step: StepRunner, log: logging.Logger | logging.LoggerAdapter,
         settings: TunerSettings) -> AutotuneResult:
    dev = str(device or settings.device or default_device())
    fp = fingerprint_step(step, dev, log)
    profile_path = default_profile_path(fp.machine_id)
    outcomes: list[WorkloadOutcome] = []
    failed: dict[str, str] = {}
    decisions: list[dict[str, str]] = []
    published: PublishResult | None = None
    report_path = report_summary = None
    with using_db(db if db is not None else settings.resolved_db_path()) as tdb, \
            tuning_run(tdb, dev, quick, settings) as (run_id, _):
        to_tune = names
        if revalidate:
            rv = step("revalidate", "revalidate", lambda: _revalidate(names, fp, dev, profile_path, settings, log))
            decisions = rv.decision_rows()
            reasons = {d.workload: d.reason for d in rv.decisions}
            outcomes += [WorkloadOutcome.from_entry(e, action="kept", reason=reasons[w]) for w, e in rv.kept.items()]
            to_tune = rv.to_tune()
        for name in to_tune:  # sequential on purpose: one study times on the device at a time
            def tune_one(name: str = name) -> WorkloadOutcome:
                return _tune(tune_fn, name, tdb, run_id, dev, trials, time_budget_s, quick, progress, log)
            try:
                outcomes.append(step("tune-workload", f"tune {name}", tune_one))
            except Exception as exc:  # noqa: BLE001 - one workload's failure is reported, the others go on
                failed[name] = failure(exc)
                log.error("workload %s failed: %s", name, failed[name])
        tuned = [o for o in outcomes if o.action == "tuned"]
        if tuned:
            entries = [o.to_profile_entry() for o in outcomes]
            try:
                published = step("publish-profile", "publish-profile",
                                 lambda: _publish(publish_fn, fp, entries, run_id, tdb, log))
            except Exception as exc:  # noqa: BLE001 - the winners stay in the result and the DB
                failed["publish"] = failure(exc)
            studies = [o.study_name for o in tuned if o.study_name]
            if report and studies:
                pub_path = published.path if published is not None else None
                try:
                    written = step("report", "report",
                                   lambda: _report(tdb, run_id, studies, settings, dict(failed), pub_path, log))
                    report_path, report_summary = str(written.path), written.summary
                except Exception as exc:  # noqa: BLE001 - a report that cannot be written fails the run, not its data
                    failed["report"] = failure(exc)
    if published is not None:
        path, version, checksum = str(published.path), published.version, published.checksum
    else:  # nothing re-tuned: the published profile stands unchanged
        path = str(profile_path) if outcomes and not tuned else None
        version = checksum = None
    return AutotuneResult(fp.machine_id, outcomes, failed, path, run_id=run_id, profile_version=version,
                          profile_checksum=checksum, report_path=report_path, decisions=decisions,
                          report_summary=report_summary)


def fingerprint_step(step: StepRunner, device: str, log: logging.Logger | logging.LoggerAdapter) -> Fingerprint:
    """This machine's fingerprint for ``device``, as a run's first step (logged)."""
    def run() -> Fingerprint:
        fp = fingerprint(device)
        log.info("machine %s: %s (%s), torch %s", fp.machine_id, fp.device_name, fp.device_type, fp.torch)
        return fp

    return step("fingerprint", "fingerprint", run)


def _revalidate(names: list[str], fp: Fingerprint, device: str, profile_path: Path, settings: TunerSettings,
                log: logging.Logger | logging.LoggerAdapter) -> Revalidation:
    rv = revalidate_profile(names, fingerprint=fp, device=device, profile_path=profile_path, settings=settings)
    for d in rv.decisions:
        log.info("%s: %s (%s)", d.workload, d.action, d.reason)
    return rv


def _tune(tune_fn: TuneFn, name: str, db: TuningDB, run_id: int, device: str, trials: int | None,
          time_budget_s: float | None, quick: bool, progress: Progress | None,
          log: logging.Logger | logging.LoggerAdapter) -> WorkloadOutcome:
    result = tune_fn(name, db=db, device=device, n_trials=trials, time_budget_s=time_budget_s,
                     progress=progress, quick=quick, run_id=run_id)
    outcome = WorkloadOutcome.coerce(result, workload=name)
    log.info("%s: winner %s, %.3f ms, %.2fx over default, %d rejected",
             name, outcome.config_short(), outcome.median_ms, outcome.speedup, len(outcome.rejected))
    if outcome.busy_reason:  # published only where no trustworthy winner is (tuner._publish.build_profile)
        log.warning("%s: %s", name, outcome.busy_reason)
    return outcome


def _publish(publish_fn: PublishFn, fp: Fingerprint, entries: list[ProfileEntry], run_id: int, db: TuningDB,
             log: logging.Logger | logging.LoggerAdapter) -> PublishResult:
    published = publish_fn(fp, entries, run_id=run_id, db=db)
    log.info("profile version %s published to %s", published.version, published.path)
    return published


def _report(db: TuningDB, run_id: int, studies: list[str], settings: TunerSettings, failed: dict[str, str],
            profile_path: Path | None, log: logging.Logger | logging.LoggerAdapter) -> ReportFile:
    written = write_run_report(db, run_id, studies, settings=settings, failed=failed, profile_path=profile_path)
    log.info("report written to %s (%.1f MB)", written.path, written.bytes / 1e6)
    return written
