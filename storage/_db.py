"""The tuning database: one SQLite file, opened through sqlite-utils, safe for concurrent writers.

Concurrency contract: the file is in WAL mode (readers never block the writer); every write goes
through ``TuningDB.write()``, one ``BEGIN IMMEDIATE`` transaction that takes the write lock up front
and waits up to ``busy_timeout_s`` for another process to release it, so two processes writing at
once serialise instead of failing. A process killed mid-transaction leaves nothing behind (SQLite
rolls back the uncommitted transaction on next open). A run a killed process left ``running`` is
turned ``interrupted`` by ``recover_stale_runs`` (its pid is gone on this host).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from xlstm_kernels.kernels.config import KernelConfig, Workload
from xlstm_kernels.profiles.fingerprint import Fingerprint

from ._errors import DatabaseUnavailable, NoTunedConfig, NotADatabase, SchemaTooNew, StorageError, UnknownRun
from ._schema import MIGRATIONS, SCHEMA_VERSION

RUN_STATUSES = ("running", "completed", "interrupted", "failed")
TRIAL_STATUSES = ("ok", "rejected", "failed")


def now() -> str:
    """UTC timestamp, ISO 8601 with microseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def config_key(config: KernelConfig) -> str:
    """Canonical JSON of a config (sorted keys): equal configs give equal keys."""
    return json.dumps(config.to_dict(), sort_keys=True)


