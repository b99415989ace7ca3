"""``xlstm-autotune worker`` and ``xlstm-autotune fleet``: fleet mode's commands (thin over
``flows.worker`` and ``tuner.fleet_best``; exit codes: ``flows.exits``)."""

from __future__ import annotations

import json

import typer

from flows.exits import EXIT_FAILED, EXIT_SERVER, EXIT_USAGE, error_exit

fleet_app = typer.Typer(
    help="The fleet's shared studies: best config per workload per machine class; queue class runs.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _settings():  # noqa: ANN202 - flows.settings.FlowSettings
    from .settings import FlowSettings

    return FlowSettings()


def _require_api() -> str:
    from tuner.settings import mask_url

    from .server import api_healthy, current_api_url

    url = current_api_url()
    if not url:
        raise error_exit("fleet mode needs the fleet's Prefect server: set PREFECT_API_URL "
                         "(environment or .env); see docs/fleet.md", EXIT_USAGE)
    if not api_healthy(url):
        raise error_exit(f"the Prefect server at PREFECT_API_URL={mask_url(url)} does not answer", EXIT_SERVER)
    return url


def _require_storage(settings) -> None:  # noqa: ANN001 - FlowSettings
    from tuner import FleetMisconfigured, FleetStorageUnavailable, open_fleet_storage

    if not settings.fleet:
        raise error_exit("fleet mode is off: set XLSTM_AUTOTUNE_FLEET=true (and XLSTM_AUTOTUNE_OPTUNA_STORAGE)",
                         EXIT_USAGE)
    try:
        open_fleet_storage(settings)
    except FleetMisconfigured as exc:
        raise error_exit(str(exc), EXIT_USAGE) from None
    except FleetStorageUnavailable as exc:
        raise error_exit(str(exc), EXIT_SERVER) from None


def worker(
    run_once: bool = typer.Option(False, "--run-once", help="Poll the pool once, run what is due, then exit."),
    json_out: bool = typer.Option(False, "--json", help="Print the class setup as JSON before serving."),
) -> None:
    """Take this machine class's tuning runs: create its work pool and deployment if missing, run a worker."""
    from .worker import FleetServerError, prepare, serve_worker

    settings = _settings()
    _require_storage(settings)
    _require_api()
    try:
        setup = prepare(settings)
    except FleetServerError as exc:
        raise error_exit(str(exc), EXIT_SERVER) from None
    if json_out:
        typer.echo(json.dumps(setup.to_dict()))
    else:
        made = [w for w, c in (("pool", setup.created_pool), ("deployment", setup.created_deployment)) if c]
        typer.echo(f"machine class {setup.machine_class}: work pool {setup.pool}, deployment {setup.deployment}"
                   + (f" (created {' and '.join(made)})" if made else ""))
        typer.echo("worker started (one run at a time); Ctrl-C stops it")
    serve_worker(setup, settings, run_once=run_once)


@fleet_app.callback()
def fleet(
    ctx: typer.Context,
    fleet_name: str | None = typer.Option(None, "--fleet", help="Only this fleet's studies (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Best validated config per workload per machine class, from the shared Optuna storage."""
    if ctx.invoked_subcommand is not None:
        return
    from tuner import FleetMisconfigured, FleetStorageUnavailable, fleet_best, open_fleet_storage

    try:
        rows = fleet_best(open_fleet_storage(_settings()), fleet_name)
    except FleetMisconfigured as exc:
        raise error_exit(str(exc), EXIT_USAGE) from None
    except FleetStorageUnavailable as exc:
        raise error_exit(str(exc), EXIT_SERVER) from None
    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    elif not rows:
        typer.echo("no fleet study has a validated trial yet")
    for r in [] if json_out else rows:
        typer.echo(f"{r.fleet}/{r.machine_class}  {r.workload}  {r.config_short}  {r.median_ms:.4f} ms "
                   f"(timed on {r.node}; {r.n_evaluated} evaluated by {', '.join(r.nodes)})")
    if not rows:
        raise typer.Exit(code=EXIT_FAILED)


@fleet_app.command("submit")
def submit(
    runs: int = typer.Option(1, "--runs", min=1, help="Runs to queue: one per machine that should take part."),
    json_out: bool = typer.Option(False, "--json", help="Print the flow run ids as JSON."),
) -> None:
    """Queue runs of this machine class's deployment now (its workers take them)."""
    import asyncio

    from .worker import FleetServerError, prepare, submit_runs

    settings = _settings()
    _require_api()
    try:
        setup = prepare(settings)
        ids = asyncio.run(submit_runs(setup.deployment_id, runs))
    except FleetServerError as exc:
        raise error_exit(str(exc), EXIT_SERVER) from None
    typer.echo(json.dumps({"deployment": setup.deployment, "flow_runs": ids}) if json_out
               else f"queued {len(ids)} run(s) of {setup.deployment}")
