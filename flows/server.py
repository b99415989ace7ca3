"""Which Prefect API a command talks to, and the local ``prefect server`` that ``serve`` needs.

* ``tune`` with no ``PREFECT_API_URL``: Prefect's temporary (ephemeral) local server and its SQLite
  database, started and stopped by Prefect itself. With ``PREFECT_API_URL`` set, that server is used
  after a health check; if it does not answer, ``ServerUnavailable`` says so and how to run locally
  (``tune --no-server``).
* ``serve``: Prefect cannot schedule on its temporary server, so with no ``PREFECT_API_URL`` a real
  ``prefect server`` is started on loopback (own process group, log in ``HOME/logs``, its pid and port
  in ``HOME/prefect-server.json``) and stopped on exit — or, if that file names a live, healthy server
  (left by another ``serve``), it is attached to and left running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from storage import pid_alive

STATE_FILE = "prefect-server.json"
NO_SERVER_HINT = (
    "To run locally without it, unset PREFECT_API_URL or pass --no-server: the run then uses "
    "Prefect's temporary local server and its SQLite database."
)


class ServerUnavailable(RuntimeError):
    """The Prefect API named by PREFECT_API_URL does not answer."""


class ServerStartError(RuntimeError):
    """A local ``prefect server`` could not be started (its log says why)."""


@dataclass(frozen=True)
class ServerInfo:
    """A Prefect server this process talks to."""

    api_url: str
    kind: Literal["started", "attached", "remote", "ephemeral"]
    pid: int | None = None
    port: int | None = None
    log_path: str | None = None

    def describe(self) -> str:
        """One line saying which server is used."""
        if self.kind == "started":
            return f"started a local Prefect server at {self.api_url} (pid {self.pid}, log {self.log_path})"
        if self.kind == "attached":
            return f"attached to the local Prefect server already running at {self.api_url} (pid {self.pid})"
        if self.kind == "remote":
            return f"using the Prefect server at {self.api_url} (PREFECT_API_URL)"
        return "using Prefect's temporary local server (no PREFECT_API_URL)"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def current_api_url() -> str | None:
    """PREFECT_API_URL as Prefect sees it (environment, profile or active settings context)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def api_healthy(api_url: str, timeout_s: float = 3.0) -> bool:
    """True when ``GET {api_url}/health`` answers 200."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def select_api(no_server: bool = False, api_url: str | None = None, timeout_s: float = 3.0) -> ServerInfo:
    """The API a ``tune`` run uses; raises ``ServerUnavailable`` when PREFECT_API_URL is set but down."""
    url = current_api_url() if api_url is None else api_url
    if no_server or not url:
        return ServerInfo(api_url="", kind="ephemeral")
    if not api_healthy(url, timeout_s):
        raise ServerUnavailable(f"the Prefect server at PREFECT_API_URL={url} does not answer. {NO_SERVER_HINT}")
    return ServerInfo(api_url=url, kind="remote")


EPHEMERAL_FILE = "prefect-ephemeral.json"
_EPHEMERAL_APP = "prefect.server.api.server:create_app"  # what Prefect's temporary server runs (uvicorn)


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux /proc; None elsewhere or when gone): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22 of proc(5), counted after "pid (comm) "


def _proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def record_ephemeral_server(home: Path, pid: int, port: int) -> None:
    """Write HOME/prefect-ephemeral.json: the temporary server this process started, so that the next
    ``tune`` can stop it if this process is killed (``kill -9`` leaves Prefect's server running)."""
    data = {"pid": pid, "port": port, "start": _proc_start(pid), "owner": os.getpid(), "owner_start": _proc_start(os.getpid())}
    path = Path(home).expanduser() / EPHEMERAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def cleanup_orphaned_server(home: Path, grace_s: float = 5.0) -> int | None:
    """Stop the temporary Prefect server a killed ``tune`` left behind; returns its pid, or None.

    Only a process proven to be that server is signalled: HOME/prefect-ephemeral.json names it, the
    ``tune`` that started it is gone, and the pid still has the recorded start time and runs
    Prefect's server app on the recorded port (Linux /proc; elsewhere nothing is killed).
    """
    path = Path(home).expanduser() / EPHEMERAL_FILE
    try:
        data = json.loads(path.read_text())
        pid, port, start = int(data["pid"]), int(data["port"]), data["start"]
        owner, owner_start = int(data["owner"]), data["owner_start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid_alive(owner) and _proc_start(owner) == owner_start:
        return None  # its run is alive (or it is this process): not an orphan
    cmd = _proc_cmdline(pid)
    ours = (start is not None and _proc_start(pid) == start and "uvicorn" in cmd and _EPHEMERAL_APP in cmd
            and str(port) in cmd)
    with contextlib.suppress(OSError):
        path.unlink()
    if not ours:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _proc_start(pid) == start and time.monotonic() < deadline:
            time.sleep(0.1)
        if _proc_start(pid) == start:
            os.kill(pid, signal.SIGKILL)
    return pid


def _start_ephemeral(home: Path, timeout_s: int) -> None:
    """Start Prefect's temporary server now (Prefect would start it on first use) and record its pid."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    try:
        server.start(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - Prefect raises RuntimeError/httpx errors; one message for the CLI
        raise ServerUnavailable(f"Prefect's temporary local server did not start: {exc}") from None
    if server.server_process is not None and server.port is not None:
        record_ephemeral_server(home, server.server_process.pid, server.port)


class _ServerLinesToFile(logging.Filter):
    """Sends the temporary server's start/stop lines (Prefect logs them on its root ``prefect`` logger,
    from ``prefect/server/api/server.py``) to a log file instead of the terminal."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.handler = logging.FileHandler(path, delay=True, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.pathname.replace("\\", "/").endswith("prefect/server/api/server.py"):
            self.handler.handle(record)
            return False
        return True


_SERVER_LINES: _ServerLinesToFile | None = None


def quiet_server_lines(log_dir: Path) -> Path:
    """Route the temporary server's start-up chatter to ``log_dir/prefect-server.log`` (for this process)."""
    global _SERVER_LINES
    log_dir = Path(log_dir).expanduser()
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "prefect-server.log"
    prefect_logger = logging.getLogger("prefect")
    if _SERVER_LINES is not None:
        if _SERVER_LINES.path == path:
            return path
        prefect_logger.removeFilter(_SERVER_LINES)
    _SERVER_LINES = _ServerLinesToFile(path)
    prefect_logger.addFilter(_SERVER_LINES)
    return path


@contextmanager
def use_api(info: ServerInfo, startup_timeout_s: float = 180.0, home: Path | None = None,
            log_dir: Path | None = None) -> Iterator[ServerInfo]:
    """Point Prefect (this process and the flow-run processes it spawns) at ``info`` for the block.

    For Prefect's temporary server, its startup timeout is raised to at least ``startup_timeout_s``:
    Prefect's default (20 s) is too short for a first start (database migrations) on a busy laptop.
    With ``home``, a temporary server left by a killed ``tune`` is stopped first
    (``cleanup_orphaned_server``) and the one started now is recorded there.
    The temporary server never sends telemetry (Prefect's analytics off: offline machines printed an error on
    every run), and with ``log_dir`` its start-up lines go to ``log_dir/prefect-server.log``.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ANALYTICS_ENABLED as ANALYTICS,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as STARTUP,
        get_current_settings,
        temporary_settings,
    )

    old = os.environ.get("PREFECT_API_URL")
    if info.kind == "ephemeral":
        os.environ.pop("PREFECT_API_URL", None)
        if log_dir is not None:
            quiet_server_lines(log_dir)
        timeout = max(int(startup_timeout_s), get_current_settings().server.ephemeral.startup_timeout_seconds)
        ctx = temporary_settings(updates={STARTUP: timeout, ANALYTICS: False}, restore_defaults={PREFECT_API_URL})
    else:
        os.environ["PREFECT_API_URL"] = info.api_url
        ctx = temporary_settings(updates={PREFECT_API_URL: info.api_url})
    try:
        with ctx:
            if info.kind == "ephemeral" and home is not None:
                cleanup_orphaned_server(home)
                _start_ephemeral(home, timeout)
            yield info
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


def state_path(home: Path) -> Path:
    """The file recording the local server a ``serve`` started."""
    return Path(home).expanduser() / STATE_FILE


def attach_local_server(home: Path, timeout_s: float = 3.0) -> ServerInfo | None:
    """The local server recorded in ``home`` if its process lives and its API answers; else None."""
    path = state_path(home)
    try:
        data = json.loads(path.read_text())
        pid, port, url = int(data["pid"]), int(data["port"]), str(data["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid) or not api_healthy(url, timeout_s):
        return None
    return ServerInfo(api_url=url, kind="attached", pid=pid, port=port, log_path=data.get("log_path"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop_process_group(pid: int, timeout_s: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for its exit instead
            done = 0 if pid_alive(pid) else pid
        if done:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def start_local_server(
    home: Path, port: int | None = None, startup_timeout_s: float = 180.0, env: Mapping[str, str] | None = None
) -> ServerInfo:
    """Start ``prefect server start`` on loopback in its own process group; wait until it answers."""
    home = Path(home).expanduser()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = logs / "prefect-server.log"
    child_env = dict(os.environ if env is None else env)
    child_env.pop("PREFECT_API_URL", None)
    child_env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry from a server we start
    with open(log_path, "ab") as log:
        log.write(f"\n--- {datetime.now(timezone.utc).isoformat()} starting on port {port}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,  # Ctrl-C reaches us, not it: we stop it ourselves, in order
        )
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not api_healthy(api_url, timeout_s=2.0):
            if proc.poll() is not None:
                raise ServerStartError(
                    f"prefect server exited with code {proc.returncode} while starting; see {log_path}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"prefect server did not answer at {api_url} within {startup_timeout_s:.0f} s; see {log_path}"
                )
            time.sleep(0.5)
    except BaseException:  # timeout, early exit, or Ctrl-C while waiting: leave no server behind
        _stop_process_group(proc.pid)
        raise
    info = ServerInfo(api_url=api_url, kind="started", pid=proc.pid, port=port, log_path=str(log_path))
    state_path(home).write_text(json.dumps(info.to_dict() | {"started": datetime.now(timezone.utc).isoformat()}))
    return info


def stop_local_server(info: ServerInfo, home: Path) -> None:
    """Stop a server this process started (SIGTERM to its group, SIGKILL after a grace period)."""
    if info.kind != "started" or info.pid is None:
        raise ValueError(f"only a server this process started can be stopped, not a {info.kind!r} one")
    _stop_process_group(info.pid)
    path = state_path(home)
    try:
        if json.loads(path.read_text()).get("pid") == info.pid:
            path.unlink()
    except (OSError, ValueError):
        pass


@contextmanager
def scheduling_server(
    home: Path, port: int | None = None, startup_timeout_s: float = 180.0, api_url: str | None = None
) -> Iterator[ServerInfo]:
    """A Prefect server that can schedule: PREFECT_API_URL's (checked), else an attached or started local one."""
    url = current_api_url() if api_url is None else api_url
    if url:
        if not api_healthy(url):
            raise ServerUnavailable(
                f"the Prefect server at PREFECT_API_URL={url} does not answer. Unset PREFECT_API_URL to "
                "let `serve` start a local server, or run once now with `xlstm-autotune tune --no-server`."
            )
        info = ServerInfo(api_url=url, kind="remote")
        with use_api(info):
            yield info
        return
    info = attach_local_server(home) or start_local_server(home, port, startup_timeout_s)
    try:
        with use_api(info):
            yield info
    finally:
        if info.kind == "started":
            stop_local_server(info, home)
