"""``xlstm-autotune best``: the best validated config for a workload on a machine (thin over storage)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.exits import EXIT_FAILED, EXIT_UNWRITABLE, EXIT_USAGE, error_exit
from storage import DatabaseUnavailable, NoTunedConfig, StorageError, query_best
from xlstm_kernels.kernels.config import Workload


def best(
    workload: str = typer.Option(..., "--workload", "-w", help="B,NH,S,DHQK,DHV,dtype[,mode], e.g. 1,4,512,64,64,float32"),
    machine: str | None = typer.Option(None, "--machine", help="Machine id (default: this machine)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    db: Path | None = typer.Option(None, "--db", help="Tuning database (default: from settings)."),
) -> None:
    """Show the best validated config for a workload on a machine; exit 1 when there is none."""
    try:
        found = query_best(workload, machine_id=machine, path=db)
    except NoTunedConfig as exc:
        if as_json:
            typer.echo(json.dumps({"workload": workload, "machine_id": machine, "best": None,
                                   "error": "no tuned config", "message": str(exc)}))
        typer.echo(f"no tuned config: {exc}", err=True)
        raise typer.Exit(code=EXIT_FAILED) from None
    except DatabaseUnavailable as exc:
        raise error_exit(str(exc), EXIT_UNWRITABLE) from None
    except (StorageError, ValueError) as exc:
        raise error_exit(str(exc), EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2, sort_keys=True))
        return
    speed = f", {found.speedup:.2f}x vs default" if found.speedup is not None else ""
    typer.echo(f"workload  {found.workload}\nmachine   {found.machine_id}\n"
               f"config    {found.config.short(Workload.parse(found.workload).mode)} "
               f"(effective T_inner {found.t_inner_effective})\n"
               f"time      {found.median_ms:.4f} ms median (IQR {found.spread_ms:.4f} ms), "
               f"{found.tokens_per_s:,.0f} tokens/s{speed}\n"
               f"error     {found.equivalence_error:.3g} vs. float64 reference\n"
               f"run       {found.run_id} ({found.run_status}, started {found.run_started_at}; {found.source})")
