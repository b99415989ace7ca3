"""``xlstm-autotune dashboard`` and ``xlstm-autotune db``: local viewers of the tuning data (``flows.viewers``)."""

from __future__ import annotations

from typing import Optional

import typer

from .exits import EXIT_FAILED, EXIT_OK, error_exit


def dashboard(
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port on 127.0.0.1 (default: a free one)."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna storage URL (default: the tuner's, e.g. sqlite:///HOME/tuning.optuna.db; "
        "a fleet's postgresql://... works too)."
    ),
) -> None:
    """Open optuna-dashboard, a live view of the tuning studies, on 127.0.0.1; Ctrl-C stops it."""
    from tuner import NoStorage, existing_storage_url
    from .settings import FlowSettings

    from .viewers import ViewerError, serve_dashboard

    try:
        url = existing_storage_url(FlowSettings(), storage)
        serve_dashboard(url, port, on_ready=lambda u: typer.echo(f"optuna-dashboard of {_shown(url)} at {u}"
                                                                 " (Ctrl-C stops it)"))
    except (NoStorage, ViewerError) as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    typer.echo("dashboard stopped")
    raise typer.Exit(EXIT_OK)


def db(
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port on 127.0.0.1 (default: a free one)."),
) -> None:
    """Browse the tuning DB (HOME/tuning.db) read-only in Datasette, tables and columns described; Ctrl-C stops it."""
    from .settings import FlowSettings

    from .viewers import ViewerError, serve_datasette

    path = FlowSettings().resolved_db_path()
    try:
        serve_datasette(path, port, on_ready=lambda u: typer.echo(f"Datasette of {path} at {u} (Ctrl-C stops it)"))
    except ViewerError as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    typer.echo("db viewer stopped")
    raise typer.Exit(EXIT_OK)


def _shown(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show it as given
        return url
