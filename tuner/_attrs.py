"""Readable Optuna user attributes for the dashboard and the report (what optuna-dashboard shows).

The tuner's own attributes (``status``, ``reason``, ``config``, ``compile_s``, ...) drive its logic;
these are added beside them, for people: a one-line config, the T_inner that actually compiled,
the gate's error against its tolerance, and the workload a study tunes.
"""

from __future__ import annotations

from typing import Any

from xlstm_kernels.kernels.config import Workload

from ._evaluate import Evaluation


def display_attrs(ev: Evaluation, wl: Workload, is_default: bool, study: Any | None = None) -> dict[str, Any]:
    """Trial attributes that read well in optuna-dashboard; with ``study``, label the study too (once)."""
    if study is not None and "workload" not in study.user_attrs:
        study.set_user_attr("workload", str(wl))
        study.set_user_attr("mode", wl.mode)
    t_eff = ev.t_inner_effective
    label = ev.config.short(wl.mode)
    if t_eff is not None and t_eff != ev.config.t_inner and wl.mode != "decode":
        label += f" (compiled at T{t_eff})"
    attrs: dict[str, Any] = {"label": label, "is_default": is_default, "t_inner_requested": ev.config.t_inner,
                             "t_inner_effective": t_eff, "tolerance": ev.tolerance, "validate_s": ev.validate_s}
    if ev.timing is not None:
        attrs.update(median_ms=ev.timing.median_ms, min_ms=ev.timing.min_ms)
    return attrs
