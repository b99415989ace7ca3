"""A plan for a Mac, made on any machine: which candidates fail on Metal, and where each family's ratchet lands.

``plan_target(workloads, target="mps")`` probes every candidate of each workload's search space (as the
tuner would on an MPS device: fp32, default compile mode) with ``xlstm_kernels.probe(..., target="mps")``:
off-Mac that generates the real Metal source with Inductor's MPS code generator and checks its kernels
against Metal's limits, ratcheting ``T_inner`` down (after trying ``max_fusion_unique_io_buffers``).
Nothing is timed. Every outcome is stored in the tuning DB's ``probes`` table with ``target="mps"``,
keyed by torch version and the tuner's ``effective_key``, so a Mac's first scheduled run can skip known
failures (``TuningDB.probe_outcome(machine_id, torch, key, target="mps")`` finds them from any machine).
Decode workloads run the decode step, which has no tile to ratchet: they are listed, not probed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import xlstm_kernels as xk
from storage import TuningDB, open_db
from xlstm_kernels.kernels.config import KernelConfig, Workload
from xlstm_kernels.device import default_device
from xlstm_kernels.probe import TARGETS, ProbeResult, probe, resolve_max_buffers

from ._space import SearchSpace, effective_key, parse_workload
from .settings import TunerSettings, resolve_tuner_settings


@dataclass(frozen=True)
class FamilyLanding:
    """Where the ratchet lands for one family (and chunk size) of a workload on the target."""

    family: str
    chunk_size: int | None  # None for the recurrent family
    requested_t_inner: int  # the largest T_inner its candidates ask for
    effective_t_inner: int | None  # the smallest T_inner those candidates land at (None: none compiles)
    fusion_knob_needed: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(family=self.family, chunk_size=self.chunk_size, requested_t_inner=self.requested_t_inner,
                    effective_t_inner=self.effective_t_inner, fusion_knob_needed=self.fusion_knob_needed)


@dataclass(frozen=True)
class WorkloadPlan:
    """Probe outcomes of every candidate of one workload on the target."""

    workload: Workload
    results: tuple[ProbeResult, ...]  # empty for a decode workload (the step is not probed)

    @property
    def failing(self) -> list[ProbeResult]:
        """Candidates no T_inner of which fits the target."""
        return [r for r in self.results if not r.ok]

    @property
    def ratcheted(self) -> list[ProbeResult]:
        """Candidates that fit only below their requested T_inner, or only with the fusion knob."""
        return [r for r in self.results if r.ok and (r.effective_t_inner != r.requested_t_inner or r.fusion_knob_needed)]

    def landings(self) -> list[FamilyLanding]:
        """Per family (and chunk size): the largest requested T_inner and where its candidates land."""
        groups: dict[tuple[str, int | None], list[ProbeResult]] = {}
        for r in self.results:
            cs = r.requested.chunk_size if r.requested.family == "chunkwise" else None
            groups.setdefault((r.requested.family, cs), []).append(r)
        out = []
        for (fam, cs), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            top = max(r.requested_t_inner for r in rs)
            tops = [r for r in rs if r.requested_t_inner == top]
            eff = [r.effective_t_inner for r in tops]
            out.append(FamilyLanding(fam, cs, top, None if None in eff else min(e for e in eff if e is not None),
                                     any(r.fusion_knob_needed for r in tops)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "workload": str(self.workload), "candidates": len(self.results),
            "failing": [r.requested.short() for r in self.failing],
            "ratcheted": [{"config": r.requested.short(), "effective_t_inner": r.effective_t_inner,
                           "fusion_knob_needed": r.fusion_knob_needed} for r in self.ratcheted],
            "landings": [x.to_dict() for x in self.landings()],
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True)
class TargetPlan:
    """A dry planning run for a target device: per workload, what fails and where the ratchets land."""

    target: str
    torch: str
    method: str  # "codegen" (generated source, off-Mac) or "compile" (a Mac's real compiles)
    buffer_limit: int | None
    workloads: tuple[WorkloadPlan, ...]
    db_path: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``tune --target mps --json``)."""
        return {"target": self.target, "torch": self.torch, "method": self.method,
                "buffer_limit": self.buffer_limit, "db_path": self.db_path, "seconds": self.seconds,
                "workloads": [w.to_dict() for w in self.workloads]}

    def format_text(self) -> str:
        """The plan for a Mac, human-readable."""
        how = ("generated Metal source checked statically (not compiled by Metal, not run)"
               if self.method == "codegen" else "real compiles on this Mac")
        lines = [f"plan for {self.target} on torch {self.torch}: {how}; buffer limit {self.buffer_limit}"]
        for w in self.workloads:
            if not w.results:
                lines.append(f"{w.workload}: decode runs the step (no tile to ratchet): not probed")
                continue
            lines.append(f"{w.workload}: {len(w.results)} candidates, {len(w.failing)} fail on {self.target}, "
                         f"{len(w.ratcheted)} ratcheted")
            for x in w.landings():
                fam = x.family + ("" if x.chunk_size is None else f" L{x.chunk_size}")
                lands = "no T_inner fits" if x.effective_t_inner is None else f"lands at T_inner {x.effective_t_inner}"
                knob = " (with max_fusion_unique_io_buffers)" if x.fusion_knob_needed else ""
                lines.append(f"  {fam:<16} T_inner {x.requested_t_inner} {lands}{knob}")
            for r in w.failing:
                lines.append(f"  FAILS {r.requested.short()}: {r.failure}: {r.message.splitlines()[0][:160] if r.message else ''}")
        if self.db_path:
            lines.append(f"stored in {self.db_path} (probes, target={self.target!r})")
        return "\n".join(lines)


