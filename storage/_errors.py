"""Named failures of the tuning database; the CLI turns each into a clear message."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every tuning-database error."""


class NotADatabase(StorageError):
    """The file exists but is not an SQLite tuning database (it is left untouched)."""


class SchemaTooNew(StorageError):
    """The database was written by a newer xlstm-autotune (its schema version is unknown here)."""


class DatabaseUnavailable(StorageError):
    """The database file cannot be opened or written (read-only directory, permissions); nothing changed."""


class NoTunedConfig(StorageError):
    """No validated config is recorded for this workload on this machine."""


class UnknownRun(StorageError):
    """No tuning run has the given id."""
