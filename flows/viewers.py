"""Local web viewers of the tuning data, bound to loopback: optuna-dashboard over the Optuna storage (a live
view of the studies, any Optuna storage URL) and Datasette over the tuning DB (read-only, with the table
and column descriptions of ``storage.datasette_metadata``).

Both run in this process until Ctrl-C or SIGTERM, and call ``on_ready(url)`` once they accept connections.
Prefect-free: ``xlstm-autotune dashboard`` / ``db`` are thin commands over these.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

HOST = "127.0.0.1"


class ViewerError(RuntimeError):
    """A viewer could not start (port taken, storage unreadable)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread, SIGTERM stops the server the way Ctrl-C does (clean shutdown, exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _bind_error(port: int, exc: OSError) -> ViewerError:
    if exc.errno == errno.EADDRINUSE:
        return ViewerError(f"port {port} on {HOST} is in use; pass another --port, or none for a free one")
    return ViewerError(f"cannot listen on {HOST}:{port}: {exc}")


def serve_dashboard(storage_url: str, port: int = 0, on_ready: Callable[[str], None] = print) -> None:
    """Serve optuna-dashboard for ``storage_url`` on 127.0.0.1:``port`` (0: a free one) until stopped."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass  # no access log on the terminal

    try:
        app = optuna_dashboard.wsgi(storage_url)
    except Exception as exc:  # noqa: BLE001 - whatever the storage layer raised, said plainly
        raise ViewerError(f"cannot open the Optuna storage {storage_url}: {type(exc).__name__}: {exc}") from exc
    try:
        httpd = make_server(HOST, port, app, server_class=_Server, handler_class=_Quiet)
    except OSError as exc:
        raise _bind_error(port, exc) from None
    with httpd, _sigterm_as_interrupt():
        on_ready(f"http://{HOST}:{httpd.server_port}/dashboard/")
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever(poll_interval=0.2)


def datasette_app(db_path: Path) -> object:
    """A Datasette app over the tuning DB at ``db_path`` with its table/column descriptions."""
    import sqlite3

    import sqlite_utils
    from datasette.app import Datasette

    from storage import datasette_metadata

    db_path = Path(db_path)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)  # read the column names, write nothing
    try:
        db = sqlite_utils.Database(conn)
        columns = {t: [c.name for c in db[t].columns] for t in db.table_names()}
    except sqlite3.DatabaseError as exc:
        raise ViewerError(f"{db_path} is not a readable SQLite database: {exc}") from None
    finally:
        conn.close()
    return Datasette(files=[str(db_path)], metadata=datasette_metadata(db_path.stem, columns),
                     settings={"default_page_size": 50})


def serve_datasette(db_path: Path, port: int = 0, on_ready: Callable[[str], None] = print) -> None:
    """Serve Datasette over the tuning DB at ``db_path`` on 127.0.0.1:``port`` (0: a free one) until stopped."""
    import asyncio

    import uvicorn

    from .server import free_port

    db_path = Path(db_path)
    if not db_path.is_file():
        raise ViewerError(f"no tuning database at {db_path}: run `xlstm-autotune tune` first")
    ds = datasette_app(db_path)
    asyncio.run(ds.invoke_startup())
    port = port or free_port(HOST)
    server = uvicorn.Server(uvicorn.Config(ds.app(), host=HOST, port=port, log_level="warning", lifespan="on"))

    # uvicorn runs in a thread (it then leaves signals alone); this thread turns Ctrl-C/SIGTERM into its exit
    thread = threading.Thread(target=server.run, name="datasette", daemon=True)
    announced = False
    with _sigterm_as_interrupt():
        thread.start()
        try:
            while thread.is_alive():
                if server.started and not announced:
                    on_ready(f"http://{HOST}:{port}/{db_path.stem}")
                    announced = True
                thread.join(0.1)
        except KeyboardInterrupt:
            server.should_exit = True
            thread.join(15)
    if not announced:
        raise ViewerError(f"Datasette could not listen on {HOST}:{port} (in use?); pass another --port")
