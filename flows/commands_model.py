"""``xlstm-autotune tune --model`` and ``xlstm-autotune generate``: thin over the model tuner's library.

``tune --model SPEC`` runs ``flows.model_flow.run_model_autotune`` (one tuning run: DB + profile);
``generate`` prints ``tuner.generate_side_by_side`` (native eager vs the runner, default and tuned).
SPEC is a preset (``xlstm-7b-shape``, ``tiny``) or a JSON file of ``xLSTMLargeConfig`` fields.
Exit codes (``flows.exits``): 0 ok, 1 the run failed, 2 bad input, 3 no Prefect server, 4 locked,
6 the home or DB cannot be written.
"""

from __future__ import annotations

import json
import typer

from flows.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, error_exit, run_error_code

MODEL_HELP = "Model to tune: a preset (xlstm-7b-shape, tiny) or a JSON file of xLSTMLargeConfig fields."


def tune_model_command(model: str, *, batch: int, prompt: int, dtype: str, trials: int | None,
                       time_budget: float | None, quick: bool, no_server: bool, wait: float | None,
                       json_out: bool) -> None:
    """The ``tune --model`` path of ``tune``: one model tuning run, then its winner and profile."""
    from tuner import UnknownModel
    from .settings import FlowSettings

    from .model_flow import run_model_autotune
    from .progress import progress_wanted

    settings = FlowSettings()
    try:
        info, state, result = run_model_autotune(
            model, home=settings.resolved_home(), batch_size=batch, prompt_len=prompt, dtype=dtype,
            trials=trials, time_budget_s=time_budget, quick=quick, device=settings.device,
            no_server=no_server, wait_s=settings.lock_wait_s if wait is None else wait,
            show_progress=not json_out and progress_wanted(), startup_timeout_s=settings.server_startup_timeout_s)
    except UnknownModel as exc:
        raise error_exit(f"bad input: {exc}", EXIT_USAGE) from None
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes; anything else propagates
        if (code := run_error_code(exc)) is None:
            raise
        raise error_exit(str(exc), code) from None
    if result is None:
        raise error_exit(f"the model-autotune flow ended {state.type.value}: {state.message}", EXIT_FAILED)
    if json_out:
        typer.echo(json.dumps(result.to_dict() | {"state": state.type.value, "server": info.to_dict()}, indent=2))
    else:
        from xlstm_kernels.models.workload import run_config_short

        typer.echo(info.describe())
        r = result.result or {}
        typer.echo(f"tuning run {result.run_id} on machine {result.machine_id}: {r.get('workload', model)}")
        win = r.get("winner")
        if win:
            speed = f", {r['speedup']:.2f}x over ModelRunConfig()" if r.get("speedup") else ""
            typer.echo(f"winner    {run_config_short(win['config'])}: TTFT {win['ttft_ms']:.2f} ms, decode "
                       f"{win['decode_tokens_per_s']:,.1f} tok/s, request {win['objective_ms']:.2f} ms{speed}")
        for rej in r.get("rejected", []):
            typer.echo(f"{rej['status']:<9} {run_config_short(rej['config'])}: {rej['reason']}")
        for what, msg in result.failed.items():
            typer.echo(f"failed    {what}: {msg}")
        if result.profile_version is not None:
            typer.echo(f"profile v{result.profile_version} published to {result.profile_path} ({result.profile_checksum})")
        else:
            typer.echo("profile: not published")
    raise typer.Exit(code=EXIT_OK if state.is_completed() else EXIT_FAILED)


def generate(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP.replace("to tune", "to run")),
    prompt_len: int = typer.Option(256, "--prompt-len", min=1, help="Prompt tokens (prefill)."),
    new_tokens: int = typer.Option(32, "--new-tokens", min=1, help="Tokens to generate (greedy)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Sequences per batch."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights' dtype: float32, bfloat16 or float16."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Interleaved timing rounds."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Generate with a model (random weights): native eager vs the runner (default and tuned), side by side."""
    from tuner import UnknownModel, generate_side_by_side
    from .settings import get_flow_settings

    try:
        res = generate_side_by_side(model, batch_size=batch, prompt_len=prompt_len, new_tokens=new_tokens,
                                    dtype=dtype, device=get_flow_settings().device, rounds=rounds)
    except (UnknownModel, ValueError) as exc:
        raise error_exit(f"bad input: {exc}", EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2))
    else:
        typer.echo(f"{res.workload} on {res.device}: {res.new_tokens} new tokens, median of {res.rounds} "
                   f"interleaved rounds; tuned config: {res.tuned_source} ({res.tuned_reason})")
        typer.echo(f"{'':<8} {'first s':>8} {'TTFT ms':>9} {'prefill tok/s':>14} {'decode tok/s':>13} "
                   f"{'same tokens':>11}  config")
        for r in res.rows:
            if r.error:
                typer.echo(f"{r.name:<8} failed: {r.error}")
                continue
            dec = f"{r.decode_tokens_per_s:>13,.1f}" if r.decode_tokens_per_s else f"{'-':>13}"
            same = "-" if r.tokens_match is None else ("yes" if r.tokens_match else "NO")
            typer.echo(f"{r.name:<8} {r.first_s:>8.2f} {r.ttft_ms:>9.2f} {r.prefill_tokens_per_s:>14,.0f} {dec} "
                       f"{same:>11}  {r.config}")
    # float32 runs must give the native model's greedy tokens; low precision may round differently
    mismatch = res.workload.endswith(",float32") and any(r.tokens_match is False for r in res.rows)
    if mismatch or any(r.error for r in res.rows if r.name != "native"):
        raise typer.Exit(code=EXIT_FAILED)
