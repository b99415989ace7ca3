"""Progress reporting: events the tuner emits, and a rich renderer for the terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a tuning run: a finished trial (``phase='trial'``) or re-timing (``'retime'``)."""

    workload: str
    phase: str
    n: int  # trials finished in this study (this process)
    total: int  # trials this process will run for the workload
    status: str  # ok | rejected | failed | duplicate | retime | done
    config: str
    median_ms: float | None
    best_ms: float | None
    best_config: str | None
    elapsed_s: float


Progress = Callable[[ProgressEvent], None]


class RichProgress:
    """A rich progress bar per workload: trial n/N, current best, elapsed. Use as a context manager."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.fields[workload]}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.description}"),
            console=console or Console(stderr=True), transient=False)
        self._tasks: dict[str, Any] = {}
        self._t0 = time.perf_counter()

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, ev: ProgressEvent) -> None:
        """Render one event."""
        task = self._tasks.get(ev.workload)
        if task is None:
            task = self._tasks[ev.workload] = self._progress.add_task("", total=ev.total, workload=ev.workload)
        best = f"best {ev.best_ms:.3f} ms ({ev.best_config})" if ev.best_ms is not None else "no valid candidate yet"
        last = f"{ev.status} {ev.config}" + (f" {ev.median_ms:.3f} ms" if ev.median_ms is not None else "")
        self._progress.update(task, completed=ev.n, total=max(ev.total, ev.n), description=f"{last} | {best}")
