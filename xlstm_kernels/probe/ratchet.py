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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from .codegen_scan import CodeScan, KernelInfo, UnknownThreadgroupType, scan_output_code
from ..kernels.compiler import CompileKey, block_fn, fresh_code_copy, unique_graphs, build_compiled
from ..kernels.config import T_INNER_LADDER, KernelConfig, Workload
from ..device import default_device, is_out_of_memory, synchronize
from ..kernels.drivers import kernel_dtype, kernel_key, plan
from ..kernels.reference import rel_err
from ..settings import get_settings

log = logging.getLogger(__name__)

FailureKind = Literal[
    "buffer_limit", "threadgroup_memory", "compiler_error", "graph_break", "timeout", "crash", "out_of_memory"
]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
LIMIT_KINDS = frozenset({"buffer_limit", "threadgroup_memory"})  # these ratchet T_inner down
FUSION_KNOB = "max_fusion_unique_io_buffers"
EPS = 1e-6
TARGETS: tuple[str, ...] = ("mps",)  # probe targets other than the device itself


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


# ---------------------------------------------------------------------------------------------------
# One attempt: compile a block for real, capture Inductor's output code, run one tile

@dataclass
class Attempt:
    """The outcome of compiling one block and running one tile."""

    ok: bool
    kind: str | None = None
    message: str = ""
    scan: CodeScan | None = None
    graphs: int = 0
    compile_s: float | None = None
    tile_rel_err: float | None = None  # compiled vs eager on the same tile

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "ok": self.ok, "kind": self.kind, "message": self.message,
            "scan": self.scan.to_dict() if self.scan else None, "graphs": self.graphs,
            "compile_s": self.compile_s, "tile_rel_err": self.tile_rel_err,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        """Inverse of ``to_dict``."""
        scan = d.get("scan")
        if scan is not None:
            kernels = tuple(
                KernelInfo(k["name"], k["lang"], k["buffers"], k["args"], tuple(k.get("buffer_names", ())),
                           k.get("threadgroup_bytes", 0))
                for k in scan["kernels"]
            )
            scan = CodeScan(graphs=scan["graphs"], kernels=kernels)
        return cls(ok=d["ok"], kind=d.get("kind"), message=d.get("message", ""), scan=scan,
                   graphs=d.get("graphs", 0), compile_s=d.get("compile_s"), tile_rel_err=d.get("tile_rel_err"))


_CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def capture_output_code() -> Iterator[list[str]]:
    """Collect the output code of every graph Inductor compiles (or loads from its cache) meanwhile.

    Unlike ``torch._inductor.utils.run_and_get_code`` this does not reset Dynamo, so compiled kernels
    elsewhere in the process stay compiled.
    """
    from torch._inductor.graph import GraphLowering

    codes: list[str] = []
    with _CAPTURE_LOCK:
        previous = GraphLowering.save_output_code

        def save(code: str) -> None:
            codes.append(code)
            if previous is not None:
                previous(code)

        GraphLowering.save_output_code = save  # type: ignore[assignment]
        try:
            yield codes
        finally:
            GraphLowering.save_output_code = previous  # type: ignore[assignment]


def tile_span(key: CompileKey) -> int:
    """Time steps in one tile of ``key``'s block (t_inner units of 1 step or chunk_size steps)."""
    if key.family == "step":
        raise ValueError("the decode step has no tile; probe the recurrent or chunkwise family")
    return key.t_inner * (key.chunk_size if key.family == "chunkwise" else 1)


