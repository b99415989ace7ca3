"""Progress on the terminal for long tuning work (``tuner.RichProgress``), only where someone watches."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tuner import Progress, RichProgress


def progress_wanted() -> bool:
    """True when stderr is a terminal (a progress bar elsewhere is noise in logs and pipes)."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def terminal_progress(enabled: bool) -> Iterator[Progress | None]:
    """A ``RichProgress`` (on stderr) while the block runs when ``enabled``, else None."""
    if not enabled:
        yield None
        return
    with RichProgress() as progress:
        yield progress
