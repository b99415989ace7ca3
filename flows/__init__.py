"""Prefect flows and the ``xlstm-autotune`` command line."""
