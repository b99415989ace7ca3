"""Extreme and infinite gates, every family and the decode step, against the float64 reference.

The inputs are the suite's (``SHAPE``, the four ``CONFIGS``: no new compile keys) with one gate
pushed out: a forget gate far shut (f = -1e4 ... -inf), an input gate far open (large, +inf). The
reference is the definition, including its one clamp (``reference.LOG_FORGET_FLOOR``): NaN must
appear exactly where the reference has it (i = +inf: from that step on, as exp(inf - inf)), and
every finite value must be within the float32 tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

import xlstm_kernels as xk
from conftest import CONFIGS, REF_RTOL, SHAPE, make_inputs

INF = math.inf
# (gate, step, value); steps 10 and 12 sit inside a chunk of 8 (and of 16), not at its start
CASES = [("f", 10, -1e4), ("f", 10, -1e5), ("f", 10, -1e6), ("f", 10, -1e30), ("f", 10, -INF), ("f", 12, -INF),
         ("i", 12, 1e4), ("i", 12, INF), ("i", 12, -INF)]
IDS = [f"{g}{t}={v:g}" for g, t, v in CASES]


def spiked(gate: str, step: int, value: float) -> tuple[torch.Tensor, ...]:
    """The suite's inputs with one gate value replaced at ``step`` in every head."""
    q, k, v, i, f = make_inputs(**SHAPE)
    (i if gate == "i" else f)[:, :, step] = value
    return q, k, v, i, f


def assert_like_reference(got: torch.Tensor, ref: torch.Tensor) -> None:
    """NaN exactly where the reference has NaN, the finite rest within float32 rounding of it."""
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(got), fin), (
        f"{int((~torch.isfinite(got)).sum())} non-finite values where the reference has {int((~fin).sum())}")
    if fin.any():
        err = ((got.double() - ref).abs()[fin].max() / ref.abs()[fin].max().clamp_min(1e-30)).item()
        assert err < REF_RTOL[torch.float32], err


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_families_match_reference_at_extreme_gates(name, case):
    x = spiked(*case)
    h_ref, st_ref = xk.mlstm_reference(*x)
    h, st = xk.mlstm(*x, config=CONFIGS[name])
    for got, ref in zip((h, *st), (h_ref, *st_ref)):
        assert_like_reference(got, ref)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_step_matches_reference_at_extreme_gates(case):
    q, k, v, i, f = spiked(*case)
    B, NH, S, DHQK = q.shape
    c, n, m = torch.zeros(B, NH, DHQK, v.shape[-1]), torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1)
    hs = []
    for t in range(S):
        h, (c, n, m) = xk.mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t, None], f[:, :, t, None], c, n, m)
        hs.append(h)
    h_ref, st_ref = xk.mlstm_reference(q, k, v, i, f)
    for got, ref in zip((torch.stack(hs, 2), c, n, m), (h_ref, *st_ref)):
        assert_like_reference(got, ref)


def test_closed_gate_rule_is_the_reference_s():
    """Below LOG_FORGET_FLOOR a forget gate is closed (as f = -inf); above it, plain logsigmoid."""
    from xlstm_kernels.kernels.reference import LOG_FORGET_FLOOR, log_forget_gate

    f = torch.tensor([-INF, -1e30, LOG_FORGET_FLOOR - 1.0, LOG_FORGET_FLOOR + 1.0, -20.0, 0.0, INF],
                     dtype=torch.float64)
    lf = log_forget_gate(f)
    assert lf[:3].eq(-INF).all()
    assert torch.equal(lf[3:], torch.nn.functional.logsigmoid(f[3:]))


def test_tuner_validates_on_spiky_inputs_with_states():
    """The tuner's gate sees carried-in states, an input-gate spike and a shut forget gate (the cases
    where tf32/mixed went wrong): its prefill validation inputs are xk.validation_inputs."""
    from tuner._evaluate import validation_inputs
    from xlstm_kernels.kernels.reference import VALIDATION_SPIKE

    wl = xk.Workload(2, 4, 64, 16, 32, "bfloat16")
    q, k, v, i, f, c, n, m = validation_inputs(wl, 40, torch.device("cpu"), seed=1)
    assert q.shape == (2, 4, 40, 16) and q.dtype == torch.bfloat16 and c.shape == (2, 4, 16, 32)
    assert (i == VALIDATION_SPIKE).sum(-1).ge(1).all() and (f <= -30).sum(-1).ge(1).all()
    assert c.abs().amin((-2, -1)).gt(0).all() and n.abs().amax(-1).gt(0).all() and m.abs().gt(0).any()
