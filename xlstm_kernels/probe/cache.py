"""In-memory cache of probe outcomes."""

from __future__ import annotations

import threading
from typing import Any

from .result import ProbeResult


class ProbeCache:
    """In-memory probe outcomes by (machine, device, workload, config, limit, knob); thread-safe.

    Timeouts and crashes are not cached (they may be load-dependent); every other outcome is, so a
    known failure is not compiled again. The tuning DB can back this once ``storage`` stores probes.
    """

    def __init__(self) -> None:
        self._results: dict[tuple[Any, ...], ProbeResult] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> ProbeResult | None:
        """The cached result for ``key``, if any."""
        with self._lock:
            return self._results.get(key)

    def put(self, key: tuple[Any, ...], result: ProbeResult) -> None:
        """Remember ``result`` unless it ended in a timeout or a crash."""
        if result.failure in ("timeout", "crash"):
            return
        with self._lock:
            self._results[key] = result

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._results.clear()

    def __len__(self) -> int:
        return len(self._results)


PROBE_CACHE = ProbeCache()
