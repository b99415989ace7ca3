"""``xlstm-autotune bench``: a config (the profile's pick, or a given one) against the default, side by side.

Thin over ``tuner.bench``; exit 1 when a config fails to compile/run or fails the equivalence check,
2 for bad input (a heads_per_band that does not divide NH included), 5 when the memory estimate is over the limit.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from flows.exits import EXIT_FAILED, EXIT_TOO_LARGE, EXIT_USAGE, error_exit


def bench(
    workload: str = typer.Option(..., "--workload", "-w", help="B,NH,S,DHQK,DHV,dtype[,mode], e.g. 1,4,512,64,64,float32"),
    config: Optional[str] = typer.Option(
        None, "--config", help='KernelConfig as JSON, e.g. \'{"family": "recurrent", "t_inner": 4}\' '
        "(default: the config this machine's profile picks for the workload)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="Device (default: setting DEVICE, else best available)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, help="Interleaved timing rounds (default: from settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time the profile's config for a workload (or --config) against the default config, side by side."""
    from tuner import CandidateFailed, bench as run_bench
    from xlstm_kernels.kernels.config import KernelConfig
    from xlstm_kernels.kernels.validation import WorkloadTooLarge

    from .settings import get_flow_settings

    try:
        cfg = KernelConfig.from_dict(json.loads(config)) if config is not None else None
        result = run_bench(workload, cfg, device=device or get_flow_settings().device, rounds=rounds)
    except json.JSONDecodeError as exc:
        raise error_exit(f"--config is not JSON: {exc}", EXIT_USAGE) from None
    except CandidateFailed as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    except WorkloadTooLarge as exc:
        raise error_exit(str(exc), EXIT_TOO_LARGE) from None
    except (ValueError, TypeError) as exc:
        raise error_exit(str(exc), EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"workload  {result.workload} on {result.device}, {result.rounds} interleaved rounds")
    typer.echo(f"chosen    ({result.source}: {result.reason})")
    for label, side in (("config", result.chosen), ("default", result.default)):
        typer.echo(f"{label:<9} {side.config.short(result.workload.mode):<40} {side.median_ms:>10.4f} ms median "
                   f"(IQR {side.spread_ms:.4f})  {side.tokens_per_s:>12,.0f} tok/s  err {side.equivalence_error:.1e}")
    iv = result.interval
    span = (f" ({iv.confidence:.0%} interval {iv.low:.2f}-{iv.high:.2f}x, median of per-round ratios)"
            if iv is not None and iv.low is not None and iv.high is not None else "")
    typer.echo(f"speedup   {result.speedup:.2f}x over the default config{span}")
    for label, side in (("config", result.chosen), ("default", result.default)):
        if side.instability:
            typer.echo(f"unstable  {label}: {side.instability}")
    if result.busy_reason:
        typer.echo(f"warning   {result.busy_reason}", err=True)
