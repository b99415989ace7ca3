"""Small real library functions the flow and CLI tests plug into the autotune flow's seams.

``tune_small`` is a genuine (tiny) tuner: it runs candidate configs of the suite (compiled once per
session, see conftest.CONFIGS), checks them against the float64 reference, times them and picks the
fastest. ``publish_json`` writes a real profile file.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import xlstm_kernels as xk
from conftest import CHUNK_T1, REC_T1, make_inputs, rel_err
from flows.outcome import WorkloadOutcome

# heads_per_band=3 does not divide NH=4: the kernels reject it before compiling anything.
BAD_BANDS = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1, heads_per_band=3)
FAIL_DHV = 3  # a workload with DHV == 3 makes tune_small raise: the "one workload fails" case


def tune_small(workload: xk.Workload, *, fingerprint: dict, trials: int | None, time_budget_s: float | None, quick: bool) -> WorkloadOutcome:
    """Validate and time a few configs on ``workload``; the first candidate is the baseline."""
    if workload.DHV == FAIL_DHV:
        raise RuntimeError(f"no candidate compiles for DHV={workload.DHV}")
    inputs = make_inputs(workload.B, workload.NH, workload.S, workload.DHQK, workload.DHV)
    ref_h = xk.mlstm_reference(*inputs)[0]
    times: dict[xk.KernelConfig, float] = {}
    errs: dict[xk.KernelConfig, float] = {}
    rejected: list[tuple[dict[str, Any], str]] = []
    for cfg in (CHUNK_T1, REC_T1, BAD_BANDS)[: (trials or 3)]:
        try:
            h = xk.mlstm(*inputs, config=cfg)[0]
        except ValueError as exc:
            rejected.append((cfg.to_dict(), f"invalid: {exc}"))
            continue
        errs[cfg] = rel_err(h, ref_h)
        if errs[cfg] > 1e-4:
            rejected.append((cfg.to_dict(), f"equivalence error {errs[cfg]:.1e} > 1e-4"))
            continue
        samples = []
        for _ in range(1 if quick else 5):
            t0 = time.perf_counter()
            xk.mlstm(*inputs, config=cfg)
            samples.append((time.perf_counter() - t0) * 1e3)
        times[cfg] = statistics.median(samples)
    best = min(times, key=times.__getitem__)
    return WorkloadOutcome(
        workload=str(workload),
        config=best.to_dict(),
        median_ms=times[best],
        speedup=times[CHUNK_T1] / times[best],
        equiv_err=errs[best],
        rejected=rejected,
    )


def publish_json(fingerprint: dict, outcomes: list[WorkloadOutcome]) -> Path:
    """Write the winners to HOME/profiles/<machine id>.json (atomically) and return the path."""
    home = xk.Settings().resolved_home()
    path = home / "profiles" / f"{fingerprint['machine_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "entries": [o.to_dict() for o in outcomes]}))
    tmp.replace(path)
    return path
