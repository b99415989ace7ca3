"""Compile cache: one ``torch.compile``d pseudo-kernel per shape key.

Dynamo keeps its compiled-graph cache on the *code object* and stops recompiling a code object
after ``recompile_limit`` (8) variants. Every key here therefore gets its own copy of the block's
code object, so many shapes never trip that limit, and ``fullgraph=True`` turns a graph break into
an error instead of a silent slowdown. A first call that compiles no graph (e.g. Dynamo disabled)
is an eager fallback: it is recorded on the kernel and warned about once.

Once torch.compile has served a call, a kernel sends later calls whose inputs have the same
dtypes, shapes and strides (what Dynamo's tensor guards check) straight to the compiled graph that
served it: torch.compile's per-call frame evaluation costs tens of microseconds, a large share of a
decode step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..device import keep_freed_memory, synchronize
from .families import make_chunkwise_block, make_recurrent_block, make_step
from ..settings import get_settings

log = logging.getLogger(__name__)


def use_cpp_wrapper(device: torch.device | str) -> bool:
    """Whether kernels for ``device`` compile with Inductor's C++ wrapper (CPU only, per settings)."""
    return torch.device(device).type == "cpu" and get_settings().cpp_wrapper


class EagerFallbackWarning(RuntimeWarning):
    """A pseudo-kernel ran eagerly instead of compiled (slow, but still correct)."""


@dataclass(frozen=True)
class CompileKey:
    """What makes one compiled artifact: DESIGN.md's shape key plus compile options."""

    family: str  # "recurrent" | "chunkwise" | "step"
    B: int
    heads: int  # heads in the band
    DHQK: int
    DHV: int
    dtype: str  # dtype of q, k, v fed to the kernel
    device: str
    t_inner: int
    chunk_size: int
    compile_mode: str = "default"
    precision: str = "fp32"
    eps: float = 1e-6
    gate_dtype: str = "float32"  # dtype of i, f fed to the kernel
    inductor_options: tuple[tuple[str, Any], ...] = ()
    cpp_wrapper: bool = False  # Inductor's C++ wrapper (CPU): see Settings.cpp_wrapper
    threads: int = 0  # CPU: torch's thread count it is compiled for and runs under (xlstm_kernels.threads); 0 elsewhere

    def tag(self) -> str:
        """Short stable hash, used to name the code object (shows up in Inductor's logs)."""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:10]


def block_fn(key: CompileKey) -> Callable[..., Any]:
    """The eager function of ``key``'s block (its family's maker with the key's tile sizes)."""
    mixed = key.precision == "mixed"
    if key.family == "recurrent":
        return make_recurrent_block(key.t_inner, key.eps)
    if key.family == "chunkwise":
        return make_chunkwise_block(key.t_inner, key.chunk_size, key.eps, mixed, key.precision != "fp32")
    if key.family == "step":
        return make_step(key.eps)
    raise ValueError(f"unknown kernel family {key.family!r}")


