"""The ``autotune`` flow's steps as Prefect tasks: ``as_task`` is the flow's ``tuner.StepRunner``.

``tuner.autotune`` runs every step (fingerprint, revalidate, one ``tune <workload>`` per workload,
publish-profile, report) through its ``step`` seam; the flow passes ``as_task``, so each step is a task
run of its own, named after the step, with its logs and state in Prefect. Seams: DEVELOPERS.md, "Flow seams".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

T = TypeVar("T")


def as_task(step: str, label: str, fn: Callable[[], T], /) -> T:
    """Run ``fn`` as a Prefect task ``step`` whose run is named ``label``; its exception propagates.

    Never cached (every run times afresh); the step's arguments live in ``fn``'s closure, so no open
    ``TuningDB`` or tensor goes through Prefect's parameter serialization.
    """
    return task(fn, name=step, task_run_name=label, cache_policy=NO_CACHE)()