def pid_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists on this host (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_file(path: Path) -> None:
    """Refuse a directory; the SQLite header itself is checked by sqlite3 (``_refuse_not_sqlite``).

    The file is deliberately not opened from Python: closing any descriptor of a file drops every
    POSIX lock this process holds on it, including those of another open connection to the DB.
    """
    if path.is_dir():
        raise NotADatabase(f"{path} is a directory; expected an SQLite tuning database file")


def _refuse_not_sqlite(path: Path, exc: sqlite3.DatabaseError) -> StorageError:
    if isinstance(exc, sqlite3.OperationalError):  # cannot open/lock/write: not a verdict on the content
        return _unavailable(path, exc)
    return NotADatabase(
        f"{path} is not an SQLite database ({exc}); refusing to touch it. "
        "Point XLSTM_AUTOTUNE_DB_PATH or XLSTM_AUTOTUNE_HOME elsewhere."
    )


def _unavailable(path: Path, exc: BaseException, reading: bool = False) -> DatabaseUnavailable:
    if reading:
        return DatabaseUnavailable(f"cannot read the tuning database {path}: {exc}; it was not changed")
    ro = "" if os.access(path.parent, os.W_OK) else f" ({path.parent} is not writable: a read-only home?)"
    return DatabaseUnavailable(f"cannot open the tuning database {path} for writing: {exc}{ro}; it was not changed. "
                               "Point XLSTM_AUTOTUNE_HOME or XLSTM_AUTOTUNE_DB_PATH at a writable place.")


def _open_read_only(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A read-only connection; in a read-only directory (no -shm can be made) the file is read as immutable
    when it has no write-ahead log to replay (else ``DatabaseUnavailable``: its newest rows are in the log)."""
    from urllib.parse import quote

    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)
    try:
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if os.access(path.parent, os.W_OK):
            raise _unavailable(path, exc, reading=True) from None
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise DatabaseUnavailable(
                f"cannot read {path}: its directory is read-only and it has an un-checkpointed write-ahead log "
                f"({wal.name}) that SQLite cannot replay without write access; copy the DB elsewhere") from None
    return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout_s, check_same_thread=False)


@dataclass(frozen=True)
class BestConfig:
    """The best validated config for a workload on a machine, with its numbers and provenance."""

    workload: str
    machine_id: str
    config: KernelConfig
    t_inner_effective: int | None
    median_ms: float
    spread_ms: float
    tokens_per_s: float
    speedup: float | None
    default_median_ms: float | None
    equivalence_error: float
    compile_s: float | None
    run_id: int
    run_status: str
    run_started_at: str
    source: str  # "result": winner of a run's side-by-side re-timing; "trial": fastest ok trial

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (what ``xlstm-autotune best --json`` prints)."""
        d = dict(self.__dict__)
        d["config"] = self.config.to_dict()
        return d


class TuningDB:
    """The tuning database file (see module docstring for the concurrency contract).

    Open with ``TuningDB(path)`` or ``open_db()``; the schema is created or migrated on open.
    Raises ``NotADatabase`` for a file that is not an SQLite tuning database and ``SchemaTooNew``
    for one written by a newer version; in both cases the file is not modified (checked before WAL
    mode is switched on). ``DatabaseUnavailable``: the file or its directory cannot be written (a
    read-only home). ``read_only=True`` (queries such as ``best``) never writes, migrates or switches
    to WAL, and reads a DB in a read-only directory too.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0, read_only: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.read_only = read_only
        _check_file(self.path)
        try:
            if read_only:
                conn = _open_read_only(self.path, busy_timeout_s)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, check_same_thread=False)
        except (OSError, sqlite3.OperationalError) as exc:
            raise _unavailable(self.path, exc, reading=read_only) from None
        except sqlite3.DatabaseError as exc:
            raise _refuse_not_sqlite(self.path, exc) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _refuse_not_sqlite(self.path, exc) from exc
        if version > SCHEMA_VERSION:
            conn.close()
            raise SchemaTooNew(
                f"{self.path} has schema version {version}; this xlstm-autotune understands up to "
                f"{SCHEMA_VERSION}. Upgrade xlstm-autotune (the file was left unchanged)."
            )
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        if version == 0:
            # a tuning DB is never at version 0 with tables (the first migration sets the version in
            # the same transaction): any table, even one named like ours (`trials`), is someone else's
            foreign = self.db.table_names()
            if foreign:
                conn.close()
                raise NotADatabase(
                    f"{self.path} is an SQLite database but not a tuning database (it holds tables "
                    f"{foreign[:5]} and no tuning schema version); refusing to touch it."
                )
        if read_only:
            if version != SCHEMA_VERSION:
                conn.close()
                raise DatabaseUnavailable(f"{self.path} has schema version {version}, not {SCHEMA_VERSION}; "
                                          "open it once writable (any tune) to migrate it")
            return
        try:
            if self.db.journal_mode != "wal":
                self.db.enable_wal()
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.OperationalError as exc:
            conn.close()
            raise _unavailable(self.path, exc) from None

    # -- transactions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One ``BEGIN IMMEDIATE`` transaction: all or nothing, serialised with other writers.

        Nested use (a write inside a write) becomes a savepoint of the outer transaction.
        """
        if self.conn.in_transaction:
            with self.db.atomic():
                yield self.db
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.write():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:  # another process migrated further in between
                raise SchemaTooNew(f"{self.path} has schema version {version} > {SCHEMA_VERSION}")
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    self.conn.execute(stmt)
            if version != SCHEMA_VERSION:
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The schema version stored in the file."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> TuningDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machines, workloads ----------------------------------------------------------------------

    def record_machine(self, fp: Fingerprint) -> str:
        """Insert or refresh a machine's fingerprint; returns its id."""
        row = {k: v for k, v in fp.to_dict().items() if k != "machine_id"}
        row.update(id=fp.machine_id, fingerprint_json=json.dumps(fp.to_dict(), sort_keys=True))
        ts = now()
        with self.write() as db:
            if db["machines"].count_where("id = ?", [fp.machine_id]):
                db["machines"].update(fp.machine_id, {**row, "last_seen": ts})
            else:
                db["machines"].insert({**row, "first_seen": ts, "last_seen": ts})
        return fp.machine_id

    def machines(self) -> list[dict[str, Any]]:
        """All machines, most recently seen first."""
        return list(self.db.query("SELECT * FROM machines ORDER BY last_seen DESC"))

    def has_machine(self, machine_id: str) -> bool:
        """True when the DB knows ``machine_id`` (its fingerprint was recorded)."""
        return bool(self.db["machines"].count_where("id = ?", [machine_id]))

    def workload_id(self, workload: Workload) -> int:
        """Id of a workload row, inserted if new."""
        spec = str(workload)
        with self.write() as db:
            row = self.conn.execute("SELECT id FROM workloads WHERE spec = ?", (spec,)).fetchone()
            if row:
                return int(row[0])
            return int(db["workloads"].insert(dict(
                spec=spec, B=workload.B, NH=workload.NH, S=workload.S, DHQK=workload.DHQK,
                DHV=workload.DHV, dtype=workload.dtype, mode=workload.mode,
            )).last_pk)

    # -- runs -----------------------------------------------------------------------------------

    def start_run(self, machine_id: str, *, device: str, torch_version: str, triton: str | None,
                  quick: bool = False, settings: dict[str, Any] | None = None) -> int:
        """Open a run in status ``running`` owned by this process; returns its id."""
        ts = now()
        with self.write() as db:
            return int(db["runs"].insert(dict(
                machine_id=machine_id, status="running", quick=int(quick), device=device,
                torch=torch_version, triton=triton, pid=os.getpid(), host=socket.gethostname(),
                started_at=ts, heartbeat_at=ts,
                settings_json=json.dumps(settings or {}, sort_keys=True, default=str),
            )).last_pk)

    def heartbeat(self, run_id: int) -> None:
        """Mark a running run as alive now."""
        with self.write():
            self.conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (now(), run_id))

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        """Close a run as ``completed``, ``interrupted`` or ``failed``."""
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"run status must be one of {list(RUN_STATUSES[1:])}, got {status!r}")
        with self.write():
            cur = self.conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, now(), error, run_id),
            )
            if cur.rowcount == 0:
                raise UnknownRun(f"no tuning run with id {run_id} in {self.path}")

    def run(self, run_id: int) -> dict[str, Any]:
        """One run's row; raises ``UnknownRun``."""
        rows = list(self.db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
        if not rows:
            raise UnknownRun(f"no tuning run with id {run_id} in {self.path}")
        return rows[0]

    def is_run_of(self, run_id: int, machine_id: str) -> bool:
        """True when run ``run_id`` exists and is a run of ``machine_id`` (a provenance link is safe)."""
        return bool(list(self.db.query("SELECT 1 FROM runs WHERE id = ? AND machine_id = ?", [run_id, machine_id])))

    def runs(self, machine_id: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, optionally of one machine."""
        where, args = ("WHERE machine_id = ?", [machine_id]) if machine_id else ("", [])
        return list(self.db.query(f"SELECT * FROM runs {where} ORDER BY id DESC", args))

    def recover_stale_runs(self) -> list[int]:
        """Mark ``running`` runs of dead processes on this host ``interrupted``; returns their ids."""
        host = socket.gethostname()
        stale = [
            r["id"] for r in self.db.query(
                "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?", [host])
            if r["pid"] != os.getpid() and not pid_alive(r["pid"])
        ]
        if stale:
            with self.write():
                for run_id in stale:
                    self.conn.execute(
                        "UPDATE runs SET status = 'interrupted', finished_at = ?, "
                        "error = 'process ended without closing the run (killed?)' "
                        "WHERE id = ? AND status = 'running'", (now(), run_id))
        return stale

    # -- trials, results ------------------------------------------------------------------------

    def record_trial(self, *, run_id: int, workload: Workload, machine_id: str, config: KernelConfig,
                     effective: KernelConfig, status: str, reason: str | None = None,
                     t_inner_effective: int | None = None, is_default: bool = False,
                     study_name: str | None = None, trial_number: int | None = None,
                     compile_s: float | None = None, validate_s: float | None = None,
                     equivalence_error: float | None = None, tolerance: float | None = None,
                     validation_shape: str | None = None, median_ms: float | None = None,
                     spread_ms: float | None = None, min_ms: float | None = None,
                     repeats: int | None = None, tokens_per_s: float | None = None,
                     instability: str | None = None, remeasures: int | None = None,
                     load_avg: float | None = None, steal_fraction: float | None = None) -> int:
        """Store one evaluated candidate; a non-``ok`` trial must carry a reason and no timing.

        ``instability``: why its samples stayed unstable after ``remeasures`` extra rounds (the trial
        is marked ``unstable``); ``load_avg`` / ``steal_fraction``: the load seen while timing.
        """
        if status not in TRIAL_STATUSES:
            raise ValueError(f"trial status must be one of {list(TRIAL_STATUSES)}, got {status!r}")
        if status != "ok" and not reason:
            raise ValueError(f"a {status} trial needs a reason")
        if status != "ok" and median_ms is not None:
            raise ValueError("only an ok (validated) trial has a timing")
        wid = self.workload_id(workload)
        with self.write() as db:
            return int(db["trials"].insert(dict(
                run_id=run_id, workload_id=wid, machine_id=machine_id, study_name=study_name,
                trial_number=trial_number, config_json=config_key(config),
                effective_json=config_key(effective), config_key=config_key(effective),
                t_inner_effective=t_inner_effective, is_default=int(is_default), status=status,
                reason=reason, compile_s=compile_s, validate_s=validate_s,
                equivalence_error=equivalence_error, tolerance=tolerance,
                validation_shape=validation_shape, median_ms=median_ms, spread_ms=spread_ms,
                min_ms=min_ms, repeats=repeats, tokens_per_s=tokens_per_s, created_at=now(),
                unstable=int(instability is not None), instability=instability, remeasures=remeasures,
                load_avg=load_avg, steal_fraction=steal_fraction,
            )).last_pk)

    def trials(self, *, run_id: int | None = None, workload: Workload | None = None,
               machine_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Trial rows matching all given filters, in insertion order."""
        where, args = [], []
        if run_id is not None:
            where.append("t.run_id = ?")
            args.append(run_id)
        if workload is not None:
            where.append("w.spec = ?")
            args.append(str(workload))
        if machine_id is not None:
            where.append("t.machine_id = ?")
            args.append(machine_id)
        if status is not None:
            where.append("t.status = ?")
            args.append(status)
        sql = ("SELECT t.*, w.spec AS workload FROM trials t JOIN workloads w ON w.id = t.workload_id"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY t.id")
        return list(self.db.query(sql, args))

    def record_result(self, *, run_id: int, workload: Workload, machine_id: str, config: KernelConfig,
                      trial_id: int | None, t_inner_effective: int | None, median_ms: float,
                      spread_ms: float, tokens_per_s: float, default_median_ms: float | None,
                      speedup: float | None, equivalence_error: float, compile_s: float | None,
                      n_trials: int, n_rejected: int, n_failed: int,
                      retime: list[dict[str, Any]], speedup_low: float | None = None,
                      speedup_high: float | None = None, speedup_confidence: float | None = None,
                      busy_reason: str | None = None) -> int:
        """Store the winner of a (run, workload) after re-timing; replaces an earlier one of that run.

        ``speedup_low``/``speedup_high``: the speedup's interval at ``speedup_confidence`` (fresh paired
        rounds); ``busy_reason``: why the run is not trustworthy (``trusted`` is 0 then).
        """
        wid = self.workload_id(workload)
        with self.write() as db:
            return int(db["results"].insert(dict(
                run_id=run_id, workload_id=wid, machine_id=machine_id, trial_id=trial_id,
                config_json=config_key(config), config_key=config_key(config),
                t_inner_effective=t_inner_effective, median_ms=median_ms, spread_ms=spread_ms,
                tokens_per_s=tokens_per_s, default_median_ms=default_median_ms, speedup=speedup,
                equivalence_error=equivalence_error, compile_s=compile_s, n_trials=n_trials,
                n_rejected=n_rejected, n_failed=n_failed,
                retime_json=json.dumps(retime, sort_keys=True), created_at=now(),
                speedup_low=speedup_low, speedup_high=speedup_high, speedup_confidence=speedup_confidence,
                trusted=int(busy_reason is None), busy_reason=busy_reason,
            ), replace=True).last_pk)

    def best(self, workload: Workload, machine_id: str) -> BestConfig:
        """The best validated config for ``workload`` on ``machine_id``; raises ``NoTunedConfig``.

        Prefers the newest run's re-timed winner (``source='result'``); without one (e.g. every run
        was interrupted before re-timing) the fastest validated trial (``source='trial'``).
        """
        spec = str(workload)
        rows = list(self.db.query(
            """SELECT r.*, runs.status AS run_status, runs.started_at AS run_started_at
               FROM results r JOIN workloads w ON w.id = r.workload_id JOIN runs ON runs.id = r.run_id
               WHERE w.spec = ? AND r.machine_id = ? ORDER BY r.run_id DESC LIMIT 1""",
            [spec, machine_id]))
        if rows:
            r = rows[0]
            return BestConfig(
                workload=spec, machine_id=machine_id,
                config=KernelConfig.from_dict(json.loads(r["config_json"])),
                t_inner_effective=r["t_inner_effective"], median_ms=r["median_ms"],
                spread_ms=r["spread_ms"], tokens_per_s=r["tokens_per_s"], speedup=r["speedup"],
                default_median_ms=r["default_median_ms"], equivalence_error=r["equivalence_error"],
                compile_s=r["compile_s"], run_id=r["run_id"], run_status=r["run_status"],
                run_started_at=r["run_started_at"], source="result")
        rows = list(self.db.query(
            """SELECT t.*, runs.status AS run_status, runs.started_at AS run_started_at
               FROM trials t JOIN workloads w ON w.id = t.workload_id JOIN runs ON runs.id = t.run_id
               WHERE w.spec = ? AND t.machine_id = ? AND t.status = 'ok'
               ORDER BY t.median_ms ASC, t.id DESC LIMIT 1""", [spec, machine_id]))
        if not rows:
            raise NoTunedConfig(
                f"no tuned config for workload {spec} on machine {machine_id} in {self.path}; "
                "run `xlstm-autotune tune` on that machine first")
        t = rows[0]
        return BestConfig(
            workload=spec, machine_id=machine_id,
            config=KernelConfig.from_dict(json.loads(t["effective_json"])),
            t_inner_effective=t["t_inner_effective"], median_ms=t["median_ms"],
            spread_ms=t["spread_ms"], tokens_per_s=t["tokens_per_s"], speedup=None,
            default_median_ms=None, equivalence_error=t["equivalence_error"],
            compile_s=t["compile_s"], run_id=t["run_id"], run_status=t["run_status"],
            run_started_at=t["run_started_at"], source="trial")

    # -- probes ---------------------------------------------------------------------------------

    def record_probe(self, *, machine_id: str, torch_version: str, compile_key: str,
                     config: KernelConfig, t_inner_requested: int, t_inner_effective: int | None,
                     ok: bool, error: str | None = None, compile_s: float | None = None,
                     max_buffers: int | None = None, target: str | None = None,
                     detail: dict[str, Any] | None = None) -> int:
        """Store one compile-probe outcome (``target``: None the machine's own device, "mps" Metal)."""
        with self.write() as db:
            return int(db["probes"].insert(dict(
                machine_id=machine_id, torch=torch_version, compile_key=compile_key,
                config_json=config_key(config), t_inner_requested=t_inner_requested,
                t_inner_effective=t_inner_effective, ok=int(ok), error=error, compile_s=compile_s,
                max_buffers=max_buffers, created_at=now(), target=target,
                detail_json=None if detail is None else json.dumps(detail, sort_keys=True),
            )).last_pk)

    def probe_outcome(self, machine_id: str, torch_version: str, compile_key: str,
                      target: str | None = None) -> dict[str, Any] | None:
        """The newest stored probe of this compile key on this machine and torch, or None.

        ``target`` None: probes of the machine's own device. ``target="mps"``: Metal probes of this
        torch and key from any machine (a plan for a Mac is made from generated source, the same on
        every machine), this machine's own first (on a Mac: its real compiles).
        """
        if target is None:
            rows = list(self.db.query(
                "SELECT * FROM probes WHERE machine_id = ? AND torch = ? AND compile_key = ? AND target IS NULL "
                "ORDER BY id DESC LIMIT 1", [machine_id, torch_version, compile_key]))
        else:
            rows = list(self.db.query(
                "SELECT * FROM probes WHERE torch = ? AND compile_key = ? AND target = ? "
                "ORDER BY machine_id = ? DESC, id DESC LIMIT 1", [torch_version, compile_key, target, machine_id]))
        return rows[0] if rows else None

    # -- profiles -------------------------------------------------------------------------------

    def record_profile(self, *, machine_id: str, path: str | Path, checksum: str,
                       run_id: int | None = None, version: int | None = None) -> int:
        """Record a published profile; ``version`` None takes the next one. Returns the version."""
        with self.write() as db:
            if version is None:
                cur = self.conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM profiles WHERE machine_id = ?", (machine_id,))
                version = int(cur.fetchone()[0]) + 1
            db["profiles"].insert(dict(
                machine_id=machine_id, version=version, path=str(path), checksum=checksum,
                run_id=run_id, created_at=now()))
        return version

    def profiles(self, machine_id: str | None = None) -> list[dict[str, Any]]:
        """Published profile versions, newest first, optionally of one machine."""
        where, args = ("WHERE machine_id = ?", [machine_id]) if machine_id else ("", [])
        return list(self.db.query(f"SELECT * FROM profiles {where} ORDER BY id DESC", args))

    def latest_profile(self, machine_id: str) -> dict[str, Any] | None:
        """The newest published profile of a machine, or None."""
        rows = self.profiles(machine_id)
        return rows[0] if rows else None


def open_db(path: str | Path | None = None) -> TuningDB:
    """Open (creating or migrating) the tuning DB at ``path``, default from settings."""
    from xlstm_kernels.settings import get_settings

    s = get_settings()
    return TuningDB(path if path is not None else s.resolved_db_path(), busy_timeout_s=s.db_busy_timeout_s)


@contextlib.contextmanager
def using_db(db: TuningDB | str | Path | None = None) -> Iterator[TuningDB]:
    """``db`` itself when it is an open ``TuningDB`` (left open), else ``open_db(db)`` closed after.

    Callers that receive a caller's open DB must keep using it: a second connection that this process
    opens and closes on the same SQLite file can drop the first one's POSIX locks.
    """
    if isinstance(db, TuningDB):
        yield db
        return
    with open_db(db) as opened:
        yield opened


def this_machine_id(device: str | None = None) -> str:
    """Machine id of this machine for ``device`` (default: settings.device, else best available)."""
    from xlstm_kernels.profiles.fingerprint import fingerprint
    from xlstm_kernels.settings import get_settings

    return fingerprint(device or get_settings().device).machine_id


def query_best(workload: Workload | str, machine_id: str | None = None,
               path: str | Path | None = None) -> BestConfig:
    """The best validated config for a workload on a machine (default: this one), read-only.

    A missing database file is not created: it simply has no tuned config (``NoTunedConfig``).
    ``workload`` strings that do not parse raise ``ValueError`` naming the expected format.
    """
    from xlstm_kernels.settings import get_settings

    wl = workload if isinstance(workload, Workload) else Workload.parse(workload)
    mid = machine_id or this_machine_id()
    db_path = Path(path).expanduser() if path is not None else get_settings().resolved_db_path()
    if not db_path.exists():
        raise NoTunedConfig(f"no tuned config for workload {wl} on machine {mid}: "
                            f"no tuning database at {db_path} (run `xlstm-autotune tune` first)")
    with TuningDB(db_path, busy_timeout_s=get_settings().db_busy_timeout_s, read_only=True) as db:
        return db.best(wl, mid)