def fresh_code_copy(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
    """The same function with its own code object, hence its own Dynamo cache."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def ensure_inductor_cache_dir() -> str:
    """Point Inductor's on-disk cache at the configured directory (macOS purges the default)."""
    path = get_settings().resolved_inductor_cache_dir()
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


@contextlib.contextmanager
def matmul_precision(key: CompileKey) -> Iterator[None]:
    """On CUDA, TF32 on for ``precision="tf32"`` and off otherwise, for compile and every call.

    Inductor bakes the flag into its matmul templates at compile time and cuBLAS reads it per call,
    so a kernel's precision must not depend on what the caller set globally.
    """
    if not key.device.startswith("cuda"):
        yield
        return
    flag = torch.backends.cuda.matmul
    old = flag.allow_tf32
    flag.allow_tf32 = key.precision == "tf32"
    try:
        yield
    finally:
        flag.allow_tf32 = old


Signature = tuple[tuple[torch.dtype, torch.Size, tuple[int, ...]], ...]
MAX_DIRECT_SIGNATURES = 8  # per kernel, like Dynamo's recompile limit; more go through torch.compile


def signature(args: tuple[torch.Tensor, ...]) -> Signature:
    """The inputs' dtypes, shapes and strides: what a compiled graph with static shapes assumes."""
    return tuple((a.dtype, a.shape, a.stride()) for a in args)


@dataclass
class CompiledGraph:
    """One graph Inductor compiled: the callable, and which call arguments feed its inputs."""

    fn: Callable[..., Any]
    input_ids: list[int]  # identities of the tensors it was compiled on (valid during that call only)
    order: list[int] | None = None  # argument position of each graph input; None: not mappable


class InductorBackend:
    """Inductor as a ``torch.compile`` backend that keeps every graph it compiled and notes which ran last."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.graphs: list[CompiledGraph] = []
        self.last: tuple[CompiledGraph, list[int]] | None = None  # graph that ran last, its outputs' ids

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        graph = CompiledGraph(torch._inductor.compile(gm, example_inputs, options=self.options or None),
                              [id(x) for x in example_inputs])
        self.graphs.append(graph)

        def run(*args: Any) -> Any:
            out = graph.fn(*args)
            self.last = (graph, [id(o) for o in out])
            return out

        return run


def _arg_order(graph: CompiledGraph, args: tuple[Any, ...]) -> list[int] | None:
    """Positions in ``args`` of the graph's inputs, for the call that compiled it; None when ambiguous
    (aliased arguments) or when an input is not an argument (a constant or global)."""
    ids = [id(a) for a in args]
    if len(set(ids)) != len(ids) or not set(graph.input_ids) <= set(ids):
        return None
    return [ids.index(i) for i in graph.input_ids]


def _direct_call(graph: CompiledGraph) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    fn, order = graph.fn, graph.order
    assert order is not None

    def call(args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(fn(*[args[j] for j in order]))

    return call


def unique_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (the difference across a call counts its graphs)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@dataclass
class CompiledKernel:
    """A compiled pseudo-kernel and what its compilation cost."""

    key: CompileKey
    fn: Callable[..., Any]
    eager_fn: Callable[..., Any]
    compile_s: float | None = None  # wall time of the first (compiling) call, device-synchronised
    graphs: int = 0  # graphs Dynamo produced on the first call
    calls: int = 0
    eager_fallback: bool = False
    backend: InductorBackend | None = field(default=None, repr=False)  # set: direct calls allowed
    _direct: dict[Signature, Callable[..., Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cuda: bool = field(init=False, repr=False)  # CUDA kernels run under their key's matmul precision

    def __post_init__(self) -> None:
        self._cuda = self.key.device.startswith("cuda")

    @property
    def direct(self) -> bool:
        """Whether some input signature already skips torch.compile's per-call frame evaluation."""
        return bool(self._direct)

    def __call__(self, *args: torch.Tensor) -> Any:
        return self._in_precision(self._call, args)

    def direct_for(self, args: tuple[torch.Tensor, ...]) -> Callable[[tuple[Any, ...]], Any] | None:
        """The direct call learned for inputs like ``args`` (same dtypes, shapes, strides), if any and
        if the ``DIRECT_CALLS`` setting is still on (it may have been turned off after this kernel learned)."""
        if not self._direct or not get_settings().direct_calls:
            return None
        return self._direct.get(signature(args))

    def run_direct(self, direct: Callable[[tuple[Any, ...]], Any], args: tuple[torch.Tensor, ...]) -> Any:
        """``direct(args)`` for a ``direct`` from :meth:`direct_for` on inputs like ``args``, grad mode off."""
        self.calls += 1
        return self._in_precision(direct, args)

    def _in_precision(self, run: Callable[[tuple[torch.Tensor, ...]], Any], args: tuple[torch.Tensor, ...]) -> Any:
        if not self._cuda:
            return run(args)
        with matmul_precision(self.key):
            return run(args)

    def _call(self, args: tuple[torch.Tensor, ...]) -> Any:
        sig = None
        if self._direct and not torch.is_grad_enabled():
            sig = signature(args)
            direct = self._direct.get(sig)
            if direct is not None:
                self.calls += 1
                return direct(args)
        if self.calls == 0:
            with self._lock:
                if self.calls == 0:
                    return self._learn(args, sig, self._first_call)
        self.calls += 1
        if self.backend is None or len(self._direct) >= MAX_DIRECT_SIGNATURES:
            return self.fn(*args)
        with self._lock:
            return self._learn(args, sig, lambda a: self.fn(*a))

    def _learn(self, args: tuple[torch.Tensor, ...], sig: Signature | None,
               run: Callable[[tuple[torch.Tensor, ...]], Any]) -> Any:
        """``run(args)`` through torch.compile; then let later calls with these inputs' signature go
        straight to the graph that served it, when that graph's inputs map onto the arguments and
        its outputs are exactly what the call returned (grad mode off)."""
        backend = self.backend
        if backend is None:
            return run(args)
        compiled_before = len(backend.graphs)
        backend.last = None
        out = run(args)
        for graph in backend.graphs[compiled_before:]:  # compiled by this call: the ids are this call's
            graph.order = _arg_order(graph, args)
        last, backend.last = backend.last, None
        if last is None or torch.is_grad_enabled() or not isinstance(out, tuple):
            return out
        graph, out_ids = last
        if graph.order is not None and out_ids == [id(o) for o in out]:
            self._direct[sig or signature(args)] = _direct_call(graph)
        return out

    def _first_call(self, args: tuple[torch.Tensor, ...]) -> Any:
        before = unique_graphs()
        t0 = time.perf_counter()
        try:
            out = self.fn(*args)
        except RuntimeError as exc:
            if "no compiled frames" not in str(exc):  # torch >= 2.12 says so when Dynamo is disabled
                raise
            out = None
        synchronize(self.key.device)
        self.compile_s = time.perf_counter() - t0
        self.graphs = unique_graphs() - before
        self.eager_fallback = self.graphs == 0
        self.calls = 1
        if self.eager_fallback:
            warnings.warn(
                f"pseudo-kernel {self.key.family} ({self.key.tag()}) runs eagerly: torch.compile "
                "produced no graph (is TORCHDYNAMO_DISABLE set?). Results are correct but slow.",
                EagerFallbackWarning,
                stacklevel=6,  # the driver that called the kernel
            )
            self.fn = self.eager_fn
            self.backend = None
            if out is None:
                out = self.fn(*args)
        log.debug("compiled %s in %.2fs (%d graphs)", self.key, self.compile_s, self.graphs)
        return out


class CompileCache:
    """In-process cache of compiled pseudo-kernels by ``CompileKey``; thread-safe."""

    def __init__(self) -> None:
        self._kernels: dict[CompileKey, CompiledKernel] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped by clear(): whoever keeps a kernel can tell it was dropped

    def get(self, key: CompileKey) -> CompiledKernel:
        """The kernel for ``key``, created (not yet compiled: that happens on its first call) if new."""
        kernel = self._kernels.get(key)
        if kernel is not None:
            return kernel
        with self._lock:
            kernel = self._kernels.get(key)
            if kernel is None:
                if key.device == "cpu" and get_settings().cpu_keep_freed_memory:
                    keep_freed_memory()
                eager = fresh_code_copy(block_fn(key), key.tag())
                backend = (InductorBackend(compile_options(key))
                           if get_settings().direct_calls and key.compile_mode != "reduce-overhead" else None)
                kernel = CompiledKernel(key, build_compiled(key, eager, backend), eager, backend=backend)
                self._kernels[key] = kernel
            return kernel

    def clear(self) -> None:
        """Forget every kernel (the next call of a key compiles again, from Inductor's disk cache)."""
        with self._lock:
            self._kernels.clear()
            self.generation += 1

    def kernels(self) -> list[CompiledKernel]:
        """The kernels created so far, with their compile times and call counts."""
        with self._lock:
            return list(self._kernels.values())

    def __len__(self) -> int:
        return len(self._kernels)

    def __contains__(self, key: object) -> bool:
        return key in self._kernels


def mode_options(compile_mode: str, cpp_wrapper: bool, extra: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any]:
    """Inductor options of a compile mode (torch.compile takes a mode or options, not both), extra
    options, the C++ wrapper: how every pseudo-kernel is compiled (benchmarks give baselines the same)."""
    opts: dict[str, Any] = {}
    if compile_mode in ("reduce-overhead", "max-autotune-no-cudagraphs"):
        opts.update(torch._inductor.list_mode_options(compile_mode))
    opts.update(dict(extra))
    if cpp_wrapper:
        opts["cpp_wrapper"] = True
    return opts


def compile_options(key: CompileKey) -> dict[str, Any]:
    """Inductor options for ``key`` (:func:`mode_options` of its mode, extra options and wrapper)."""
    return mode_options(key.compile_mode, key.cpp_wrapper, key.inductor_options)


def build_compiled(key: CompileKey, fn: Callable[..., Any] | None = None,
                   backend: InductorBackend | None = None) -> Callable[..., Any]:
    """``torch.compile`` the block for ``key`` (lazy: Dynamo compiles at the first call).

    ``backend`` (built with ``compile_options(key)``) compiles the same way and keeps the graph.
    """
    ensure_inductor_cache_dir()
    fn = fn or fresh_code_copy(block_fn(key), key.tag())
    if backend is not None:
        return torch.compile(fn, fullgraph=True, dynamic=False, backend=backend)
    return torch.compile(fn, fullgraph=True, dynamic=False, options=compile_options(key) or None)


CACHE = CompileCache()
