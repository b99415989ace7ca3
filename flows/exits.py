"""Exit codes of the ``xlstm-autotune`` command line and the one way its commands report an error.

0 success; 1 the work ran but failed (a workload failed, a report could not be made); 2 bad usage;
3 the Prefect server is unavailable; 4 the machine is locked by another tuning run.
"""

from __future__ import annotations

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_LOCKED = 0, 1, 2, 3, 4


def error_exit(message: str, code: int) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the ``typer.Exit`` to raise with ``code``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)
