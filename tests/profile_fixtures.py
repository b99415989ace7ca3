"""Fixtures and builders shared by the profile, runtime and adapter tests (imported by those files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import xlstm_kernels as xk
from conftest import settings_env


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XLSTM_AUTOTUNE_HOME; settings and the runtime's loaded profile are reset around the test."""
    # profiles here are CPU ones, also on GPU boxes
    with settings_env(monkeypatch, {"HOME": str(tmp_path), "DEVICE": "cpu"}, unset=("PROFILE_PATH", "USE_PROFILE")):
        yield tmp_path


def entry(workload: str, config: xk.KernelConfig, requested: int | None = None, median_s: float = 1e-3,
          speedup: float = 1.5, err: float = 1e-6) -> dict[str, Any]:
    """A profile entry as a dict (the tuner's output format)."""
    w = xk.Workload.parse(workload)
    return dict(
        workload=workload, config=config.to_dict(), t_inner_requested=requested or config.t_inner,
        t_inner_effective=config.t_inner, median_s=median_s, tokens_per_s=w.tokens() / median_s,
        speedup_vs_default=speedup, equivalence_error=err,
    )


def make_profile(entries: list[dict[str, Any]], **fingerprint_changes: Any) -> xk.Profile:
    """A profile for this machine (or, with changes, for a modified fingerprint)."""
    fp = xk.fingerprint("cpu")
    if fingerprint_changes:
        fields = {k: v for k, v in fp.to_dict().items() if k != "machine_id"}
        fp = xk.Fingerprint(**{**fields, **fingerprint_changes})
    return xk.Profile.for_machine(fp, entries, xk.TuningRun(run_id="test-run", source="test"))
