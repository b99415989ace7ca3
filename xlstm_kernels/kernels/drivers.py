"""Drivers: walk a sequence through compiled blocks, head band by head band, in strict time order.

Notation: B batch, NH heads, nb bands of hb heads, S sequence (padded to S_pad), span = t_inner
units of the family (1 step or ``chunk_size`` steps), nblk = S_pad / span blocks per band.

A sequence that is not a multiple of the span is padded with steps whose gates make them exact
no-ops on the state (i = -inf so nothing is written, f = +inf so nothing decays: logsigmoid(+inf)
is exactly 0), so the terminal (C, n, m) equals the unpadded one; padded outputs are dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .compiler import CACHE, CompileKey, use_cpp_wrapper
from .config import CUDA_ONLY_MODES, KernelConfig, Workload, dtype_name
from ..threads import compiled_threads

States = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Plan:
    """How one call is cut into compiled blocks."""

    bands: int
    heads_per_band: int
    t_inner: int  # effective: never more units than the sequence has
    span: int
    blocks: int
    padded_len: int


def plan(config: KernelConfig, NH: int, S: int) -> Plan:
    """Bands and blocks for a sequence of ``S`` steps over ``NH`` heads."""
    nb = config.bands(NH)
    unit = 1 if config.family == "recurrent" else config.chunk_size
    t_inner = max(1, min(config.t_inner, math.ceil(S / unit)))
    span = t_inner * unit
    nblk = math.ceil(S / span)
    return Plan(nb, NH // nb, t_inner, span, nblk, nblk * span)


def effective_t_inner(config: KernelConfig, workload: Workload) -> int:
    """T_inner after the driver clamps it to what the sequence can fill (1 for decode: the step)."""
    return 1 if workload.mode == "decode" else plan(config, workload.NH, workload.S).t_inner


def kernel_key(config: KernelConfig, p: Plan, B: int, DHQK: int, DHV: int, dtype: torch.dtype,
               device: torch.device, eps: float, cpp_wrapper: bool | None = None,
               threads: int | None = None) -> CompileKey:
    """The compile key of the block a call with this plan runs (``cpp_wrapper``: default from settings;
    ``threads``: default the count a kernel for ``device`` compiles for now)."""
    return CompileKey(
        family=config.family, B=B, heads=p.heads_per_band, DHQK=DHQK, DHV=DHV,
        dtype=dtype_name(dtype), device=str(device), t_inner=p.t_inner,
        chunk_size=config.chunk_size if config.family == "chunkwise" else 1,
        compile_mode=config.compile_mode, precision=config.precision, eps=float(eps),
        inductor_options=() if config.fusion_io_limit is None
        else (("max_fusion_unique_io_buffers", config.fusion_io_limit),),
        cpp_wrapper=use_cpp_wrapper(device) if cpp_wrapper is None else cpp_wrapper,
        threads=compiled_threads(device) if threads is None else threads,
    )


def _pad_time(x: torch.Tensor, extra: int, value: float, dim_from_end: int) -> torch.Tensor:
    if extra == 0:
        return x
    pad = [0, 0] * (dim_from_end - 1) + [0, extra]
    return F.pad(x, pad, value=value)


def kernel_dtype(config: KernelConfig, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype q, k, v enter the compiled region with.

    On MPS, float32 casts happen before the region (the seed's rule: casts out of the fused
    region). Elsewhere the region upcasts itself, saving a pass over the inputs; the math is the same.
    """
    if config.precision == "mixed" or device.type != "mps":
        return dtype
    return torch.float32


