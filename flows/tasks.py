"""Prefect tasks of the ``autotune`` flow: each calls one library function and returns its result.

The tuner and the publisher are named by dotted path (``"package.module:function"``) so that a flow
parameter, and so a deployment, can carry another one (tests narrow the search space this way); they
are imported lazily, inside the task. Seam signatures: DEVELOPERS.md, "Flow seams".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from .outcome import WorkloadOutcome

if TYPE_CHECKING:
    from storage import TuningDB

# The seams to the tuner and to profile publishing: the real library functions.
TUNE_FN = "tuner:tune_workload"
PUBLISH_FN = "tuner:publish_entries"


class SeamMissing(ImportError):
    """A library function named by dotted path does not exist."""


def resolve(dotted: str) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` and return the attribute; ``SeamMissing`` names what is absent."""
    module_name, sep, attr = dotted.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {dotted!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SeamMissing(f"{dotted}: module {module_name!r} cannot be imported ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SeamMissing(f"{dotted}: module {module_name!r} has no {attr!r}") from None


@task(name="fingerprint", cache_policy=NO_CACHE)
def fingerprint_task(device: str | None = None) -> dict[str, Any]:
    """Fingerprint this machine (hardware and software) for ``device``."""
    from xlstm_kernels.fingerprint import fingerprint

    fp = fingerprint(device)
    get_run_logger().info("machine %s: %s (%s), torch %s", fp.machine_id, fp.device_name, fp.device_type, fp.torch)
    return fp.to_dict()


@task(name="revalidate", cache_policy=NO_CACHE)
def revalidate_task(workloads: list[str], fingerprint: dict[str, Any], device: str, profile_path: str) -> Any:
    """Re-check and re-time the published winners; decide keep / re-tune / tune (``flows.revalidate``)."""
    from xlstm_kernels.fingerprint import Fingerprint
    from flows.settings import get_flow_settings

    from .revalidate import revalidate

    rv = revalidate(workloads, fingerprint=Fingerprint.from_dict(fingerprint), device=device,
                    profile_path=Path(profile_path), settings=get_flow_settings())
    for d in rv.decisions:
        get_run_logger().info("%s: %s (%s)", d.workload, d.action, d.reason)
    return rv


@task(name="tune-workload", cache_policy=NO_CACHE)
def tune_workload_task(
    workload: str,
    *,
    db: TuningDB,
    run_id: int,
    device: str,
    trials: int | None = None,
    time_budget_s: float | None = None,
    quick: bool = False,
    show_progress: bool = False,
    tune_fn: str = TUNE_FN,
) -> WorkloadOutcome:
    """Tune one workload with ``tune_fn`` (default ``tuner.tune_workload``) under run ``run_id``.

    ``db`` is the flow's open ``TuningDB``, passed as an object (not a path): a second connection that
    this process opens and closes on the same SQLite file can drop the first one's POSIX locks.
    """
    from .progress import terminal_progress

    fn = resolve(tune_fn)
    with terminal_progress(show_progress) as progress:
        result = fn(workload, db=db, device=device, n_trials=trials, time_budget_s=time_budget_s,
                    progress=progress, quick=quick, run_id=run_id)
    outcome = WorkloadOutcome.coerce(result, workload=workload)
    get_run_logger().info(
        "%s: winner %s, %.3f ms, %.2fx over default, %d rejected",
        workload, outcome.config_short(), outcome.median_ms, outcome.speedup, len(outcome.rejected),
    )
    if outcome.busy_reason:  # published only where no trustworthy winner is (tuner._publish.build_profile)
        get_run_logger().warning("%s: %s", workload, outcome.busy_reason)
    return outcome


@task(name="publish-profile", cache_policy=NO_CACHE)
def publish_profile_task(
    fingerprint: dict[str, Any], outcomes: list[WorkloadOutcome], *, run_id: int, db: TuningDB,
    publish_fn: str = PUBLISH_FN,
) -> Any:
    """Publish the winners as this machine's profile and record it (default ``tuner.publish_entries``)."""
    entries = [o.to_profile_entry() for o in outcomes]
    published = resolve(publish_fn)(fingerprint, entries, run_id=run_id, db=db)
    get_run_logger().info("profile version %s published to %s", published.version, published.path)
    return published


@task(name="report", cache_policy=NO_CACHE)
def report_task(run_id: int, study_names: list[str], db: TuningDB, failed: dict[str, str],
                profile_path: str | None) -> Any:
    """Write the run's HTML report (``tuner.write_run_report``); returns the ``tuner.ReportFile``."""
    from tuner import write_run_report
    from flows.settings import get_flow_settings

    written = write_run_report(db, run_id, study_names, settings=get_flow_settings(), failed=failed,
                               profile_path=Path(profile_path) if profile_path else None)
    get_run_logger().info("report written to %s (%.1f MB)", written.path, written.bytes / 1e6)
    return written