def tile_inputs(key: CompileKey, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs and zero states for one tile of ``key``'s block, on ``key.device``."""
    from ..kernels.config import DTYPES

    g = torch.Generator().manual_seed(seed)
    B, H, T, dq, dv = key.B, key.heads, tile_span(key), key.DHQK, key.DHV
    dt = DTYPES[key.dtype]
    q, k = torch.randn(B, H, T, dq, generator=g), torch.randn(B, H, T, dq, generator=g)
    v = torch.randn(B, H, T, dv, generator=g)
    i, f = torch.randn(B, H, T, generator=g), torch.randn(B, H, T, generator=g) + 2.0
    c, n, m = torch.zeros(B, H, dq, dv), torch.zeros(B, H, dq), torch.zeros(B, H, 1)
    dev = torch.device(key.device)
    return tuple(x.to(dev, dt) for x in (q, k, v)) + tuple(x.to(dev) for x in (i, f, c, n, m))


def _rel_err(x: Any, ref: Any) -> float:
    xs = x if isinstance(x, (tuple, list)) else (x,)
    rs = ref if isinstance(ref, (tuple, list)) else (ref,)
    return max((rel_err(a, b) for a, b in zip(xs, rs)), default=0.0)


def compile_and_scan(key: CompileKey, max_buffers: int | None = None,
                     fn: Callable[..., Any] | None = None,
                     args: tuple[torch.Tensor, ...] | None = None) -> Attempt:
    """Compile ``fn`` (default: ``key``'s block) as ``key`` says, run it on one tile, scan the kernels.

    Never raises for a compile/run failure: the attempt says what happened. ``max_buffers`` makes a
    kernel with more buffer arguments fail with ``buffer_limit``, as Metal would; on MPS a kernel
    declaring more threadgroup memory than ``metal_threadgroup_memory_limit`` fails likewise.
    """
    eager = fn if fn is not None else fresh_code_copy(block_fn(key), key.tag())
    # The C++ wrapper's output code lists each kernel twice and changes none, so probe without it.
    compiled = build_compiled(dataclasses.replace(key, cpp_wrapper=False), fresh_code_copy(eager, key.tag()))
    args = args if args is not None else tile_inputs(key)
    before = unique_graphs()
    t0 = time.perf_counter()
    with capture_output_code() as codes:
        try:
            with torch.no_grad():
                out = compiled(*args)
                synchronize(key.device)
        except Exception as exc:  # a compiler crash must not kill the caller
            if "no compiled frames" in str(exc):  # torch >= 2.12 with Dynamo disabled: eager fallback
                out = None
            else:
                scan = _scan_or_none(codes)
                return Attempt(ok=False, kind=classify_error(exc), message=_short(exc), scan=scan,
                               graphs=unique_graphs() - before, compile_s=time.perf_counter() - t0)
    compile_s = time.perf_counter() - t0
    graphs = unique_graphs() - before
    try:
        scan = scan_output_code(list(codes))
    except UnknownThreadgroupType as exc:  # a Metal type the scanner cannot size: say so, do not guess
        return Attempt(ok=False, kind="compiler_error", message=str(exc), graphs=graphs, compile_s=compile_s)
    if graphs == 0:
        return Attempt(ok=False, kind="graph_break", scan=scan, graphs=0, compile_s=compile_s,
                       message="torch.compile produced no graph: the block ran eagerly (silent eager "
                               "fallback, e.g. Dynamo disabled)")
    tg_limit = get_settings().metal_threadgroup_memory_limit if torch.device(key.device).type == "mps" else None
    failed = static_check(scan, max_buffers, tg_limit, graphs=graphs, compile_s=compile_s)
    if failed is not None:
        return failed
    with torch.no_grad():
        ref = eager(*args)
    return Attempt(ok=True, scan=scan, graphs=graphs, compile_s=compile_s, tile_rel_err=_rel_err(out, ref))


def _scan_or_none(codes: list[str]) -> CodeScan | None:
    """The scan of ``codes``, or None where the scanner cannot size a Metal type (the error wins)."""
    try:
        return scan_output_code(list(codes))
    except UnknownThreadgroupType:
        return None


def static_check(scan: CodeScan, max_buffers: int | None, threadgroup_limit: int | None = None, *,
                 graphs: int = 1, compile_s: float | None = None) -> Attempt | None:
    """The failed attempt when a kernel of ``scan`` is over the buffer or threadgroup-memory limit, else None."""
    over = scan.over_limit(max_buffers)
    if over:
        worst = max(over, key=lambda k: k.buffers)
        return Attempt(ok=False, kind="buffer_limit", scan=scan, graphs=graphs, compile_s=compile_s,
                       message=f"{len(over)} kernel(s) over the buffer limit {max_buffers}: {worst.name} "
                               f"has {worst.buffers} buffer arguments (static check)")
    tg_over = scan.over_threadgroup_limit(threadgroup_limit)
    if tg_over:
        worst = max(tg_over, key=lambda k: k.threadgroup_bytes)
        return Attempt(ok=False, kind="threadgroup_memory", scan=scan, graphs=graphs, compile_s=compile_s,
                       message=f"{len(tg_over)} kernel(s) over the threadgroup memory limit {threadgroup_limit} "
                               f"bytes: {worst.name} declares {worst.threadgroup_bytes} (static check)")
    return None


def _short(exc: BaseException, limit: int = 2000) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2:]