def candidates_for(workload: Workload, target: str, settings: TunerSettings | None = None) -> list[KernelConfig]:
    """The configs a tuning run on ``target`` would try for ``workload`` (its search space, tune_* settings)."""
    return SearchSpace.from_settings(workload, torch.device(target), resolve_tuner_settings(settings)).candidates()


def plan_target(
    workloads: Sequence[str | Workload],
    db: TuningDB | str | Path | None = None,
    *,
    target: str = "mps",
    fusion_knob: bool = True,
    settings: TunerSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> TargetPlan:
    """Probe every candidate of ``workloads`` for ``target`` without timing, store the outcomes, return the plan.

    ``db``: the tuning DB (path, open DB, or None for the configured one); ``progress``: called with
    one line per probed candidate.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    settings = resolve_tuner_settings(settings)
    wls = [parse_workload(w) for w in workloads]
    t0 = time.perf_counter()
    limit = resolve_max_buffers("auto", torch.device(target))
    method = "compile" if torch.backends.mps.is_available() else "codegen"
    database = db if isinstance(db, TuningDB) else open_db(db)
    try:
        plans = _plan(wls, database, target, fusion_knob, settings, progress)
    finally:
        if database is not db:
            database.close()
    return TargetPlan(target=target, torch=torch.__version__, method=method, buffer_limit=limit,
                      workloads=tuple(plans), db_path=str(database.path), seconds=time.perf_counter() - t0)


def _plan(wls: list[Workload], database: TuningDB, target: str, fusion_knob: bool, settings: TunerSettings,
          progress: Callable[[str], None] | None) -> list[WorkloadPlan]:
    host = torch.device(settings.device or default_device())
    machine_id = database.record_machine(xk.fingerprint(host))
    plans: list[WorkloadPlan] = []
    for wl in wls:
        if wl.mode == "decode":
            plans.append(WorkloadPlan(wl, ()))
            continue
        results = []
        for cfg in candidates_for(wl, target, settings):
            r = probe(cfg, wl, target=target, fusion_knob=fusion_knob)
            results.append(r)
            database.record_probe(
                machine_id=machine_id, torch_version=torch.__version__, compile_key=effective_key(cfg, wl),
                config=cfg, t_inner_requested=cfg.t_inner, t_inner_effective=r.effective_t_inner, ok=r.ok,
                error=None if r.ok else f"{r.failure}: {r.message}"[:2000], compile_s=None,
                max_buffers=r.max_buffers, target=target, detail=r.to_dict())
            if progress is not None:
                state = "ok" if r.ok else f"FAIL {r.failure}"
                progress(f"{wl} {cfg.short()}: {state}, T_inner {r.requested_t_inner} -> {r.effective_t_inner}")
        plans.append(WorkloadPlan(wl, tuple(results)))
    return plans
