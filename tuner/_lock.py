"""A per-machine lock: two tuning runs never time on one device at once.

The lock is an advisory ``flock`` on ``HOME/locks/<name>.lock``. The kernel drops it when the holding
process exits, however it exits (even ``kill -9``), so a stale file left behind by a killed run never
blocks the next one. The holder writes its pid, start time and command line into the file so that a
refused run can name it. ``flock`` is per host: a home directory shared over NFS between machines is
not protected (each machine has its own devices anyway).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class TuneLocked(RuntimeError):
    """Another tuning run holds this machine's lock."""

    def __init__(self, path: Path, holder: LockHolder | None, waited_s: float) -> None:
        self.path = path
        self.holder = holder
        self.waited_s = waited_s
        who = holder.describe() if holder else "an unknown process (it has not written its details yet)"
        waited = f" after waiting {waited_s:.1f} s" if waited_s >= 0.05 else ""
        super().__init__(
            f"another tuning run holds this machine{waited}: {who}. Lock file: {path}. "
            "Wait for it to finish, or pass --wait SECONDS to queue behind it."
        )


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: written into the lock file by the holder."""

    pid: int
    started: str
    host: str
    command: str

    def describe(self) -> str:
        """One line naming the holder."""
        return f"pid {self.pid} on {self.host}, started {self.started} ({self.command})"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


class LockUnwritable(RuntimeError):
    """The lock file cannot be created (read-only home, permissions): nothing was started."""


def lock_path(home: Path, name: str = "tune") -> Path:
    """Where the lock file named ``name`` lives under ``home`` (the name encoded as one file name)."""
    from xlstm_kernels.paths import join_under, safe_component

    return join_under(Path(home).expanduser() / "locks", safe_component(name) + ".lock")


def read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in a lock file, or None when empty, absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text() or "null")
        return LockHolder(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def machine_lock(home: Path, name: str = "tune", wait_s: float = 0.0, poll_s: float = 0.2) -> Iterator[LockHolder]:
    """Hold the machine lock ``name`` for the block; wait up to ``wait_s`` seconds, else raise ``TuneLocked``."""
    if wait_s < 0:
        raise ValueError(f"wait_s must be >= 0, got {wait_s}")
    path = lock_path(home, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise LockUnwritable(f"cannot create the machine lock {path}: {exc.strerror or exc}; is the home "
                             f"directory {home} read-only? Point XLSTM_AUTOTUNE_HOME at a writable place.") from None
    try:
        start = time.monotonic()
        while not _try_lock(fd):
            waited = time.monotonic() - start
            if waited >= wait_s:
                raise TuneLocked(path, read_holder(path), waited)
            time.sleep(min(poll_s, max(wait_s - waited, 0.01)))
        holder = LockHolder(
            pid=os.getpid(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            host=socket.gethostname(),
            command=" ".join(sys.argv) or sys.executable,
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder.to_dict()).encode(), 0)
        try:
            yield holder
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
