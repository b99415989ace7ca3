"""The ``T_inner`` ratchet: compile a candidate for one tile, stepping ``T_inner`` down on limit failures."""

from __future__ import annotations

import dataclasses
import functools
import logging

import torch

from ..device import default_device
from ..kernels.compiler import CompileKey
from ..kernels.config import T_INNER_LADDER, KernelConfig, Workload
from ..kernels.drivers import kernel_dtype, kernel_key, plan
from ..settings import get_settings
from .attempt import Attempt
from .cache import PROBE_CACHE, ProbeCache
from .errors import LIMIT_KINDS
from .result import FUSION_KNOB, ProbeResult, ProbeStep
from .runners import ChildRunner, InProcessRunner, MetalCodegenRunner

log = logging.getLogger(__name__)

EPS = 1e-6
TARGETS: tuple[str, ...] = ("mps",)  # probe targets other than the device itself


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
        check_tile_memory(config, workload, dev)
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
    runner: InProcessRunner | ChildRunner | MetalCodegenRunner
    if codegen:
        runner = MetalCodegenRunner(tg_limit)
    else:
        runner = ChildRunner(timeout) if isolate else InProcessRunner()
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


def check_tile_memory(config: KernelConfig, workload: Workload, dev: torch.device) -> None:
    """Refuse (``WorkloadTooLarge``) a tile whose inputs and intermediates would not fit, before allocating."""
    from ..kernels.validation import call_bytes, check_memory

    p = plan(config, workload.NH, workload.S)
    tile = dataclasses.replace(workload, NH=p.heads_per_band, S=min(workload.S, p.span))
    check_memory(call_bytes(config, tile), f"a probe tile of {workload} ({config.short(workload.mode)})", dev)