def gate_dtype(i_dtype: torch.dtype, f_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype i and f enter the compiled region with: theirs when they agree (not on MPS), else float32."""
    return i_dtype if i_dtype == f_dtype and device.type != "mps" else torch.float32


def prepare(q, k, v, i, f, c0, n0, m0, config: KernelConfig, p: Plan):
    """Cast (MPS only), pad to the plan's length, and build float32 initial states."""
    B, NH, S, DHQK = q.shape
    DHV = v.shape[-1]
    kdtype = kernel_dtype(config, q.dtype, q.device)
    extra = p.padded_len - S
    q, k, v = (_pad_time(_cast(x, kdtype), extra, 0.0, 2) for x in (q, k, v))
    gdtype = gate_dtype(i.dtype, f.dtype, q.device)
    i = _pad_time(_cast(i, gdtype), extra, float("-inf"), 1)
    f = _pad_time(_cast(f, gdtype), extra, float("inf"), 1)
    dev = q.device
    if c0 is None:
        c0 = torch.zeros(B, NH, DHQK, DHV, dtype=torch.float32, device=dev)
        n0 = torch.zeros(B, NH, DHQK, dtype=torch.float32, device=dev)
        m0 = torch.zeros(B, NH, 1, dtype=torch.float32, device=dev)
    else:
        c0, n0, m0 = (_cast(x, torch.float32) for x in (c0, n0, m0))
    return (q, k, v, i, f), (c0, n0, m0)


def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)`` without the dispatcher round trip when it is already that dtype (per-call cost)."""
    return x if x.dtype == dtype else x.to(dtype)


def _band_states(states: States, p: Plan) -> list[list[torch.Tensor]]:
    return [
        [x[:, b * p.heads_per_band:(b + 1) * p.heads_per_band].contiguous() for x in states]
        for b in range(p.bands)
    ]


def block_args(inputs, heads: slice, steps: slice) -> list[torch.Tensor]:
    """The inputs of one block (``heads`` x ``steps``) as contiguous copies: a slice's strides depend
    on the whole call's length and head count, and the compiled block guards on strides, so views would
    recompile it for every new prompt length (and fail at Dynamo's recompile limit)."""
    return [x[:, heads, steps].contiguous() for x in inputs]


def run_queued(inputs, states: States, key: CompileKey, p: Plan) -> tuple[torch.Tensor, States]:
    """In-process driver: for each block, advance every band; outputs land in one buffer."""
    q, k, v, i, f = inputs
    B, NH, S_pad, _ = q.shape
    DHV = v.shape[-1]
    kernel = CACHE.get(key)
    cudagraphs = key.compile_mode == "reduce-overhead"
    if p.bands == 1 and p.blocks == 1:  # one compiled call: no slicing, no output buffer
        h, c, n, m = kernel(q, k, v, i, f, *(x.contiguous() for x in states))
        if cudagraphs:  # a replay overwrites the previous replay's outputs: keep our own copies
            h, c, n, m = h.clone(), c.clone(), n.clone(), m.clone()
        return h, (c, n, m)
    band_states = _band_states(states, p)
    h_out = torch.empty(B, NH, S_pad, DHV, dtype=v.dtype, device=q.device)
    hb, span = p.heads_per_band, p.span
    for j in range(p.blocks):
        t = slice(j * span, (j + 1) * span)
        for b in range(p.bands):
            hs = slice(b * hb, (b + 1) * hb)
            h, c, n, m = kernel(*block_args((q, k, v, i, f), hs, t), *band_states[b])
            if cudagraphs:
                c, n, m = c.clone(), n.clone(), m.clone()
            h_out[:, hs, t] = h
            band_states[b] = [x.contiguous() for x in (c, n, m)]
    if p.bands == 1:
        return h_out, tuple(band_states[0])  # type: ignore[return-value]
    final = tuple(torch.cat([bs[x] for bs in band_states], dim=1) for x in range(3))
    return h_out, final  # type: ignore[return-value]


def _ray_band(key: CompileKey, p: Plan, band_inputs, band_state):
    """One band, all blocks, inside a Ray worker (tensors travel as CPU tensors)."""
    dev = torch.device(key.device)
    q, k, v, i, f = (x.to(dev) for x in band_inputs)
    c, n, m = (x.to(dev) for x in band_state)
    kernel = CACHE.get(key)
    hs = []
    for j in range(p.blocks):
        t = slice(j * p.span, (j + 1) * p.span)
        h, c, n, m = kernel(*block_args((q, k, v, i, f), slice(None), t), c, n, m)
        c, n, m = (x.contiguous() for x in (c, n, m))
        hs.append(h.cpu())
    return torch.cat(hs, dim=2), (c.cpu(), n.cpu(), m.cpu())


def _ensure_ray():
    try:
        import ray  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError(
            "the ray driver needs the optional extra: pip install 'xlstm-autotune[ray]'"
        ) from exc
    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items()
               if k.startswith(("XLSTM_AUTOTUNE_", "TORCHINDUCTOR_")) or k == "PYTHONPATH"}
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": env})
    return ray


