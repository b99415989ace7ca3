"""Exit codes of the ``xlstm-autotune`` command line and the one way its commands report an error.

0 success; 1 the work ran but failed (a workload failed, a report could not be made); 2 bad usage or
bad input (a workload that does not parse, a heads_per_band that does not divide NH, a file that is
not a tuning DB or profile); 3 the Prefect server is unavailable; 4 the machine is locked by another
tuning run; 5 refused before allocating: the memory estimate exceeds the limit; 6 a file or directory
cannot be written (read-only home, permissions) — nothing was changed. docs/hardening.md lists them.
"""

from __future__ import annotations

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_LOCKED = 0, 1, 2, 3, 4
EXIT_TOO_LARGE, EXIT_UNWRITABLE = 5, 6


def error_exit(message: str, code: int) -> typer.Exit:
    """Print ``xlstm-autotune: <message>`` on stderr and return the ``typer.Exit`` to raise with ``code``.

    The one error printer of the command line: every command reports a refusal this way.
    """
    typer.secho(f"xlstm-autotune: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=code)


def run_error_code(exc: BaseException) -> int | None:
    """Exit code of a tuning run's failure (``tune``, ``tune --model``), or None for other errors.

    Checked in order: a subclass is listed before the class it refines (unwritable before storage).
    """
    from storage import DatabaseUnavailable, StorageError
    from xlstm_kernels.kernels.validation import WorkloadTooLarge

    from tuner import LockUnwritable, TuneLocked

    from .flows import AutotuneCrashed
    from .server import ServerUnavailable

    for types, code in ((AutotuneCrashed, EXIT_FAILED), (WorkloadTooLarge, EXIT_TOO_LARGE),
                        ((DatabaseUnavailable, LockUnwritable), EXIT_UNWRITABLE), (StorageError, EXIT_USAGE),
                        (ServerUnavailable, EXIT_SERVER), (TuneLocked, EXIT_LOCKED)):
        if isinstance(exc, types):
            return code
    return None
