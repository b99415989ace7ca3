"""The two kernel families as plain functions that ``torch.compile`` turns into pseudo-kernels.

Notation: B batch, HB heads in the band, T time steps in the block, L chunk size, NC chunks in the
block (= t_inner), DHQK / DHV head dims. States are float32: C (B, HB, DHQK, DHV), n (B, HB, DHQK),
m (B, HB, 1). Each factory returns a block function that advances the state by ``t_inner`` units in
strict time order and returns ``(h, c, n, m)``; static parameters live in its closure so that one
compiled graph has no Python-level branching left.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .reference import LOG_FORGET_FLOOR, log_forget_gate

BlockFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def make_recurrent_block(t_inner: int, eps: float) -> BlockFn:
    """A block of ``t_inner`` unrolled recurrent steps (the unit is one time step)."""

    def recurrent_block(q, k, v, i, f, c, n, m):
        # q, k: (B, HB, T, DHQK); v: (B, HB, T, DHV); i, f: (B, HB, T); T == t_inner
        scale = q.shape[-1] ** -0.5
        out_dtype = v.dtype
        q = q.float() * scale
        k = k.float()
        v = v.float()
        i = i.float()
        logf = log_forget_gate(f.float())  # (B, HB, T)
        hs = []
        for t in range(t_inner):
            lf, it = logf[:, :, t, None], i[:, :, t, None]  # (B, HB, 1)
            m_new = torch.maximum(lf + m, it)
            fa = torch.exp(lf + m - m_new)
            ia = torch.exp(it - m_new)
            kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]  # (B, HB, D*)
            c = fa[..., None] * c + (ia * kt)[..., :, None] * vt[..., None, :]  # (B, HB, DHQK, DHV)
            n = fa * n + ia * kt  # (B, HB, DHQK)
            m = m_new
            num = (qt[..., :, None] * c).sum(-2)  # (B, HB, DHV)
            qn = (qt * n).sum(-1, keepdim=True)  # (B, HB, 1)
            hs.append(num / (torch.maximum(qn.abs(), torch.exp(-m)) + eps))
        return torch.stack(hs, dim=2).to(out_dtype), c, n, m

    return recurrent_block


DECAY_BLOCK_ROWS = 8  # rows per block of the intra-chunk weight matrix (see _intra_weights)
# Log forget gates below this are summed apart from the others in the chunkwise family (see
# forget_sums): exp(-16) ~ 1e-7, so only the state's last few digits ever depended on rounding at
# that size, while one such term in a cumulative sum costs every later difference its low digits.
BIG_LOG_FORGET = -16.0


def forget_sums(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cumulative log forget gates of each chunk, split so that a difference of two stays exact:
    (b, bb, closed) (..., L) each from f (..., L).

    The log forget from step s to step t of a chunk (gates s+1..t) is (b_t - b_s) + (bb_t - bb_s),
    or -inf where ``closed`` differs (a closed gate in between: reference.LOG_FORGET_FLOOR). ``b``
    sums the ordinary gates, ``bb`` the big ones (below BIG_LOG_FORGET, not closed; at most 1000 each)
    and ``closed`` counts the closed ones. A big gate changes ``bb`` only: between two steps with no
    big gate in between, bb_t - bb_s is exactly 0 and b_t - b_s is as exact as if the big gate had never
    been summed (one f = -1e4 in a plain sum left the later differences 1e-3 off; -1e30 wiped them;
    -inf made them -inf - -inf = NaN). Across a big gate the rounding of bb (|bb| <= 1000 per big gate)
    matters only where an input gate makes up for it (i_s - m_t near -(bb_t - bb_s)). Without big
    gates, b is the plain cumulative sum and bb is 0: the weights come out bit-identical to it.
    """
    lf = F.logsigmoid(f)
    closed = lf < LOG_FORGET_FLOOR
    big = lf < BIG_LOG_FORGET
    b = torch.where(big, 0.0, lf).cumsum(-1)
    bb = torch.where(big & ~closed, lf, 0.0).cumsum(-1)
    return b, bb, closed.to(torch.float32).cumsum(-1)


