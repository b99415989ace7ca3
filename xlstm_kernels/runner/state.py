"""The runner's recurrent state: static buffers written in place, and the handle callers hold.

Notation: L blocks, B the batch size the buffers hold (one set per batch size a runner has seen, up
to its ``max_batch_size``). Per block: C (B, NH, DHQK, DHV) as a view of DHV-major storage
(``xk.step_layout``: the decode step reads and writes it along contiguous memory), n (B, NH, DHQK),
m (B, NH, 1). The buffers are allocated once and marked static (``torch._dynamo.mark_static_address``), so the compiled step
updates them in place and CUDA graphs are not skipped for "mutated inputs".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

States = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class StateBuffers:
    """Static (C, n, m) buffers for every block, for ``batch`` sequences."""

    def __init__(self, blocks: int, batch: int, NH: int, DHQK: int, DHV: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        dd = dict(dtype=dtype, device=device)
        self.c_t = [torch.zeros(batch, NH, DHV, DHQK, **dd) for _ in range(blocks)]  # C transposed
        self.n = [torch.zeros(batch, NH, DHQK, **dd) for _ in range(blocks)]
        self.m = [torch.zeros(batch, NH, 1, **dd) for _ in range(blocks)]
        for t in (*self.c_t, *self.n, *self.m):
            torch._dynamo.mark_static_address(t)
        self.batch = batch
        self.dtype = dtype

    def layer(self, idx: int, B: int) -> States:
        """Block ``idx``'s (C (B, NH, DHQK, DHV), n (B, NH, DHQK), m (B, NH, 1)): views of the buffers."""
        return self.c_t[idx][:B].transpose(-1, -2), self.n[idx][:B], self.m[idx][:B]

    def write(self, idx: int, B: int, c: torch.Tensor, n: torch.Tensor, m: torch.Tensor) -> None:
        """Copy block ``idx``'s new state (first B rows) into the buffers."""
        dst_c, dst_n, dst_m = self.layer(idx, B)
        dst_c.copy_(c)
        dst_n.copy_(n)
        dst_m.copy_(m)

    @property
    def nbytes(self) -> int:
        """Bytes the buffers hold."""
        return sum(t.numel() * t.element_size() for t in (*self.c_t, *self.n, *self.m))


@dataclass(frozen=True, eq=False)
class RunnerState:
    """A handle on a runner's state after ``position`` tokens of one sequence (prompt and generated).

    The runner keeps ONE live state in its static buffers: each ``prefill``/``decode`` returns a new
    handle and makes older handles stale (passing one back raises ``StaleStateError``). ``layers()``
    reads the live tensors; ``to_dict()`` copies them out in the models' own state format.
    """

    runner_id: int
    model_key: str
    generation: int  # which prefill started this sequence
    position: int  # tokens processed so far in this sequence
    batch_size: int
    _buffers: StateBuffers = field(repr=False)

    def layers(self) -> list[States]:
        """Per block (C, n, m) for this state's batch: live views of the runner's buffers."""
        return [self._buffers.layer(idx, self.batch_size) for idx in range(len(self._buffers.c_t))]

    def to_dict(self) -> dict[int, States]:
        """``{block: (C, n, m)}`` float32 copies, the format of ``xLSTMLarge``'s own state."""
        return {idx: tuple(x.float().clone() for x in st) for idx, st in enumerate(self.layers())}  # type: ignore[misc]
