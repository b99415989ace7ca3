"""The compile-probe (``ratchet``: the former ``probe.py``), code scanning and Metal code generation."""

from .ratchet import *  # noqa: F401,F403 - the probe's names, as ``xlstm_kernels.probe`` had them
