"""Probe failure kinds: one named exception each, and the rule that classifies a compile/run error."""

from __future__ import annotations

import re
import subprocess
from typing import Literal, get_args

from ..device import is_out_of_memory

FailureKind = Literal[
    "buffer_limit", "threadgroup_memory", "compiler_error", "graph_break", "timeout", "crash", "out_of_memory"
]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
LIMIT_KINDS = frozenset({"buffer_limit", "threadgroup_memory"})  # these ratchet T_inner down

# ---------------------------------------------------------------------------------------------------
# Failure kinds: one exception each (raised by ProbeResult.raise_for_failure / the CLI translates them)

class ProbeError(Exception):
    """A probe failed; ``kind`` is one of ``FAILURE_KINDS``."""

    kind: str = "compiler_error"


class BufferLimitError(ProbeError):
    """A kernel needs more buffer arguments than the device (or the emulated limit) allows."""

    kind = "buffer_limit"


class ThreadgroupMemoryError(ProbeError):
    """A kernel needs more threadgroup (shared) memory or launch resources than the device has."""

    kind = "threadgroup_memory"


class CompilerError(ProbeError):
    """Inductor or the backend compiler rejected the graph for another reason."""

    kind = "compiler_error"


class GraphBreakError(ProbeError):
    """Dynamo broke the graph, or ran it eagerly: the pseudo-kernel is not one compiled region."""

    kind = "graph_break"


class CompileTimeoutError(ProbeError):
    """The compile did not finish within ``compile_timeout_s``."""

    kind = "timeout"


class CompilerCrashError(ProbeError):
    """The compiling process died (signal or hard exit) without a Python exception."""

    kind = "crash"


class ProbeOutOfMemoryError(ProbeError):
    """Running the probe tile ran out of device memory."""

    kind = "out_of_memory"


ERRORS: dict[str, type[ProbeError]] = {
    cls.kind: cls for cls in (BufferLimitError, ThreadgroupMemoryError, CompilerError, GraphBreakError,
                              CompileTimeoutError, CompilerCrashError, ProbeOutOfMemoryError)
}

# Signatures of real limit failures. Metal's shader compiler (inside an InductorError on MPS), Triton
# and CUDA word them differently; all are matched case-insensitively.
_BUFFER_LIMIT_PATTERNS = (
    r"number of (?:constant )?buffers exceeds maximum supported",  # Metal: "... supported (31)"
    r"no '?buffer'? resource location available",  # Metal: no [[buffer(n)]] slot left
    r"exceeds? (?:the )?maximum number of (?:buffer|argument)s?",
    r"too many (?:buffer )?arguments",
)
_THREADGROUP_PATTERNS = (
    r"threadgroup memory[^\n]*exceed",
    r"exceed[^\n]*threadgroup memory",
    r"out of resource: shared memory",  # Triton's OutOfResources on CUDA
    r"too many resources requested for launch",  # CUDA launch resources
)
_GRAPH_BREAK_PATTERNS = (r"graph break", r"torch\._dynamo\.exc\.Unsupported")


def classify_error(error: BaseException | str) -> FailureKind:
    """The failure kind of a compile/run error (or of its recorded text)."""
    text = error if isinstance(error, str) else f"{type(error).__module__}.{type(error).__name__}: {error}"
    if isinstance(error, ProbeError):
        return error.kind  # type: ignore[return-value]
    if isinstance(error, BaseException) and is_out_of_memory(error):
        return "out_of_memory"
    if any(re.search(p, text, re.IGNORECASE) for p in _BUFFER_LIMIT_PATTERNS):
        return "buffer_limit"
    if any(re.search(p, text, re.IGNORECASE) for p in _THREADGROUP_PATTERNS):
        return "threadgroup_memory"
    if isinstance(error, BaseException):
        from torch._dynamo.exc import Unsupported

        if isinstance(error, Unsupported):
            return "graph_break"
    if any(re.search(p, text, re.IGNORECASE) for p in _GRAPH_BREAK_PATTERNS):
        return "graph_break"
    if isinstance(error, (TimeoutError, subprocess.TimeoutExpired)):
        return "timeout"
    if isinstance(error, str) and "out of memory" in text.lower():
        return "out_of_memory"
    return "compiler_error"
