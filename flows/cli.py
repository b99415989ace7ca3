"""The ``xlstm-autotune`` command line: thin typer commands over library functions (exit codes: ``flows.exits``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flows.commands_profile import profile_app
from flows.exits import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_SERVER, EXIT_USAGE  # noqa: F401 - EXIT_* are API
from flows.exits import EXIT_TOO_LARGE, EXIT_UNWRITABLE, error_exit, run_error_code

app = typer.Typer(
    name="xlstm-autotune",
    help="Autotune torch.compile pseudo-kernels of the xLSTM mLSTM for this machine.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(profile_app, name="profile")

# The flow `serve` schedules, by its deployment entry point (a hidden option serves another, for tests).
def _profile_note(result) -> str:  # noqa: ANN001 - AutotuneResult
    if result.profile_path and result.profile_version is not None:
        return f"profile v{result.profile_version} published to {result.profile_path} ({result.profile_checksum})"
    if result.profile_path:
        return f"profile unchanged: {result.profile_path} (every workload kept)"
    return "profile: not published"


def _print_result(result, info) -> None:  # noqa: ANN001 - rich output only
    from rich.console import Console
    from rich.table import Table

    from tuner import winners_table

    console = Console(soft_wrap=True)
    console = Console(soft_wrap=True, width=max(console.width, 120))  # pipes get 80 columns: too narrow
    console.print(info.describe())
    if result.run_id is not None:
        console.print(f"tuning run {result.run_id} on machine {result.machine_id}")
    for d in result.decisions:
        console.print(f"{d['action']:>6} {d['workload']}: {d['reason']}")
    if result.outcomes:
        rows = winners_table(result.outcomes)
        table = Table(title=f"Winners on machine {result.machine_id}")
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
        for o in result.outcomes:  # said next to the table: such a winner replaces no published one
            if o.busy_reason and o.action == "tuned":
                console.print(f"[yellow]{o.workload}[/]: {o.busy_reason}")
    for workload, message in result.failed.items():
        console.print(f"[red]failed[/] {workload}: {message}")
    console.print(_profile_note(result))
    console.print(f"report written to {result.report_path}" if result.report_path else "report: none (nothing tuned)")


@app.command()
def tune(
    workload: Optional[list[str]] = typer.Option(
        None, "--workload", "-w", help="Workload 'B,NH,S,DHQK,DHV,dtype[,mode]'; repeatable. Default: setting WORKLOADS."
    ),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trial budget per workload."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", min=0.0, help="Seconds per workload."),
    quick: bool = typer.Option(False, "--quick", help="A short run on small budgets."),
    no_server: bool = typer.Option(
        False, "--no-server", help="Ignore PREFECT_API_URL: run on Prefect's temporary local server."
    ),
    wait: Optional[float] = typer.Option(
        None, "--wait", min=0.0, help="Seconds to wait for another tuning run on this machine (default: refuse)."
    ),
    revalidate: bool = typer.Option(
        False, "--revalidate", help="Re-check the published winners first; tune only new, stale or slowed workloads."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Tune a whole model instead of kernel workloads: a preset "
        "(xlstm-7b-shape, tiny) or a JSON file of xLSTMLargeConfig fields (see docs/model-tuning.md)."
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="With --model: batch size."),
    prompt: int = typer.Option(2048, "--prompt", min=1, help="With --model: prompt length (prefill tokens)."),
    dtype: str = typer.Option("float32", "--dtype", help="With --model: weights' dtype (float32, bfloat16, float16)."),
    target: Optional[str] = typer.Option(
        None, "--target", help="Plan for another device instead of tuning: 'mps' (a Mac). A dry run: every "
        "candidate is probed for Metal, nothing is timed; the plan is stored in the tuning DB."),
) -> None:
    """Run one tuning run now on the embedded defaults (SQLite DB, Prefect's temporary server)."""
    if model is not None:
        from .commands_model import tune_model_command

        if workload or revalidate or target:
            raise error_exit("--model tunes one model: give it without --workload/--revalidate/--target", EXIT_USAGE)
        tune_model_command(model, batch=batch, prompt=prompt, dtype=dtype, trials=trials,
                           time_budget=time_budget, quick=quick, no_server=no_server, wait=wait,
                           json_out=json_out)
    from .settings import FlowSettings

    if target is not None:
        from .commands_probe import plan_target_command

        plan_target_command(list(workload or FlowSettings().workloads), target, json_out)

    from .flows import run_autotune
    from .progress import progress_wanted

    settings = FlowSettings()
    texts = list(workload or settings.workloads)
    from tuner import busy_now

    busy = busy_now(settings)
    if busy:  # timing on a busy machine: unstable candidates are re-measured or marked, wide speedups flagged
        typer.echo(f"warning: machine busy ({busy}): timings may be inflated; unstable candidates are "
                   f"re-measured or marked, and a too-uncertain result does not replace a published winner", err=True)
    try:
        info, state, result = run_autotune(
            texts,
            home=settings.resolved_home(),
            trials=trials,
            time_budget_s=time_budget,
            quick=quick,
            device=settings.device,
            no_server=no_server,
            wait_s=settings.lock_wait_s if wait is None else wait,
            revalidate=revalidate,
            show_progress=not json_out and progress_wanted(),
            startup_timeout_s=settings.server_startup_timeout_s,
        )
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes; anything else propagates
        if (code := run_error_code(exc)) is not None:
            raise error_exit(str(exc), code) from None
        if isinstance(exc, ValueError):
            raise error_exit(f"bad input: {exc}", EXIT_USAGE) from None
        raise
    if result is None:
        raise error_exit(f"the autotune flow ended {state.type.value}: {state.message}", EXIT_FAILED)
    if json_out:
        typer.echo(json.dumps(result.to_dict() | {"state": state.type.value, "server": info.to_dict()}, indent=2))
    else:
        _print_result(result, info)
    raise typer.Exit(code=EXIT_OK if state.is_completed() else EXIT_FAILED)


@app.command()
def serve(
    cron: Optional[str] = typer.Option(None, "--cron", help='Cron schedule, e.g. "0 3 * * *" (default: setting SERVE_CRON).'),
    interval: Optional[float] = typer.Option(None, "--interval", min=1.0, help="Run every SECONDS instead of on a cron."),
) -> None:
    """Register this machine's deployment (named after the machine) and run it on schedule until Ctrl-C."""
    from xlstm_kernels.profiles.fingerprint import fingerprint

    from .flows import autotune, deployment_name, serve_deployment
    from .server import ServerStartError, ServerUnavailable, scheduling_server
    from .settings import FlowSettings

    if cron is not None and interval is not None:
        raise error_exit("give --cron or --interval, not both", EXIT_USAGE)
    settings = FlowSettings()
    name = deployment_name(fingerprint(settings.device).machine_id)
    schedule = f"every {interval:g} s" if interval is not None else f"cron {cron or settings.serve_cron!r}"
    try:
        with scheduling_server(
            settings.resolved_home(), settings.prefect_port, settings.server_startup_timeout_s
        ) as info:
            typer.echo(info.describe())
            typer.echo(f"serving deployment {autotune.name}/{name} ({schedule}); Ctrl-C stops it")
            # scheduled runs re-validate, and queue behind a manual `tune` on the machine lock
            params = {"revalidate": True, "lock_wait_s": settings.serve_lock_wait_s}
            serve_deployment(autotune, name, cron=None if interval else (cron or settings.serve_cron),
                             interval=interval, parameters=params)
    except (ServerUnavailable, ServerStartError) as exc:
        raise error_exit(str(exc), EXIT_SERVER) from None
    typer.echo("stopped" + (" (local Prefect server stopped)" if info.kind == "started" else ""))


@app.command()
def report(
    study: str = typer.Option(..., "--study", help="Name of the Optuna study."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna storage URL (default: the tuner's, sqlite:///HOME/tuning.optuna.db)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default: HOME/reports/STUDY.html)."),
    json_out: bool = typer.Option(False, "--json", help="Print the path and size as JSON."),
) -> None:
    """Write a self-contained HTML report of a study: summary, heatmap, speedup, compile vs run time."""
    from tuner import ReportError, write_study_report
    from xlstm_kernels.paths import PathEscapeError
    from .settings import FlowSettings

    try:
        written = write_study_report(study, settings=FlowSettings(), storage=storage, out=out)
    except PathEscapeError as exc:
        raise error_exit(str(exc), EXIT_USAGE) from None
    except ReportError as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    except OSError as exc:
        raise error_exit(f"cannot write the report: {exc}", EXIT_UNWRITABLE) from None
    if json_out:
        typer.echo(json.dumps({"study": study, "path": str(written.path), "bytes": written.bytes}))
    else:
        typer.echo(f"report written to {written.path} ({written.bytes / 1e6:.1f} MB, self-contained)")


@app.command()
def version() -> None:
    """Print the versions of xlstm-autotune and torch."""
    import torch

    import xlstm_kernels

    typer.echo(f"xlstm-autotune {xlstm_kernels.__version__} (torch {torch.__version__})")


# --- commands registered by the other packages (kept together here) ---------------------------------
from flows.commands_bench import bench  # noqa: E402
from flows.commands_best import best  # noqa: E402
from flows.commands_probe import fuse_report, probe  # noqa: E402
from flows.commands_dashboard import dashboard, db  # noqa: E402

app.command("probe")(probe)
app.command("fuse-report")(fuse_report)
app.command("best")(best)
app.command("bench")(bench)
app.command("dashboard")(dashboard)
app.command("db")(db)
from flows.commands_fleet import fleet_app, worker  # noqa: E402

app.command("worker")(worker)
app.add_typer(fleet_app, name="fleet")
from flows.commands_model import generate  # noqa: E402

app.command("generate")(generate)
# ------------------------------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
