"""One tile of a compile key's block: its span and its random inputs."""

from __future__ import annotations

import torch

from ..kernels.compiler import CompileKey
from ..kernels.inputs import random_inputs


def tile_span(key: CompileKey) -> int:
    """Time steps in one tile of ``key``'s block (t_inner units of 1 step or chunk_size steps)."""
    if key.family == "step":
        raise ValueError("the decode step has no tile; probe the recurrent or chunkwise family")
    return key.t_inner * (key.chunk_size if key.family == "chunkwise" else 1)


def tile_inputs(key: CompileKey, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs and zero states for one tile of ``key``'s block, on ``key.device``."""
    from ..kernels.config import DTYPES

    B, H, T, dq, dv = key.B, key.heads, tile_span(key), key.DHQK, key.DHV
    dev = torch.device(key.device)
    qkvif = random_inputs(B, H, T, dq, dv, dtype=DTYPES[key.dtype], device=dev, seed=seed, gate_scale=1.0,
                          forget_bias=2.0)
    c, n, m = torch.zeros(B, H, dq, dv), torch.zeros(B, H, dq), torch.zeros(B, H, 1)
    return qkvif + tuple(x.to(dev) for x in (c, n, m))