def _intra_weights(b: torch.Tensor, bb: torch.Tensor, closed: torch.Tensor, i: torch.Tensor, m: torch.Tensor,
                   L: int) -> torch.Tensor:
    """exp(F(s, t) + i_s - m_t) for s <= t, 0 above the diagonal: (..., L, L) from (..., L) each
    (F(s, t) = (b_t - b_s) + (bb_t - bb_s), -inf across a closed gate: see forget_sums; i: input
    gate, m: max state per step).

    Rows go in blocks of P. Left of a row block starting at row r the weight factors as
    exp(F(s, r) + i_s - m_r) · exp(F(r, t) + m_r - m_t): row r's own weight times the decay from
    r to t, both <= 1. Those entries take a product instead of an ``exp``; the diagonal blocks take
    one exp per entry: L²/P + L·P + L exps instead of L² (1,088 instead of 4,096 at L = 64, P = 8; on a
    2-core CPU the L² exps were ~8% of a chunkwise call). Every exponent is formed as in the direct
    formula (differences of nearby cumulative sums first), so the rounding does not grow with b; the
    causal mask comes after the input gate is added, so an i = +inf never makes a NaN above the diagonal.
    """
    P = DECAY_BLOCK_ROWS if L % DECAY_BLOCK_ROWS == 0 else L
    NR, lead = L // P, b.shape[:-1]
    b_blk, bb_blk, cl_blk, i_blk, m_blk = (x.reshape(*lead, NR, P) for x in (b, bb, closed, i, m))
    tril = torch.ones(P, P, dtype=torch.bool, device=b.device).tril()
    diag = torch.exp(torch.where(tril & (cl_blk[..., :, None] == cl_blk[..., None, :]),
                                 b_blk[..., :, None] - b_blk[..., None, :] + (bb_blk[..., :, None] - bb_blk[..., None, :])
                                 + i_blk[..., None, :] - m_blk[..., :, None], float("-inf")))  # (..., NR, P, P)
    b_r, bb_r, cl_r, m_r = b_blk[..., :1], bb_blk[..., :1], cl_blk[..., :1], m_blk[..., :1]  # (..., NR, 1): block's first row
    before = torch.arange(L, device=b.device) < torch.arange(0, L, P, device=b.device)[:, None]  # (NR, L)
    w_col = torch.exp(torch.where(before & (cl_r == closed[..., None, :]),
                                  b_r - b[..., None, :] + (bb_r - bb[..., None, :]) + i[..., None, :] - m_r,
                                  float("-inf")))  # (..., NR, L)
    w_row = torch.exp(torch.where(cl_blk == cl_r, b_blk - b_r + (bb_blk - bb_r) + (m_r - m_blk),
                                  float("-inf")))  # (..., NR, P)
    off = w_col.reshape(*lead, NR, 1, NR, P) * w_row[..., :, None, None]  # 0 from the diagonal block on
    blk = torch.arange(NR, device=b.device)
    same = (blk[None, :] == blk[:, None])[:, None, :, None]  # (NR, 1, NR, 1)
    return torch.where(same, diag[..., None, :], off).reshape(*lead, L, L)


HALF_DTYPES = (torch.bfloat16, torch.float16)  # input dtypes whose values TF32 holds exactly


