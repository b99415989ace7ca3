"""Real servers for the fleet tests and ``benchmarks/fleet.py``: a throwaway PostgreSQL cluster (initdb
into a temp dir, as the ``postgres`` user when run as root: PostgreSQL refuses root) on 127.0.0.1 and a
free port, password-protected, with databases ``optuna`` and ``prefect``; and a ``prefect server`` on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from flows.server import free_port, start_local_server, stop_local_server

PG_USER, PG_PASSWORD = "fleet", "fleet-secret-pw"


def pg_bindir() -> Path | None:
    """Directory of PostgreSQL's server binaries (Debian's /usr/lib/postgresql/<v>/bin), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@dataclass(frozen=True)
class Postgres:
    """A running throwaway cluster."""

    port: int
    datadir: Path

    def url(self, db: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of database ``db`` (``psycopg`` for Optuna, ``asyncpg`` for Prefect)."""
        return f"postgresql+{driver}://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{db}"


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres(bindir: Path) -> Iterator[Postgres]:
    """Start a cluster (initdb, pg_ctl start on 127.0.0.1 only), create the databases; stop and delete it after."""
    root = Path(tempfile.mkdtemp(prefix="xlstm-pg-"))
    datadir, pwfile = root / "data", root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    env = dict(os.environ, PGPASSWORD=PG_PASSWORD)
    subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(datadir), "-U", PG_USER, "--pwfile", str(pwfile),
                              "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True, env=env)
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(root / "log"), "-o", opts,
                              "-w", "-t", "60", "start"]), check=True, capture_output=True, env=env)
    try:
        for db in ("optuna", "prefect"):
            subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, db],
                           check=True, capture_output=True, env=env)
        yield Postgres(port, datadir)
    finally:
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, env=env)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def prefect_server(pg: Postgres, home: Path, startup_timeout_s: float = 240.0) -> Iterator[str]:
    """A ``prefect server`` on 127.0.0.1 whose database is ``pg``'s ``prefect``; yields its API URL."""
    env = dict(os.environ, PREFECT_API_DATABASE_CONNECTION_URL=pg.url("prefect", "asyncpg"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_API_HOST="127.0.0.1")
    info = start_local_server(home, startup_timeout_s=startup_timeout_s, env=env)
    try:
        yield info.api_url
    finally:
        stop_local_server(info, home)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):  # noqa: ANN001, ANN201
    """Poll ``predicate()`` until it returns something truthy; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
