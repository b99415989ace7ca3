"""Where probe attempts run: in-process, in a child process bounded by a timeout, or as generated Metal checked statically."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..kernels.compiler import CompileKey
from ..settings import get_settings
from .attempt import Attempt, compile_and_scan, static_check
from .codegen_scan import UnknownThreadgroupType


class MetalCodegenRunner:
    """Attempts without compiling: the block's generated Metal source, checked statically (any machine)."""

    def __init__(self, threadgroup_limit: int | None) -> None:
        self.threadgroup_limit = threadgroup_limit

    def attempt(self, key: CompileKey, max_buffers: int | None) -> Attempt:
        from .metal_codegen import block_metal_scan

        try:
            scan = block_metal_scan(key)  # MetalCodegenUnavailable propagates: the probe cannot tell
        except UnknownThreadgroupType as exc:
            return Attempt(ok=False, kind="compiler_error", message=str(exc))
        failed = static_check(scan, max_buffers, self.threadgroup_limit)
        return failed or Attempt(ok=True, scan=scan, graphs=1)

    def close(self) -> None:
        pass


class InProcessRunner:
    def attempt(self, key: CompileKey, max_buffers: int | None) -> Attempt:
        return compile_and_scan(key, max_buffers)

    def close(self) -> None:
        pass


def key_to_dict(key: CompileKey) -> dict[str, Any]:
    """JSON form of a compile key."""
    d = dataclasses.asdict(key)
    d["inductor_options"] = [list(kv) for kv in key.inductor_options]
    return d


def key_from_dict(d: dict[str, Any]) -> CompileKey:
    """Inverse of ``key_to_dict``."""
    d = dict(d)
    d["inductor_options"] = tuple(tuple(kv) for kv in d.get("inductor_options", ()))
    return CompileKey(**d)


def child_env() -> dict[str, str]:
    """This process's environment with the directory holding ``xlstm_kernels`` (and the tuner,
    storage and flows packages beside it) first on PYTHONPATH, so a child ``python -m`` imports this tree."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class ChildRunner:
    """Attempts in one child process (``python -m xlstm_kernels.probe._worker``), each bounded in time."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def _start(self) -> subprocess.Popen[str]:
        env = child_env()
        proc = subprocess.Popen(
            [sys.executable, "-m", "xlstm_kernels.probe._worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, start_new_session=True,
        )

        lines: queue.Queue[str | None] = queue.Queue()  # fresh per child: no stale EOF from a killed one
        self._lines = lines

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        return proc

    def _await(self, prefix: str, bound_s: float, what: str) -> str | Attempt:
        """The child's next stdout line starting with ``prefix`` within ``bound_s`` seconds; else an
        Attempt: a timeout (``what`` says which bound; the child is killed) or a crash."""
        deadline = time.monotonic() + bound_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._kill()
                return Attempt(ok=False, kind="timeout", message=f"{what} (child process killed)")
            if line is None:
                return self._crashed()
            if line.startswith(prefix):
                return line
            # anything else on stdout is noise from the compiler: ignore it

    def _ready(self) -> Attempt | None:
        """Start the child and wait for its ``@@ready``; an Attempt when it never got there."""
        self.proc = self._start()
        bound = get_settings().probe_startup_timeout_s
        got = self._await("@@ready", bound, f"probe child process did not start within probe_startup_timeout_s={bound:g}s")
        return got if isinstance(got, Attempt) else None

    def attempt(self, key: CompileKey, max_buffers: int | None) -> Attempt:
        if self.proc is None and (failed := self._ready()) is not None:
            return failed
        proc = self.proc
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps({"key": key_to_dict(key), "max_buffers": max_buffers}) + "\n")
            proc.stdin.flush()
        except OSError:
            return self._crashed()
        got = self._await("@@probe ", self.timeout_s, f"compile did not finish within compile_timeout_s={self.timeout_s:g}s")
        return got if isinstance(got, Attempt) else Attempt.from_dict(json.loads(got[len("@@probe "):]))

    def _crashed(self) -> Attempt:
        proc = self.proc
        rc = proc.wait(timeout=30) if proc is not None else None
        self.proc = None
        self._stderr.seek(0)
        tail = self._stderr.read()[-1500:]
        how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        return Attempt(ok=False, kind="crash", message=f"compiler process died ({how}); stderr tail:\n{tail}")

    def _kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None
        self._stderr.close()
