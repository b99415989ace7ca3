"""Random mLSTM inputs of one shape: the one generator the tuner, the probe, the benchmarks and the tests share.

Notation: B batch, NH heads, S steps, DHQK / DHV head dims. Draws come from one CPU generator in a
fixed order (q, k, v, i, f), so a seed gives the same tensors on every device; the gate distribution
is the caller's choice (``gate_scale``, ``forget_bias``), since the tuner and the tests want gates
spread wide (scale 3) and the benchmarks gates like a trained layer's (scale 1, forget biased open).
"""

from __future__ import annotations

import torch


def random_inputs(
    B: int, NH: int, S: int, DHQK: int, DHV: int, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu", seed: int = 0, gate_scale: float = 3.0, forget_bias: float = 2.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """q, k ``(B, NH, S, DHQK)`` and v ``(B, NH, S, DHV)`` in ``dtype``; float32 gates i, f ``(B, NH, S)``.

    q, k, v ~ N(0, 1); i ~ N(0, gate_scale²); f ~ N(forget_bias, gate_scale²). ``generator`` (else a
    fresh one seeded with ``seed``) lets a caller draw more tensors after these from the same stream.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    q = torch.randn(B, NH, S, DHQK, generator=g)
    k = torch.randn(B, NH, S, DHQK, generator=g)
    v = torch.randn(B, NH, S, DHV, generator=g)
    i = torch.randn(B, NH, S, generator=g) * gate_scale
    f = torch.randn(B, NH, S, generator=g) * gate_scale + forget_bias
    return tuple(x.to(device, dtype) for x in (q, k, v)) + (i.to(device), f.to(device))