def half_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of bf16/fp16 inputs (..., M, K) and (..., K, N) with float32 products and sums, as float32.

    On CUDA a half-input tensor-core matmul with float32 output (``bmm(out_dtype=float32)``); elsewhere
    the float32 matmul of the upcast inputs. The products of half values are exact in float32.
    """
    if a.device.type != "cuda":
        return a.float() @ b.float()
    *lead, M, K = a.shape
    out = torch.bmm(a.reshape(-1, M, K), b.reshape(-1, K, b.shape[-1]), out_dtype=torch.float32)
    return out.reshape(*lead, M, -1)


def make_chunkwise_block(t_inner: int, chunk_size: int, eps: float, mixed: bool = False,
                         fp32_scores: bool = False) -> BlockFn:
    """A block of ``t_inner`` chunks of ``chunk_size`` steps in parallel (chunkwise) form.

    Only the scalar max-state ``m`` and the elementwise state decay run sequentially over the
    ``t_inner`` chunks; every chunk's contribution to the state (one batched matmul), the
    intra-chunk quadratic part and the readout run batched over all chunks of the block. With
    ``mixed`` the S·v and q·C products take the input dtype with float32 accumulation. With
    ``fp32_scores`` (set for every precision but fp32) q·kᵀ and the normalizer q·n are float32
    reductions, not matmuls, so no TF32 or half rounding reaches the sums that cancel: with carried-in
    states and a spiky input gate q·n cancels to ~1e-4 of its terms, and a TF32 q·kᵀ made h 1e-1 off.
    The exception is q·kᵀ of bf16/fp16 inputs: their values are exact in TF32's (and float32's)
    inputs and their products exact in float32, so a matmul with float32 products and sums
    (``half_matmul``) is as exact as the reduction, and far faster.
    """
    NC, L = t_inner, chunk_size

    def chunkwise_block(q, k, v, i, f, c, n, m):
        # q, k: (B, HB, NC*L, DHQK); v: (B, HB, NC*L, DHV); i, f: (B, HB, NC*L)
        B, HB, _, DHQK = q.shape
        DHV = v.shape[-1]
        scale = DHQK**-0.5
        mm = q.dtype if mixed else torch.float32
        q = q.reshape(B, HB, NC, L, DHQK)
        k = k.reshape(B, HB, NC, L, DHQK)
        v = v.reshape(B, HB, NC, L, DHV)
        qf, kf, vf = q.float(), k.float(), v.float()
        i = i.float().reshape(B, HB, NC, L)
        b, bb, closed = forget_sums(f.float().reshape(B, HB, NC, L))  # (B, HB, NC, L) each
        # (B, HB, NC, L) log forget from the chunk's start to step t (gates 0..t)
        f_in = torch.where(closed == 0, b + bb, float("-inf"))
        g = f_in[..., -1]  # (B, HB, NC) log forget through the whole chunk
        # (B, HB, NC, L) log weight of step s in the end-of-chunk state
        a = torch.where(closed == closed[..., -1:], b[..., -1:] - b + (bb[..., -1:] - bb) + i, float("-inf"))
        a_max = a.amax(-1)  # (B, HB, NC)

        ms = [m[..., 0]]  # max state at each chunk start, (B, HB) each
        for j in range(NC):
            ms.append(torch.maximum(g[..., j] + ms[j], a_max[..., j]))
        m_all = torch.stack(ms, dim=2)  # (B, HB, NC+1)
        m_start, m_end = m_all[..., :-1], m_all[..., 1:]  # (B, HB, NC)
        decay = torch.exp(g + m_start - m_end)  # (B, HB, NC)
        kg = kf * torch.exp(a - m_end[..., None])[..., None]  # (B, HB, NC, L, DHQK)
        c_add = kg.transpose(-2, -1) @ vf  # (B, HB, NC, DHQK, DHV): every chunk's write, one matmul
        n_add = kg.sum(-2)  # (B, HB, NC, DHQK)
        cs, ns = [], []
        for j in range(NC):
            cs.append(c)
            ns.append(n)
            c = decay[..., j, None, None] * c + c_add[:, :, j]
            n = decay[..., j, None] * n + n_add[:, :, j]
        c_start = torch.stack(cs, dim=2)  # (B, HB, NC, DHQK, DHV)
        n_start = torch.stack(ns, dim=2)  # (B, HB, NC, DHQK)

        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        log_d = torch.where(causal & (closed[..., :, None] == closed[..., None, :]),
                            b[..., :, None] - b[..., None, :] + (bb[..., :, None] - bb[..., None, :])
                            + i[..., None, :], float("-inf"))  # (B, HB, NC, L, L)
        m_intra = log_d.amax(-1)  # (B, HB, NC, L)
        m_inter = f_in + m_start[..., None]  # (B, HB, NC, L)
        m_comb = torch.maximum(m_inter, m_intra)  # (B, HB, NC, L) == recurrent m_t
        d = _intra_weights(b, bb, closed, i, m_comb, L)  # (B, HB, NC, L, L) == exp(log_d - m_comb)
        qg = qf * (torch.exp(m_inter - m_comb) * scale)[..., None]  # (B, HB, NC, L, DHQK)
        if fp32_scores:  # float32 sums of products whatever the matmul precision
            if q.dtype in HALF_DTYPES:  # exact products either way (docstring): the matmul is the fast one
                qk = half_matmul(q, k.transpose(-2, -1))  # (B, HB, NC, L, L)
            else:
                qk = (qf[..., :, None, :] * kf[..., None, :, :]).sum(-1)  # (B, HB, NC, L, L)
            s = qk * (scale * d)
            den = (qg * n_start[..., None, :]).sum(-1, keepdim=True) + s.sum(-1, keepdim=True)
        else:
            s = (q.to(mm) @ k.to(mm).transpose(-2, -1)).float() * (scale * d)  # (B, HB, NC, L, L)
            den = (qg @ n_start[..., None]) + s.sum(-1, keepdim=True)  # (B, HB, NC, L, 1)
        num = (qg.to(mm) @ c_start.to(mm)).float() + (s.to(mm) @ v.to(mm)).float()
        h = num / (torch.maximum(den.abs(), torch.exp(-m_comb)[..., None]) + eps)
        return h.reshape(B, HB, NC * L, DHV).to(v.dtype), c, n, m_end[..., -1:]

    return chunkwise_block


def step_layout(c: torch.Tensor) -> torch.Tensor:
    """C (..., DHQK, DHV) with the same values in the layout the decode step returns: a view of
    DHV-major storage, so the step's readout reduces along contiguous memory. Already so: ``c`` itself.
    """
    if c.dim() >= 2 and c.stride(-2) == 1 and c.stride(-1) == c.shape[-2]:
        return c
    return c.transpose(-1, -2).contiguous().transpose(-1, -2)


def make_step(eps: float) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One decode step: q, k (B, NH, DHQK), v (B, NH, DHV), i, f (B, NH, 1) -> h, c, n, m.

    The new C comes back in :func:`step_layout` (DHV-major storage) whatever the layout of the C
    passed in: fed back, every later step reads and writes the state along contiguous memory
    (on an H100 at B=64 this took the step from 0.238 to 0.191 ms; a plain copy of the state: 0.182).
    """

    def mlstm_decode_step(q, k, v, i, f, c, n, m):
        scale = q.shape[-1] ** -0.5
        dtype = q.dtype
        qf, kf, vf = q.float() * scale, k.float(), v.float()
        lf = log_forget_gate(f.float())
        i = i.float()
        m_new = torch.maximum(lf + m, i)
        fa = torch.exp(lf + m - m_new)  # (B, NH, 1)
        ia = torch.exp(i - m_new)  # (B, NH, 1)
        ct = c.transpose(-1, -2)  # (B, NH, DHV, DHQK)
        # q·C_new = fa (q·C_old) + ia (q·k) v: the readout needs only one pass over the old state.
        num = fa * (ct * qf[..., None, :]).sum(-1) + (ia * (qf * kf).sum(-1, keepdim=True)) * vf
        ct = (fa[..., None] * ct + vf[..., :, None] * (ia * kf)[..., None, :]).contiguous()
        n = fa * n + ia * kf
        qn = (qf * n).sum(-1, keepdim=True)
        h = num / (torch.maximum(qn.abs(), torch.exp(-m_new)) + eps)
        return h.to(dtype), ct.transpose(-1, -2), n, m_new

    return mlstm_decode_step
