"""Compile-probe under Metal's per-kernel limits, the ``T_inner`` ratchet, and the fusion report.

``probe(config, workload)`` compiles the candidate's block for real and runs one tile. A failure is
classified (``FAILURE_KINDS``): Metal buffer/argument limit, threadgroup-memory limit, other compiler
error, graph break (a silent eager fallback counts as one), timeout, compiler crash, out of memory. On
a limit failure ``T_inner`` is ratcheted down the ladder (16 -> 8 -> 4 -> 2 -> 1) with the logical
``chunk_size`` untouched, until a value compiles.

Besides real errors, the probe reads the code Inductor generated (``codegen_scan``) and counts buffer
arguments per kernel; with a buffer limit set (setting ``max_buffers``; default Metal's 31 on MPS,
off elsewhere) a kernel over the limit fails the step exactly as Metal would, so the ratchet runs
(and is tested) on machines without a Mac. Before stepping down, Inductor's own knob
``max_fusion_unique_io_buffers`` is tried at the same ``T_inner``; the result says whether it was needed.

Faults: with ``isolate=True`` each attempt compiles in a child process bounded by
``compile_timeout_s`` (a hang is killed, a compiler crash becomes a ``crash`` result). In-process
(``isolate=False``, cheaper) exceptions are caught but a hang is not bounded. Probes never use the
shared ``compiler.CACHE``, so a failed compile leaves no entry behind.

Metal without a Mac: ``target="mps"`` probes for Metal on any machine. Off-Mac each ratchet step
generates the block's real Metal source with Inductor's MPS code generator (``metal_codegen``, fake
MPS tensors) and checks its kernels statically: buffer arguments against the limit (31) and declared
threadgroup memory against ``metal_threadgroup_memory_limit``; nothing is compiled by Metal or run
(``ProbeResult.method == "codegen"``). On a Mac (MPS available) ``target="mps"`` is the real compile on
the MPS device: the same static check runs on the source Inductor compiles, and a real Metal compile
failure counts as well. The error signatures come from PyTorch's MPS issues
(``tests/data/probe_error_texts.json`` quotes them); the Metal compiler itself, execution and timing
have never run on Apple hardware in this project.

Modules: ``errors`` (failure kinds, their exceptions, ``classify_error``), ``output_code`` (capturing
Inductor's output code), ``tile`` (one tile's inputs), ``attempt`` (one compile attempt and the static
limit check), ``runners`` (in-process, child-process, generated-Metal attempts; ``_worker`` is the
child), ``result`` (``ProbeResult``), ``cache`` (``ProbeCache``), ``ratchet`` (``probe``), ``fusion``
(``fuse_report``), ``codegen_scan`` (reading kernels out of output code), ``metal_codegen`` (Inductor's
MPS code generator off-Mac).
"""

from .attempt import Attempt, compile_and_scan, static_check
from .cache import PROBE_CACHE, ProbeCache
from .errors import (
    ERRORS,
    FAILURE_KINDS,
    LIMIT_KINDS,
    BufferLimitError,
    CompilerCrashError,
    CompilerError,
    CompileTimeoutError,
    FailureKind,
    GraphBreakError,
    ProbeError,
    ProbeOutOfMemoryError,
    ThreadgroupMemoryError,
    classify_error,
)
from .fusion import FuseReport, fuse_report, graph_breaks
from .output_code import capture_output_code
from .ratchet import EPS, TARGETS, probe, resolve_max_buffers, t_inner_ladder
from .result import FUSION_KNOB, ProbeResult, ProbeStep
from .runners import key_from_dict, key_to_dict
from .tile import tile_inputs, tile_span

__all__ = [
    "Attempt",
    "BufferLimitError",
    "CompileTimeoutError",
    "CompilerCrashError",
    "CompilerError",
    "EPS",
    "ERRORS",
    "FAILURE_KINDS",
    "FUSION_KNOB",
    "FailureKind",
    "FuseReport",
    "GraphBreakError",
    "LIMIT_KINDS",
    "PROBE_CACHE",
    "ProbeCache",
    "ProbeError",
    "ProbeOutOfMemoryError",
    "ProbeResult",
    "ProbeStep",
    "TARGETS",
    "ThreadgroupMemoryError",
    "capture_output_code",
    "classify_error",
    "compile_and_scan",
    "fuse_report",
    "graph_breaks",
    "key_from_dict",
    "key_to_dict",
    "probe",
    "resolve_max_buffers",
    "static_check",
    "t_inner_ladder",
    "tile_inputs",
    "tile_span",
]
