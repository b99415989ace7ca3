"""One tile of a compile key's block: its span and its random inputs."""

from __future__ import annotations

import torch

from ..kernels.compiler import CompileKey


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
