"""Float64 reference of the stabilized mLSTM: a plain recurrent loop, no compilation.

Notation: B batch, NH heads, S sequence, DHQK query/key head dim, DHV value head dim.
Everything is computed in float64 on the inputs' device, or on the CPU for MPS (no float64 there).

Closed forget gates (the one clamp, shared by the reference, both kernel families and the decode
step): a step whose log forget gate ``logsigmoid(f)`` is below ``LOG_FORGET_FLOOR`` (-1000) forgets
the state completely, exactly as ``f = -inf`` does (:func:`log_forget_gate`). exp(-1000) is 0 in
float32 and float64 alike, so the rule changes a result only where the exact formula would have kept
exp(logsigmoid(f) + m - m_new) > 0: an input gate 255 or more below the running max state at that
very step. It keeps -1e30 out of the chunkwise family's cumulative sums (see
``families.forget_sums``). NaN/Inf in q, k or v is not cleaned: it lands where this reference puts it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

LOG_FORGET_FLOOR = -1000.0  # logsigmoid(f) below this: the forget gate is closed, as for f = -inf


def log_forget_gate(f: torch.Tensor) -> torch.Tensor:
    """logsigmoid(f), -inf where it is below ``LOG_FORGET_FLOOR``: the closed-gate rule everywhere."""
    lf = F.logsigmoid(f)
    return torch.where(lf < LOG_FORGET_FLOOR, float("-inf"), lf)


def mlstm_reference(
    q: torch.Tensor,  # (B, NH, S, DHQK)
    k: torch.Tensor,  # (B, NH, S, DHQK)
    v: torch.Tensor,  # (B, NH, S, DHV)
    i: torch.Tensor,  # (B, NH, S)
    f: torch.Tensor,  # (B, NH, S)
    c_initial: torch.Tensor | None = None,  # (B, NH, DHQK, DHV)
    n_initial: torch.Tensor | None = None,  # (B, NH, DHQK)
    m_initial: torch.Tensor | None = None,  # (B, NH, 1)
    eps: float = 1e-6,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """h (B, NH, S, DHV) and terminal (C, n, m), all float64 (on q's device, or the CPU for MPS)."""
    dd = dict(dtype=torch.float64, device="cpu" if q.device.type == "mps" else q.device)
    q, k, v, i, f = (x.detach().to(**dd) for x in (q, k, v, i, f))
    B, NH, S, DHQK = q.shape
    DHV = v.shape[-1]
    c = torch.zeros(B, NH, DHQK, DHV, **dd) if c_initial is None else c_initial.detach().to(**dd)
    n = torch.zeros(B, NH, DHQK, **dd) if n_initial is None else n_initial.detach().to(**dd)
    m = torch.zeros(B, NH, 1, **dd) if m_initial is None else m_initial.detach().to(**dd)
    scale = DHQK**-0.5
    hs = []
    for t in range(S):
        logf = log_forget_gate(f[:, :, t, None])  # (B, NH, 1)
        it = i[:, :, t, None]  # (B, NH, 1)
        m_new = torch.maximum(logf + m, it)
        fa = torch.exp(logf + m - m_new)
        ia = torch.exp(it - m_new)
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t] * scale
        c = fa[..., None] * c + ia[..., None] * (kt[..., :, None] * vt[..., None, :])
        n = fa * n + ia * kt
        m = m_new
        num = torch.einsum("bhd,bhdv->bhv", qt, c)
        qn = (qt * n).sum(-1, keepdim=True)
        hs.append(num / (torch.maximum(qn.abs(), torch.exp(-m)) + eps))
    h = torch.stack(hs, dim=2) if hs else torch.zeros(B, NH, 0, DHV, **dd)
    return h, (c, n, m)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| / max |ref| in float64 on ref's device: the equivalence measure everywhere here."""
    ref = ref.detach().double()
    x = x.detach().to(device=ref.device, dtype=torch.float64)
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def max_rel_err(out: Any, ref: Any) -> float:
    """The worst ``rel_err`` over the tensors of ``out`` and ``ref`` (tensors or nested tuples of them,
    paired in order): inf where a tensor of ``out`` has another shape or a non-finite value."""
    worst = 0.0
    for x, r in zip(_tensors(out), _tensors(ref)):
        if tuple(x.shape) != tuple(r.shape) or not torch.isfinite(x).all():
            return math.inf
        worst = max(worst, rel_err(x, r))  # on the reference's device
    return worst


def _tensors(x: Any) -> list[torch.Tensor]:
    """The tensors of ``x`` (a tensor or nested tuples/lists of them), depth first."""
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return [x]


VALIDATION_SPIKE = 12.0  # the input-gate spike of validation_inputs (issue 15's tf32 case)


def validation_inputs(
    B: int, NH: int, S: int, DHQK: int, DHV: int, dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu", seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Inputs that a kernel's validation gate must see: q, k, v (B, NH, S, D*) in ``dtype``, float32
    gates i, f (B, NH, S) and carried-in float32 states C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH, 1).

    Random q, k, v and gates like a trained layer's (forget biased open), plus what broke reduced
    precision before: states carried in from an earlier call (the normalizer q·n then cancels), one
    input-gate spike i = +12 per head, and one forget gate shut hard (f = -30) per head.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, NH, S, DHQK, generator=g)
    k = torch.randn(B, NH, S, DHQK, generator=g)
    v = torch.randn(B, NH, S, DHV, generator=g)
    i = torch.randn(B, NH, S, generator=g) * 3.0
    f = torch.randn(B, NH, S, generator=g) * 3.0 + 2.0
    rows = torch.arange(B * NH)
    i.view(B * NH, S)[rows, torch.randint(0, S, (B * NH,), generator=g)] = VALIDATION_SPIKE
    f.view(B * NH, S)[rows, torch.randint(0, S, (B * NH,), generator=g)] = -30.0
    c = torch.randn(B, NH, DHQK, DHV, generator=g)
    n = torch.randn(B, NH, DHQK, generator=g)
    m = torch.randn(B, NH, 1, generator=g) * 3.0
    return (*(x.to(device, dtype) for x in (q, k, v)), *(x.to(device) for x in (i, f, c, n, m)))
