"""The math of one model step, as plain functions over the model's own modules (traced, not called opaquely).

Notation: B batch, S positions, D embedding dim, NH heads, DHQK / DHV head dims, V vocabulary.
Everything except the mLSTM itself is the model's own modules (norms, linears, feed-forward), so the
runner computes exactly what the eager model computes there; the mLSTM is either the tuned chunkwise
kernel (prefill) or :func:`mlstm_step_` (decode), the canonical stabilized step of DESIGN.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .arch import ModelParts

Projections = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(x / cap)`` (both families' soft cap); ``None``: no cap."""
    return x if cap is None else cap * torch.tanh(x / cap)


def fused_projection(parts: ModelParts, block: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of the block's q, k, v, output-gate, input-gate and forget-gate weights as one
    (2 NH DHQK + 2 NH DHV + 2 NH, D) matrix and its bias (zeros where a projection has none)."""
    layer = block.mlstm_layer
    mods = ([layer.q, layer.k, layer.v, layer.ogate_preact, layer.igate_preact, layer.fgate_preact]
            if parts.weight_mode == "single" else [layer.qkv_opreact, layer.ifgate_preact])
    with torch.no_grad():
        weight = torch.cat([m.weight for m in mods]).contiguous()
        bias = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in mods])
    return weight, bias


def project(parts: ModelParts, block: torch.nn.Module, x: torch.Tensor,
            fused: tuple[torch.Tensor, torch.Tensor] | None = None) -> Projections:
    """The block's mLSTM inputs from the residual stream x (B, S, D), as the model's mLSTM layer forms them:
    q, k (B, NH, S, DHQK), v (B, NH, S, DHV), the output-gate pre-activation o (B, S, NH*DHV),
    soft-capped gate pre-activations i, f (B, NH, S). ``fused``: :func:`fused_projection`'s weights."""
    layer = block.mlstm_layer
    xn = block.norm_mlstm(x)
    B, S, _ = xn.shape
    NH = parts.num_heads
    if fused is not None:
        qk, vd = NH * parts.dhqk, NH * parts.dhv
        q, k, v, o, i, f = torch.split(F.linear(xn, *fused), (qk, qk, vd, vd, NH, NH), dim=-1)
        i, f = soft_cap(i, parts.gate_soft_cap), soft_cap(f, parts.gate_soft_cap)
    elif parts.weight_mode == "single":
        q, k, v, o = layer.q(xn), layer.k(xn), layer.v(xn), layer.ogate_preact(xn)
        i = soft_cap(layer.igate_preact(xn), parts.gate_soft_cap)
        f = soft_cap(layer.fgate_preact(xn), parts.gate_soft_cap)
    else:
        qk, vd = NH * parts.dhqk, NH * parts.dhv
        q, k, v, o = torch.tensor_split(layer.qkv_opreact(xn), (qk, 2 * qk, 2 * qk + vd), dim=-1)
        i, f = torch.tensor_split(soft_cap(layer.ifgate_preact(xn), parts.gate_soft_cap), (NH,), dim=-1)
    q = q.reshape(B, S, NH, -1).transpose(1, 2)
    k = k.reshape(B, S, NH, -1).transpose(1, 2)
    v = v.reshape(B, S, NH, -1).transpose(1, 2)
    return q, k, v, o, i.transpose(1, 2), f.transpose(1, 2)


def finish_block(block: torch.nn.Module, x: torch.Tensor, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The rest of the block after the mLSTM: x (B, S, D), h (B, NH, S, DHV), o (B, S, NH*DHV) -> x (B, S, D)."""
    layer = block.mlstm_layer
    B, NH, S, DHV = h.shape
    h_norm = layer.multihead_norm(h.transpose(1, 2)).reshape(B, S, NH * DHV)
    x = x + layer.out_proj(torch.sigmoid(o) * h_norm)
    return x + block.ffn(block.norm_ffn(x))


def head(parts: ModelParts, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, S, V) from the last block's output x (B, S, D), as the model's own head computes them."""
    x = parts.out_norm(x)
    if parts.float_logits:  # transformers: lm_head in its weights' dtype, cap in float32
        return soft_cap(parts.lm_head(x.to(parts.lm_head.weight.dtype)).float(), parts.logit_soft_cap)
    return soft_cap(parts.lm_head(x), parts.logit_soft_cap)


def mlstm_step_(
    q: torch.Tensor,  # (B, NH, DHQK)
    k: torch.Tensor,  # (B, NH, DHQK)
    v: torch.Tensor,  # (B, NH, DHV)
    i: torch.Tensor,  # (B, NH, 1)
    f: torch.Tensor,  # (B, NH, 1)
    c: torch.Tensor,  # (B, NH, DHQK, DHV): a view of DHV-major storage (xk.step_layout), updated in place
    n: torch.Tensor,  # (B, NH, DHQK), updated in place
    m: torch.Tensor,  # (B, NH, 1), updated in place
    eps: float,
) -> torch.Tensor:
    """One stabilized mLSTM step (``xk.mlstm_step``'s semantics, float32 math whatever the state's dtype)
    that writes the new (C, n, m) into the given tensors; returns h (B, NH, DHV) in q's dtype."""
    scale = q.shape[-1] ** -0.5
    qf, kf, vf = q.float() * scale, k.float(), v.float()
    c_old = c.transpose(-1, -2).float()  # (B, NH, DHV, DHQK): contiguous rows along DHQK
    n_old, m_old = n.float(), m.float()
    lf = F.logsigmoid(f.float())
    i = i.float()
    m_new = torch.maximum(lf + m_old, i)
    fa = torch.exp(lf + m_old - m_new)  # (B, NH, 1)
    ia = torch.exp(i - m_new)  # (B, NH, 1)
    # q·C_new = fa (q·C_old) + ia (q·k) v: the readout needs one pass over the old state only.
    num = fa * (c_old * qf[..., None, :]).sum(-1) + (ia * (qf * kf).sum(-1, keepdim=True)) * vf  # (B, NH, DHV)
    c_new = fa[..., None] * c_old + vf[..., :, None] * (ia * kf)[..., None, :]  # (B, NH, DHV, DHQK)
    n_new = fa * n_old + ia * kf  # (B, NH, DHQK)
    qn = (qf * n_new).sum(-1, keepdim=True)  # (B, NH, 1)
    h = num / (torch.maximum(qn.abs(), torch.exp(-m_new)) + eps)
    c.transpose(-1, -2).copy_(c_new)
    n.copy_(n_new)
    m.copy_(m_new)
    return h.to(q.dtype)
