"""Prefect tasks of the ``autotune`` flow: each calls one library function and returns its result.

The library functions are named by dotted path (``"package.module:function"``) so that a flow
parameter, and so a deployment, can carry them; they are imported lazily, inside the task, which keeps
``flows`` importable before (or without) the tuner.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from xlstm_kernels.config import Workload

from .outcome import WorkloadOutcome

# The seams to the tuner and to profile publishing (signatures: DEVELOPERS.md, "Flow seams").
TUNE_FN = "tuner:tune_workload"
PUBLISH_FN = "xlstm_kernels.profile:publish_profile"


class SeamMissing(ImportError):
    """A library function named by dotted path does not exist (yet)."""


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


@task(name="fingerprint")
def fingerprint_task(device: str | None = None) -> dict[str, Any]:
    """Fingerprint this machine (hardware and software) for ``device``."""
    from xlstm_kernels.fingerprint import fingerprint

    fp = fingerprint(device)
    get_run_logger().info("machine %s: %s (%s), torch %s", fp.machine_id, fp.device_name, fp.device_type, fp.torch)
    return fp.to_dict()


@task(name="tune-workload")
def tune_workload_task(
    workload: str,
    fingerprint: dict[str, Any],
    trials: int | None = None,
    time_budget_s: float | None = None,
    quick: bool = False,
    tune_fn: str = TUNE_FN,
) -> WorkloadOutcome:
    """Tune one workload with ``tune_fn(workload, fingerprint=, trials=, time_budget_s=, quick=)``."""
    fn = resolve(tune_fn)
    result = fn(Workload.parse(workload), fingerprint=fingerprint, trials=trials, time_budget_s=time_budget_s, quick=quick)
    outcome = WorkloadOutcome.coerce(result, workload=workload)
    get_run_logger().info(
        "%s: winner %s, %.3f ms, %.2fx over default, %d rejected",
        workload,
        outcome.config_short(),
        outcome.median_ms,
        outcome.speedup,
        len(outcome.rejected),
    )
    return outcome


@task(name="publish-profile")
def publish_profile_task(
    fingerprint: dict[str, Any], outcomes: list[WorkloadOutcome], publish_fn: str = PUBLISH_FN
) -> str:
    """Publish the winners as this machine's profile with ``publish_fn(fingerprint, outcomes) -> path``."""
    path = resolve(publish_fn)(fingerprint, outcomes)
    get_run_logger().info("profile published to %s", path)
    return str(Path(path))
