"""Synthetic tuner studies for the report tests and benchmarks/report_size.py (real Optuna storage, no compile).

Trials carry the attributes the tuner sets (tuner/_study.py objective, tuner/_attrs.py): status,
reason, config, compile_s, equivalence_error, spread_ms, tokens_per_s, label, is_default ...
"""

from __future__ import annotations

import math
import random

import optuna
from optuna.distributions import CategoricalDistribution

from xlstm_kernels.kernels.config import KernelConfig

PREFILL = "1,4,512,64,128,float32,prefill"
DECODE = "1,4,1,64,128,float32,decode"
FAMILIES = ("chunkwise", "recurrent")
CHUNKS = (16, 32, 64, 128, 256)
HPBS = (1, 2, 4)
T_INNERS = (1, 2, 4, 8, 16)
MODES = ("default", "max-autotune-no-cudagraphs")
DISTRIBUTIONS = {"family": CategoricalDistribution(FAMILIES), "chunk_size": CategoricalDistribution(CHUNKS),
                 "heads_per_band": CategoricalDistribution((None, *HPBS)), "t_inner": CategoricalDistribution(T_INNERS),
                 "compile_mode": CategoricalDistribution(MODES)}
DEFAULT = KernelConfig()
WINNER = KernelConfig(family="chunkwise", chunk_size=64, heads_per_band=2, t_inner=2)


def _time_ms(cfg: KernelConfig) -> float:
    """A smooth synthetic cost with its minimum at WINNER (hpb 2, L64, T2 chunkwise) and outliers far off."""
    base = 0.8 if cfg.family == "chunkwise" else 3.0
    cost = base * (1 + abs(math.log2(cfg.chunk_size / 64)) * 0.4) * (1 + abs(math.log2(cfg.t_inner / 2)) * 0.3)
    cost *= 1 + abs((cfg.heads_per_band or 4) - 2) * 0.15
    cost *= 1.0 if cfg.compile_mode == "default" else 1.1
    if cfg.t_inner == 16 and cfg.chunk_size == 256:
        cost *= 300  # a pathological candidate: log colour scale keeps the rest readable
    return cost


def add_trial(study: optuna.Study, cfg: KernelConfig, status: str, number_hint: int, *, mark: str | None = None,
              is_default: bool = False, extra: dict | None = None, value: float | None = None) -> None:
    """One finished tuner-like trial of ``cfg``: ``ok``, ``rejected`` (gate) or ``failed`` (compile);
    ``value``: its median ms (default: a synthetic cost of the config)."""
    t_eff = min(cfg.t_inner, 4) if cfg.family == "chunkwise" and cfg.chunk_size >= 128 else cfg.t_inner
    attrs = {"config": cfg.to_dict(), "config_key": f"{cfg.to_dict()}", "status": status, "trial_id": number_hint,
             "label": cfg.short() + (f" (compiled at T{t_eff})" if t_eff != cfg.t_inner else ""),
             "is_default": is_default, "t_inner_requested": cfg.t_inner, "t_inner_effective": t_eff,
             "compile_s": 2.0 + cfg.t_inner * 0.7, "tolerance": 1e-4, "reason": None}
    given, value = value, None
    state = optuna.trial.TrialState.COMPLETE
    if status == "ok":
        value = given if given is not None else _time_ms(cfg)
        attrs.update(equivalence_error=3e-6, spread_ms=value * 0.03, tokens_per_s=512 / (value / 1e3),
                     median_ms=value)
    elif status == "rejected":
        value = math.inf
        attrs.update(equivalence_error=2.2e-2,
                     reason="equivalence error 2.2e-02 > tolerance 1e-04 vs float64 reference")
    else:
        state = optuna.trial.TrialState.FAIL
        attrs.update(compile_s=None, reason="InductorError: number of constant buffers exceeds maximum supported (31)")
    if mark:
        attrs["unstable"] = mark
    attrs.update(extra or {})
    params = {"family": cfg.family, "chunk_size": cfg.chunk_size, "heads_per_band": cfg.heads_per_band,
              "t_inner": cfg.t_inner, "compile_mode": cfg.compile_mode}
    study.add_trial(optuna.trial.create_trial(state=state, value=value, params=params,
                                              distributions=DISTRIBUTIONS, user_attrs=attrs))


def synthetic_study(storage: str, n_trials: int, *, name: str | None = None, seed: int = 0,
                    workload: str = PREFILL) -> optuna.Study:
    """A study named like the tuner's, with ``n_trials`` distinct candidates: default first, the winner,
    ~10% rejected by the gate, ~5% failed to compile, one duplicate draw."""
    study = optuna.create_study(study_name=name or f"machine0/{workload}/sig0/torch-x", storage=storage)
    study.set_user_attr("workload", workload)
    rng = random.Random(seed)
    grid = [KernelConfig(family=f, chunk_size=c, heads_per_band=h, t_inner=t, compile_mode=m)
            for m in MODES for f in FAMILIES for c in CHUNKS for h in HPBS for t in T_INNERS
            if not (f == "recurrent" and c % t)]
    rng.shuffle(grid)
    picks = [DEFAULT, WINNER] + [c for c in grid if c not in (DEFAULT, WINNER)]
    for n, cfg in enumerate(picks[:n_trials]):
        roll = rng.random() if n > 1 else 1.0
        status = "rejected" if roll < 0.10 else "failed" if roll < 0.15 else "ok"
        add_trial(study, cfg, status, n + 1, is_default=n == 0)
    if n_trials > 2:  # a duplicate draw: the report leaves it out
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=_time_ms(WINNER), distributions=DISTRIBUTIONS,
            params={"family": WINNER.family, "chunk_size": WINNER.chunk_size, "heads_per_band": 2, "t_inner": 2,
                    "compile_mode": "default"},
            user_attrs={"duplicate_of": 1, "config": WINNER.to_dict()}))
    return study
