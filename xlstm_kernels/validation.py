"""Input checks run before anything is compiled: every failure is a ValueError naming the argument."""

from __future__ import annotations

import torch

from .config import DTYPES


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
