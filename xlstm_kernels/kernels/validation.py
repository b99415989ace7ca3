"""Input checks run before anything is compiled: every failure is a ValueError naming the argument."""

from __future__ import annotations

import torch

from .config import DEFAULT_CONFIG, DTYPES, KernelConfig, Workload


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_float_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in DTYPES.values():
        raise ValueError(f"{name} has dtype {t.dtype}; expected one of float32, bfloat16, float16")


def check_states(
    c: torch.Tensor | None,
    n: torch.Tensor | None,
    m: torch.Tensor | None,
    B: int,
    NH: int,
    DHQK: int,
    DHV: int,
    device: torch.device,
    prefix: str = "",
    required: bool = False,
) -> None:
    """Check the (C, n, m) triple: all or none, right shapes, same device."""
    names = (f"c{prefix}", f"n{prefix}", f"m{prefix}")
    given = [x is not None for x in (c, n, m)]
    if required and not all(given):
        missing = [nm for nm, g in zip(names, given) if not g]
        raise ValueError(f"states {missing} are required")
    if any(given) and not all(given):
        missing = [nm for nm, g in zip(names, given) if not g]
        raise ValueError(f"initial states must be given together: missing {missing}")
    if not any(given):
        return
    expected = {names[0]: (B, NH, DHQK, DHV), names[1]: (B, NH, DHQK), names[2]: (B, NH, 1)}
    for name, t in zip(names, (c, n, m)):
        _require_tensor(name, t)
        _check_float_dtype(name, t)
        if _shape(t) != expected[name]:
            raise ValueError(f"{name} has shape {_shape(t)}; expected {expected[name]} (B, NH, ...)")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device}; expected {device} like q")


def check_sequence_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    c: torch.Tensor | None,
    n: torch.Tensor | None,
    m: torch.Tensor | None,
) -> tuple[int, int, int, int, int]:
    """Validate ``xk.mlstm`` inputs; returns (B, NH, S, DHQK, DHV)."""
    for name, t in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)):
        _require_tensor(name, t)
    if q.dim() != 4:
        raise ValueError(f"q must have rank 4 (B, NH, S, DHQK), got shape {_shape(q)}")
    B, NH, S, DHQK = q.shape
    if min(B, NH, S, DHQK) < 1:
        raise ValueError(f"q has an empty dimension: shape {_shape(q)}; all sizes must be >= 1")
    if _shape(k) != _shape(q):
        raise ValueError(f"k has shape {_shape(k)}; expected {_shape(q)} like q (B, NH, S, DHQK)")
    if v.dim() != 4 or _shape(v)[:3] != (B, NH, S) or v.shape[-1] < 1:
        raise ValueError(f"v has shape {_shape(v)}; expected ({B}, {NH}, {S}, DHV)")
    DHV = v.shape[-1]
    for name, t in (("i", i), ("f", f)):
        if _shape(t) != (B, NH, S):
            raise ValueError(f"{name} has shape {_shape(t)}; expected ({B}, {NH}, {S}) (B, NH, S)")
    _check_float_dtype("q", q)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype}; expected {q.dtype} like q")
    for name, t in (("i", i), ("f", f)):
        _check_float_dtype(name, t)
    for name, t in (("k", k), ("v", v), ("i", i), ("f", f)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}; expected {q.device} like q")
    check_states(c, n, m, B, NH, DHQK, DHV, q.device, prefix="_initial")
    return B, NH, S, DHQK, DHV


def check_step_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    c: torch.Tensor,
    n: torch.Tensor,
    m: torch.Tensor,
) -> tuple[int, int, int, int]:
    """Validate ``xk.mlstm_step`` inputs; returns (B, NH, DHQK, DHV)."""
    for name, t in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)):
        _require_tensor(name, t)
    if q.dim() != 3:
        raise ValueError(f"q must have rank 3 (B, NH, DHQK) for a step, got shape {_shape(q)}")
    B, NH, DHQK = q.shape
    if min(B, NH, DHQK) < 1:
        raise ValueError(f"q has an empty dimension: shape {_shape(q)}")
    if _shape(k) != _shape(q):
        raise ValueError(f"k has shape {_shape(k)}; expected {_shape(q)} like q (B, NH, DHQK)")
    if v.dim() != 3 or _shape(v)[:2] != (B, NH) or v.shape[-1] < 1:
        raise ValueError(f"v has shape {_shape(v)}; expected ({B}, {NH}, DHV)")
    DHV = v.shape[-1]
    for name, t in (("i", i), ("f", f)):
        if _shape(t) != (B, NH, 1):
            raise ValueError(f"{name} has shape {_shape(t)}; expected ({B}, {NH}, 1)")
    _check_float_dtype("q", q)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype}; expected {q.dtype} like q")
    for name, t in (("k", k), ("v", v), ("i", i), ("f", f)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}; expected {q.device} like q")
    check_states(c, n, m, B, NH, DHQK, DHV, q.device, required=True)
    return B, NH, DHQK, DHV