# ---------------------------------------------------------------------------------------------------
# Runners: in-process, or a child process bounded by a timeout

class _MetalCodegenRunner:
    """Attempts without compiling: the block's generated Metal source, checked statically (any machine)."""

    def __init__(self, threadgroup_limit: int | None) -> None:
        self.threadgroup_limit = threadgroup_limit

    def attempt(self, key: CompileKey, max_buffers: int | None) -> Attempt:
        from .metal_codegen import block_metal_scan

        try:
            scan = block_metal_scan(key)  # MetalCodegenUnavailable propagates: the probe cannot tell
        except UnknownThreadgroupType as exc:
            return Attempt(ok=False, kind="compiler_error", message=str(exc))
        failed = static_check(scan, max_buffers, self.threadgroup_limit)
        return failed or Attempt(ok=True, scan=scan, graphs=1)

    def close(self) -> None:
        pass


class _InProcessRunner:
    def attempt(self, key: CompileKey, max_buffers: int | None) -> Attempt:
        return compile_and_scan(key, max_buffers)

    def close(self) -> None:
        pass


def key_to_dict(key: CompileKey) -> dict[str, Any]:
    """JSON form of a compile key."""
    d = dataclasses.asdict(key)
    d["inductor_options"] = [list(kv) for kv in key.inductor_options]
    return d


def key_from_dict(d: dict[str, Any]) -> CompileKey:
    """Inverse of ``key_to_dict``."""
    d = dict(d)
    d["inductor_options"] = tuple(tuple(kv) for kv in d.get("inductor_options", ()))
    return CompileKey(**d)