def run_ray(inputs, states: States, key: CompileKey, p: Plan) -> tuple[torch.Tensor, States]:
    """Bands as tasks on a local Ray instance (``ray.init`` is called if needed; no local_mode)."""
    ray = _ensure_ray()
    dev = inputs[0].device
    gpus = 1.0 / p.bands if dev.type == "cuda" else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus)(_ray_band)
    hb = p.heads_per_band
    futures = []
    for b in range(p.bands):
        hs = slice(b * hb, (b + 1) * hb)
        band_inputs = [x[:, hs].contiguous().cpu() for x in inputs]
        band_state = [x[:, hs].contiguous().cpu() for x in states]
        futures.append(remote.remote(key, p, band_inputs, band_state))
    results = ray.get(futures)
    h = torch.cat([r[0] for r in results], dim=1).to(dev)
    final = tuple(torch.cat([r[1][x] for r in results], dim=1).to(dev) for x in range(3))
    return h, final  # type: ignore[return-value]


def check_device(config: KernelConfig, device: torch.device) -> None:
    """CUDA-graph modes need CUDA; the ray driver cannot capture graphs."""
    if config.compile_mode in CUDA_ONLY_MODES and device.type != "cuda":
        raise ValueError(f"compile_mode {config.compile_mode!r} needs a CUDA device; the inputs are on {device}")
    if config.compile_mode == "graph-capture" and config.driver != "queued":
        raise ValueError("compile_mode 'graph-capture' needs driver='queued'")


def _run(q, k, v, i, f, c0, n0, m0, config: KernelConfig, p: Plan, key: CompileKey):
    inputs, states = prepare(q, k, v, i, f, c0, n0, m0, config, p)
    run = run_ray if config.driver == "ray" else run_queued
    h, final = run(inputs, states, key, p)
    if p.padded_len != q.shape[2]:
        h = h[:, :, : q.shape[2]]
    return _cast(h, q.dtype), final


def call_plan(config: KernelConfig, B: int, NH: int, S: int, DHQK: int, DHV: int, dtype: torch.dtype,
              gate_dtypes: tuple[torch.dtype, torch.dtype], device: torch.device,
              eps: float, cpp_wrapper: bool) -> tuple[Plan, CompileKey]:
    """Plan and compile key of a call (for the thread count it runs under now), memoised."""
    return _call_plan(config, B, NH, S, DHQK, DHV, dtype, gate_dtypes, device, eps, cpp_wrapper,
                      compiled_threads(device))


@functools.lru_cache(maxsize=4096)
def _call_plan(config: KernelConfig, B: int, NH: int, S: int, DHQK: int, DHV: int, dtype: torch.dtype,
               gate_dtypes: tuple[torch.dtype, torch.dtype], device: torch.device,
               eps: float, cpp_wrapper: bool, threads: int) -> tuple[Plan, CompileKey]:
    p = plan(config, NH, S)
    kdtype = kernel_dtype(config, dtype, device)
    gdtype = gate_dtype(*gate_dtypes, device)
    key = kernel_key(config, p, B, DHQK, DHV, kdtype, device, eps, cpp_wrapper, threads)
    return p, dataclasses.replace(key, gate_dtype=dtype_name(gdtype))


def run_sequence(q, k, v, i, f, c0, n0, m0, config: KernelConfig, eps: float):
    """h (B, NH, S, DHV) in q's dtype and float32 terminal (C, n, m) for validated inputs."""
    B, NH, S, DHQK = q.shape
    p, key = call_plan(config, B, NH, S, DHQK, v.shape[-1], q.dtype, (i.dtype, f.dtype), q.device, eps,
                        use_cpp_wrapper(q.device))
    if config.compile_mode != "graph-capture":
        return _run(q, k, v, i, f, c0, n0, m0, config, p, key)
    from .capture import captured

    call_key = (key, S, q.dtype, i.dtype, f.dtype, c0 is not None and tuple(x.dtype for x in (c0, n0, m0)))
    return captured(call_key, lambda *a: _run(*a, config, p, key), (q, k, v, i, f, c0, n0, m0))