# --------------------------------------------------------------------------- memory estimates
# Checked before anything is allocated: by the runtime against a profile entry, and by tune/bench/probe
# against a workload. Estimates, not exact accounting: they are upper-bound-ish (every large buffer a
# call holds at once), so a refusal names an order of magnitude, never a borderline case.


class WorkloadTooLarge(ValueError):
    """A call or workload's memory estimate exceeds the configured limit (nothing was allocated)."""


def available_memory_bytes(device: torch.device | str) -> int:
    """Memory available now on ``device``: on CUDA the driver's free memory plus what torch's caching
    allocator holds but does not use (it reuses that first); MPS's recommended maximum; else the
    host's available RAM."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    if dev.type == "mps" and hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
        return int(torch.mps.recommended_max_memory())
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def memory_limit_bytes(device: torch.device | str, settings: object | None = None) -> int:
    """The limit estimates are checked against: settings' memory_limit_bytes, else a fraction of what is available."""
    from ..settings import get_settings

    s = settings if settings is not None else get_settings()
    explicit = getattr(s, "memory_limit_bytes", None)
    if explicit is not None:
        return int(explicit)
    return int(available_memory_bytes(device) * float(getattr(s, "memory_limit_fraction", 0.8)))


def call_bytes(config: KernelConfig, workload: Workload) -> int:
    """Estimated peak bytes of one ``xk.mlstm``/``mlstm_step`` call of ``workload`` under ``config``.

    Padded q/k/v/h and gates (the plan's padded length), float32 states, and one compiled block's
    intermediates: per chunk the (L, L) decay/score matrices and (L, DHQK + DHV) projections
    (chunkwise), or the per-step outer products (recurrent), for t_inner units of one band.
    """
    from .drivers import plan

    w, cfg = workload, config
    item = DTYPES[w.dtype].itemsize
    B, NH, DHQK, DHV = w.B, w.NH, w.DHQK, w.DHV
    states = B * NH * (DHQK * DHV + DHQK + 1) * 4 * 3  # in, out, and one working copy
    if w.mode == "decode":
        return B * NH * (2 * DHQK + 2 * DHV) * item + states
    p = plan(cfg, NH, w.S)
    io = B * NH * p.padded_len * ((2 * DHQK + 2 * DHV) * item + 2 * 4)
    if cfg.family == "chunkwise":
        L = cfg.chunk_size
        block = B * p.heads_per_band * p.t_inner * (3 * L * L + 2 * L * (DHQK + DHV)) * 4
    else:
        block = B * p.heads_per_band * p.t_inner * (DHQK * DHV + DHQK + DHV) * 4 * 2
    return io + states + block


def workload_bytes(workload: Workload, validate_steps: int, config: KernelConfig | None = None) -> int:
    """Estimated bytes a tune/bench/probe of ``workload`` holds: its inputs and output, states, one call
    of ``config`` (default: the default config) and the float64 reference on ``validate_steps`` steps."""
    w = workload
    item_in = 8  # the float64 reference's copies of q, k, v, gates and its h
    S_ref = 1 if w.mode == "decode" else min(w.S, validate_steps)
    ref = w.B * w.NH * (S_ref * (2 * w.DHQK + 2 * w.DHV + 2) + w.DHQK * w.DHV + w.DHQK + 1) * item_in
    return call_bytes(config if config is not None else DEFAULT_CONFIG, w) + ref


def check_memory(need: int, what: str, device: torch.device | str, settings: object | None = None) -> int:
    """Raise ``WorkloadTooLarge`` when ``need`` bytes exceed the limit for ``device``; returns ``need``."""
    limit = memory_limit_bytes(device, settings)
    if need > limit:
        raise WorkloadTooLarge(
            f"{what} needs about {need / 2**30:.2f} GiB on {device}, over the limit of {limit / 2**30:.2f} GiB "
            "(setting memory_limit_fraction of the available memory, or memory_limit_bytes); nothing was allocated"
        )
    return need


def check_workload_memory(workload: Workload, device: torch.device | str, validate_steps: int,
                          settings: object | None = None, config: KernelConfig | None = None) -> int:
    """Refuse (``WorkloadTooLarge``, estimate and limit in the message) a tune/bench of ``workload`` that
    would not fit, before anything is allocated; returns the estimate."""
    what = f"workload {workload} (inputs, states, one call and the float64 validation reference)"
    return check_memory(workload_bytes(workload, validate_steps, config), what, device, settings)