class _ChildRunner:
    """Attempts in one child process (``python -m xlstm_kernels.probe._worker``), each bounded in time."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def _start(self) -> subprocess.Popen[str]:
        root = str(Path(__file__).resolve().parents[2])  # the directory holding xlstm_kernels
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen(
            [sys.executable, "-m", "xlstm_kernels.probe._worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, start_new_session=True,
        )

        lines: queue.Queue[str | None] = queue.Queue()  # fresh per child: no stale EOF from a killed one
        self._lines = lines

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        return proc

    def _await(self, prefix: str, bound_s: float, what: str) -> str | Attempt:
        """The child's next stdout line starting with ``prefix`` within ``bound_s`` seconds; else an
        Attempt: a timeout (``what`` says which bound; the child is killed) or a crash."""
        deadline = time.monotonic() + bound_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._kill()
                return Attempt(ok=False, kind="timeout", message=f"{what} (child process killed)")
            if line is None:
                return self._crashed()
            if line.startswith(prefix):
                return line
            # anything else on stdout is noise from the compiler: ignore it

    def _ready(self) -> Attempt | None:
        """Start the child and wait for its ``@@ready``; an Attempt when it never got there."""
        self.proc = self._start()
        bound = get_settings().probe_startup_timeout_s
        got = self._await("@@ready", bound, f"probe child process did not start within probe_startup_timeout_s={bound:g}s")
        return got if isinstance(got, Attempt) else None

    def attempt(self, key: CompileKey, max_buffers: int | None) -> Attempt:
        if self.proc is None and (failed := self._ready()) is not None:
            return failed
        proc = self.proc
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps({"key": key_to_dict(key), "max_buffers": max_buffers}) + "\n")
            proc.stdin.flush()
        except OSError:
            return self._crashed()
        got = self._await("@@probe ", self.timeout_s, f"compile did not finish within compile_timeout_s={self.timeout_s:g}s")
        return got if isinstance(got, Attempt) else Attempt.from_dict(json.loads(got[len("@@probe "):]))

    def _crashed(self) -> Attempt:
        proc = self.proc
        rc = proc.wait(timeout=30) if proc is not None else None
        self.proc = None
        self._stderr.seek(0)
        tail = self._stderr.read()[-1500:]
        how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        return Attempt(ok=False, kind="crash", message=f"compiler process died ({how}); stderr tail:\n{tail}")

    def _kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None
        self._stderr.close()


# ---------------------------------------------------------------------------------------------------
# The ratchet

@dataclass(frozen=True)
class ProbeStep:
    """One compile attempt of the ratchet."""

    t_inner: int  # the config's T_inner at this step
    compiled_t_inner: int  # units in the compiled block (capped by the sequence length)
    inductor_options: tuple[tuple[str, Any], ...]
    ok: bool
    kind: str | None
    message: str
    kernel_count: int | None
    max_kernel_buffers: int | None
    graphs: int
    compile_s: float | None
    max_threadgroup_bytes: int = 0  # Metal: largest threadgroup memory a kernel declares

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = dataclasses.asdict(self)
        d["inductor_options"] = dict(self.inductor_options)
        return d


@dataclass(frozen=True)
class ProbeResult:
    """Requested vs effective config, every ratchet step, and the effective compile's kernels."""

    requested: KernelConfig
    effective: KernelConfig | None  # None when no T_inner compiled
    workload: Workload
    device: str
    max_buffers: int | None  # buffer limit of the static check (None: off)
    ok: bool
    failure: str | None  # kind of the failure that ended the probe
    message: str
    steps: tuple[ProbeStep, ...]
    fusion_knob_needed: bool
    inductor_options: tuple[tuple[str, Any], ...]  # what the effective config needs at compile time
    kernels: CodeScan | None
    tile_rel_err: float | None
    machine_id: str
    cached: bool = False
    target: str | None = None  # None: the device itself; "mps": Metal (see ``method``)
    method: str = "compile"  # "compile": compiled and run one tile; "codegen": generated Metal, checked statically

    @property
    def requested_t_inner(self) -> int:
        """T_inner asked for."""
        return self.requested.t_inner

    @property
    def effective_t_inner(self) -> int | None:
        """T_inner that compiled (None if none did)."""
        return self.effective.t_inner if self.effective else None

    @property
    def ratchet(self) -> list[int]:
        """The distinct T_inner values tried, in order (``steps`` also shows the fusion-knob retries)."""
        out: list[int] = []
        for s in self.steps:
            if not out or out[-1] != s.t_inner:
                out.append(s.t_inner)
        return out

    def raise_for_failure(self) -> None:
        """Raise the named ``ProbeError`` subclass of the failure, if the probe failed."""
        if not self.ok:
            raise ERRORS.get(self.failure or "compiler_error", CompilerError)(
                f"probe of {self.requested.short()} on {self.workload} ({self.device}) failed: "
                f"{self.failure}: {self.message}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "ok": self.ok, "failure": self.failure, "message": self.message,
            "workload": str(self.workload), "device": self.device, "machine_id": self.machine_id,
            "max_buffers": self.max_buffers,
            "requested": self.requested.to_dict(),
            "effective": self.effective.to_dict() if self.effective else None,
            "requested_t_inner": self.requested_t_inner, "effective_t_inner": self.effective_t_inner,
            "ratchet": self.ratchet, "steps": [s.to_dict() for s in self.steps],
            "fusion_knob_needed": self.fusion_knob_needed,
            "inductor_options": dict(self.inductor_options),
            "kernels": self.kernels.to_dict() if self.kernels else None,
            "tile_rel_err": self.tile_rel_err, "cached": self.cached,
            "target": self.target, "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        """Inverse of ``to_dict`` (for storing probe outcomes, e.g. in the tuning DB)."""
        steps = tuple(
            ProbeStep(**{**st, "inductor_options": tuple(st["inductor_options"].items())}) for st in d["steps"]
        )
        kernels = Attempt.from_dict({"ok": True, "scan": d["kernels"]}).scan if d.get("kernels") else None
        return cls(
            requested=KernelConfig.from_dict(d["requested"]),
            effective=KernelConfig.from_dict(d["effective"]) if d.get("effective") else None,
            workload=Workload.parse(d["workload"]), device=d["device"], max_buffers=d["max_buffers"], ok=d["ok"],
            failure=d["failure"], message=d["message"], steps=steps, fusion_knob_needed=d["fusion_knob_needed"],
            inductor_options=tuple(d["inductor_options"].items()), kernels=kernels,
            tile_rel_err=d.get("tile_rel_err"), machine_id=d["machine_id"], cached=d.get("cached", False),
            target=d.get("target"), method=d.get("method", "compile"),
        )

    def format_text(self) -> str:
        """Human-readable ratchet, one line per step."""
        lim = "off" if self.max_buffers is None else str(self.max_buffers)
        how = " (generated Metal, checked statically: not compiled, not run)" if self.method == "codegen" else ""
        lines = [f"probe {self.requested.short()} on {self.workload} [{self.device}], buffer limit {lim}"
                 + how + (" (cached)" if self.cached else "")]
        for s in self.steps:
            knob = f" +{FUSION_KNOB}={dict(s.inductor_options)[FUSION_KNOB]}" if s.inductor_options else ""
            status = "ok" if s.ok else f"FAIL {s.kind}"
            kern = "" if s.kernel_count is None else f" kernels={s.kernel_count} max_buffers={s.max_kernel_buffers}"
            if s.kernel_count is not None and s.max_threadgroup_bytes:
                kern += f" threadgroup_bytes={s.max_threadgroup_bytes}"
            cs = "" if s.compile_s is None else f" {s.compile_s:.1f}s"
            lines.append(f"  T_inner={s.t_inner:<3}{knob}: {status}{kern}{cs}")
            if not s.ok and s.message:
                lines.append("      " + s.message.splitlines()[0][:200])
        if self.ok:
            lines.append(f"=> effective T_inner {self.effective_t_inner} (requested {self.requested_t_inner})"
                         f"; fusion knob needed: {'yes' if self.fusion_knob_needed else 'no'}")
        else:
            lines.append(f"=> FAILED ({self.failure}): no T_inner compiled")
        return "\n".join(lines)


class ProbeCache:
    """In-memory probe outcomes by (machine, device, workload, config, limit, knob); thread-safe.

    Timeouts and crashes are not cached (they may be load-dependent); every other outcome is, so a
    known failure is not compiled again. The tuning DB can back this once ``storage`` stores probes.
    """

    def __init__(self) -> None:
        self._results: dict[tuple[Any, ...], ProbeResult] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> ProbeResult | None:
        """The cached result for ``key``, if any."""
        with self._lock:
            return self._results.get(key)

    def put(self, key: tuple[Any, ...], result: ProbeResult) -> None:
        """Remember ``result`` unless it ended in a timeout or a crash."""
        if result.failure in ("timeout", "crash"):
            return
        with self._lock:
            self._results[key] = result

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._results.clear()

    def __len__(self) -> int:
        return len(self._results)


PROBE_CACHE = ProbeCache()


@functools.lru_cache(maxsize=8)
def _machine_id(device: str) -> str:
    from ..profiles.fingerprint import fingerprint

    return fingerprint(device).machine_id


def resolve_max_buffers(max_buffers: int | None | str, device: torch.device) -> int | None:
    """The buffer limit to enforce: explicit int, None (off), or "auto" (setting, else 31 on MPS)."""
    if max_buffers == "auto":
        s = get_settings()
        if s.max_buffers is not None:
            return s.max_buffers
        return s.metal_buffer_limit if device.type == "mps" else None
    if max_buffers is None:
        return None
    if isinstance(max_buffers, bool) or not isinstance(max_buffers, int) or max_buffers < 1:
        raise ValueError(f"max_buffers must be a positive int, None (off) or 'auto', got {max_buffers!r}")
    return max_buffers


def t_inner_ladder(config: KernelConfig) -> list[int]:
    """T_inner values to try: the requested one, then the smaller ladder values valid for ``config``."""
    values = [config.t_inner] + [t for t in T_INNER_LADDER if t < config.t_inner]
    if config.family == "recurrent":  # the driver tile must stay a multiple of T_inner
        values = [t for t in values if config.chunk_size % t == 0]
    return values


def probe(
    config: KernelConfig,
    workload: Workload,
    *,
    device: torch.device | str | None = None,
    max_buffers: int | None | str = "auto",
    fusion_knob: bool = True,
    isolate: bool = False,
    timeout_s: float | None = None,
    cache: ProbeCache | None = PROBE_CACHE,
    target: str | None = None,
) -> ProbeResult:
    """Compile ``config`` for one tile of ``workload`` for real, ratcheting ``T_inner`` down on limit failures.

    ``target``: None probes ``device``; "mps" probes for Metal: on a Mac the real compile on MPS, on any
    other machine the generated Metal source checked statically (raises ``MetalCodegenUnavailable``
    when this torch cannot generate it).
    ``max_buffers``: static buffer-argument limit ("auto": setting, else 31 on MPS, off elsewhere).
    ``fusion_knob``: before stepping down, retry with Inductor's ``max_fusion_unique_io_buffers``.
    ``isolate``: compile in a child process bounded by ``timeout_s`` (default ``compile_timeout_s``).
    ``cache``: known outcomes are returned without compiling (``cached=True``); None disables it.
    """
    if not isinstance(config, KernelConfig):
        raise ValueError(f"config must be a KernelConfig, got {type(config).__name__}")
    if not isinstance(workload, Workload):
        raise ValueError(f"workload must be a Workload, got {type(workload).__name__}")
    dev, codegen = _probe_device(device, target)
    limit = resolve_max_buffers(max_buffers, dev)
    config.bands(workload.NH)  # heads_per_band must divide NH
    if workload.mode == "decode" and codegen:
        raise ValueError("a decode workload runs the step, which has no tile to probe; probe a prefill workload")
    if not codegen:  # generated Metal source allocates nothing on this machine
        _check_tile_memory(config, workload, dev)
    timeout = get_settings().compile_timeout_s if timeout_s is None else float(timeout_s)
    if timeout <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    host = torch.device(get_settings().device or default_device()) if codegen else dev
    machine = _machine_id(str(host))  # codegen: the machine that generated the source
    tg_limit = get_settings().metal_threadgroup_memory_limit if codegen else None
    ckey = (machine, str(dev), str(workload), tuple(sorted(config.to_dict().items())), limit, fusion_knob,
            target, codegen, tg_limit)
    if cache is not None and (hit := cache.get(ckey)) is not None:
        return dataclasses.replace(hit, cached=True)

    kdtype = kernel_dtype(config, workload.torch_dtype, dev)  # what xk.mlstm feeds the region
    knob_value = limit if limit is not None else get_settings().metal_buffer_limit
    runner: _InProcessRunner | _ChildRunner | _MetalCodegenRunner
    if codegen:
        runner = _MetalCodegenRunner(tg_limit)
    else:
        runner = _ChildRunner(timeout) if isolate else _InProcessRunner()
    method = "codegen" if codegen else "compile"
    steps: list[ProbeStep] = []
    seen: set[CompileKey] = set()
    last: Attempt | None = None
    try:
        for t in t_inner_ladder(config):
            cfg = config.replace(t_inner=t)
            p = plan(cfg, workload.NH, workload.S)
            key = kernel_key(cfg, p, workload.B, workload.DHQK, workload.DHV, kdtype, dev, EPS)
            variants = [key]
            if fusion_knob:
                variants.append(dataclasses.replace(key, inductor_options=((FUSION_KNOB, knob_value),)))
            for k in variants:
                if k in seen:  # same compiled block as an earlier step (short sequence): known outcome
                    continue
                seen.add(k)
                if k is not key and (last is None or last.kind != "buffer_limit"):
                    continue  # the knob only helps buffer limits
                last = runner.attempt(k, limit)
                steps.append(_step(t, p.t_inner, k, last))
                log.info("probe %s T_inner=%d %s: %s", config.short(), t, dict(k.inductor_options),
                         "ok" if last.ok else last.kind)
                if last.ok:
                    result = dataclasses.replace(_result(config, cfg, workload, dev, limit, steps, k, last, machine),
                                                 target=target, method=method)
                    if cache is not None:
                        cache.put(ckey, result)
                    return result
                if last.kind not in LIMIT_KINDS:
                    break
            if last is not None and last.kind not in LIMIT_KINDS:
                break
    finally:
        runner.close()
    result = ProbeResult(
        requested=config, effective=None, workload=workload, device=str(dev), max_buffers=limit, ok=False,
        failure=last.kind if last else "compiler_error",
        message=last.message if last else f"no T_inner value is valid for {config.short()}",
        steps=tuple(steps), fusion_knob_needed=False, inductor_options=(), kernels=None, tile_rel_err=None,
        machine_id=machine, target=target, method=method,
    )
    if cache is not None:
        cache.put(ckey, result)
    return result


def _probe_device(device: torch.device | str | None, target: str | None) -> tuple[torch.device, bool]:
    """(device the probed key is for, whether to generate Metal instead of compiling) for ``target``."""
    if target is None:
        dev = torch.device(device) if device is not None else torch.device(get_settings().device or default_device())
        return dev, False
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)} or None (the device itself), got {target!r}")
    if device is not None and torch.device(device).type != "mps":
        raise ValueError(f"target {target!r} probes for the MPS device; device {device!r} contradicts it")
    mps = torch.device("mps")
    return mps, not torch.backends.mps.is_available()  # on a Mac: the real compile


def _step(t: int, compiled_t: int, key: CompileKey, a: Attempt) -> ProbeStep:
    return ProbeStep(
        t_inner=t, compiled_t_inner=compiled_t, inductor_options=key.inductor_options, ok=a.ok, kind=a.kind,
        message=a.message, kernel_count=a.scan.kernel_count if a.scan else None,
        max_kernel_buffers=a.scan.max_buffers if a.scan else None, graphs=a.graphs, compile_s=a.compile_s,
        max_threadgroup_bytes=a.scan.max_threadgroup_bytes if a.scan else 0,
    )


def _result(config: KernelConfig, cfg: KernelConfig, workload: Workload, dev: torch.device,
            limit: int | None, steps: list[ProbeStep], key: CompileKey, a: Attempt, machine: str) -> ProbeResult:
    knob = dict(key.inductor_options).get(FUSION_KNOB)
    if knob is not None:  # the effective config carries the knob so that xk.mlstm compiles it the same way
        cfg = cfg.replace(fusion_io_limit=knob)
    return ProbeResult(
        requested=config, effective=cfg, workload=workload, device=str(dev), max_buffers=limit, ok=True,
        failure=None, message="", steps=tuple(steps), fusion_knob_needed=bool(key.inductor_options),
        inductor_options=key.inductor_options, kernels=a.scan, tile_rel_err=a.tile_rel_err, machine_id=machine,
    )


# ---------------------------------------------------------------------------------------------------
# Fusion report

@dataclass(frozen=True)
class FuseReport:
    """One tile of a config: graphs, graph breaks with reasons, kernels with buffer counts, compile time."""

    config: KernelConfig
    workload: Workload
    device: str
    compiled_t_inner: int
    graphs: int  # graphs Dynamo makes of the block without fullgraph (1 when there is no break)
    graph_breaks: int
    break_reasons: tuple[str, ...]
    kernels: CodeScan | None
    compile_s: float | None
    max_buffers: int | None
    ok: bool
    error_kind: str | None
    error: str

    def over_limit(self) -> list[str]:
        """Names of kernels over the buffer limit."""
        return [k.name for k in self.kernels.over_limit(self.max_buffers)] if self.kernels else []

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the ``fuse-report --json`` document)."""
        return {
            "config": self.config.to_dict(), "workload": str(self.workload), "device": self.device,
            "compiled_t_inner": self.compiled_t_inner, "graphs": self.graphs,
            "graph_breaks": self.graph_breaks, "break_reasons": list(self.break_reasons),
            "kernel_count": self.kernels.kernel_count if self.kernels else 0,
            "max_kernel_buffers": self.kernels.max_buffers if self.kernels else 0,
            "kernels": self.kernels.to_dict()["kernels"] if self.kernels else [],
            "buffer_limit": self.max_buffers, "over_limit": self.over_limit(),
            "compile_s": self.compile_s, "ok": self.ok, "error_kind": self.error_kind, "error": self.error,
        }

    def format_text(self) -> str:
        """Human-readable report."""
        lim = "off" if self.max_buffers is None else str(self.max_buffers)
        cs = "n/a" if self.compile_s is None else f"{self.compile_s:.2f}s"
        lines = [
            f"fuse-report {self.config.short()} on {self.workload} [{self.device}] (one tile, "
            f"T_inner {self.compiled_t_inner})",
            f"  graphs: {self.graphs}   graph breaks: {self.graph_breaks}   compile time: {cs}",
        ]
        lines += [f"    break: {r}" for r in self.break_reasons]
        if self.kernels is not None:
            lines.append(f"  kernels: {self.kernels.kernel_count} (buffer limit {lim}, "
                         f"max buffers {self.kernels.max_buffers})")
            for k in self.kernels.kernels:
                flag = "  OVER LIMIT" if self.max_buffers is not None and k.buffers > self.max_buffers else ""
                lines.append(f"    {k.lang:6} {k.buffers:3} buffers / {k.args:3} args  {k.name}{flag}")
        if not self.ok:
            lines.append(f"  compile failed ({self.error_kind}): {self.error.splitlines()[0][:300] if self.error else ''}")
        return "\n".join(lines)


def graph_breaks(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, int, list[str]]:
    """(graphs, graph breaks, break reasons) of ``fn`` on ``args``, traced by Dynamo without Inductor.

    Like ``torch._dynamo.explain`` but without its ``torch._dynamo.reset()`` (which would throw away
    every compiled kernel of the process).
    """
    from torch._dynamo.utils import counters

    graphs = 0

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        nonlocal graphs
        graphs += 1
        return gm.forward

    before = dict(counters["graph_break"])
    traced = torch.compile(fresh_code_copy(fn, "explain"), backend=counting_backend, fullgraph=False)
    with torch.no_grad():
        traced(*args)
    after = counters["graph_break"]
    reasons = [r for r in after if after[r] > before.get(r, 0)]
    breaks = sum(after[r] - before.get(r, 0) for r in after)
    return graphs, breaks, reasons


def _check_tile_memory(config: KernelConfig, workload: Workload, dev: torch.device) -> None:
    """Refuse (``WorkloadTooLarge``) a tile whose inputs and intermediates would not fit, before allocating."""
    from ..kernels.validation import call_bytes, check_memory

    p = plan(config, workload.NH, workload.S)
    tile = dataclasses.replace(workload, NH=p.heads_per_band, S=min(workload.S, p.span))
    check_memory(call_bytes(config, tile), f"a probe tile of {workload} ({config.short(workload.mode)})", dev)


def fuse_report(config: KernelConfig, workload: Workload, *, device: torch.device | str | None = None,
                max_buffers: int | None | str = "auto") -> FuseReport:
    """Fusion report of one tile of ``config`` on ``workload`` (in-process compile, Inductor's real output)."""
    if not isinstance(config, KernelConfig):
        raise ValueError(f"config must be a KernelConfig, got {type(config).__name__}")
    dev = torch.device(device) if device is not None else torch.device(get_settings().device or default_device())
    limit = resolve_max_buffers(max_buffers, dev)
    config.bands(workload.NH)
    _check_tile_memory(config, workload, dev)
    kdtype = kernel_dtype(config, workload.torch_dtype, dev)  # what xk.mlstm feeds the region
    p = plan(config, workload.NH, workload.S)
    key = kernel_key(config, p, workload.B, workload.DHQK, workload.DHV, kdtype, dev, EPS)
    block = fresh_code_copy(block_fn(key), key.tag())
    args = tile_inputs(key)
    try:
        graphs, breaks, reasons = graph_breaks(block, args)
    except Exception as exc:  # tracing itself failed: report it, still try the compile
        graphs, breaks, reasons = 0, 0, [f"tracing failed: {_short(exc, 300)}"]
    a = compile_and_scan(key, None, fn=block, args=args)
    return FuseReport(
        config=config, workload=workload, device=str(dev), compiled_t_inner=p.t_inner, graphs=graphs,
        graph_breaks=breaks, break_reasons=tuple(reasons), kernels=a.scan, compile_s=a.compile_s,
        max_buffers=limit, ok=a.ok, error_kind=a.kind, error=a.message,
    )
