"""``xlstm-autotune profile ...``: show, path, list, publish and roll back this machine's tuned profile.

Thin commands over ``xlstm_kernels.profiles.profile``; a ``ProfileError`` becomes a one-line message and exit code 1
(6 when the profile or DB cannot be written, 2 for a DB that is not a tuning DB or a path-escaping name).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from flows.exits import EXIT_FAILED, EXIT_UNWRITABLE, EXIT_USAGE, error_exit

profile_app = typer.Typer(help="Show, list, publish and roll back the tuned profile of this machine.",
                          no_args_is_help=True)

PathOption = typer.Option(None, "--path", help="Profile file (default: this machine's, from the settings).")


@contextmanager
def _errors() -> Iterator[None]:
    from storage import DatabaseUnavailable, StorageError
    from xlstm_kernels.paths import PathEscapeError
    from xlstm_kernels.profiles.profile import ProfileError, ProfileWriteError

    try:
        yield
    except (ProfileWriteError, DatabaseUnavailable) as exc:
        raise error_exit(str(exc), EXIT_UNWRITABLE) from None
    except ProfileError as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    except (StorageError, PathEscapeError) as exc:
        raise error_exit(str(exc), EXIT_USAGE) from None


@profile_app.command("path")
def path_cmd() -> None:
    """Print where this machine's profile lives (settings' profile_path or HOME/profiles/<machine id>.json)."""
    from xlstm_kernels.profiles.profile import default_profile_path

    typer.echo(str(default_profile_path()))


@profile_app.command("show")
def show_cmd(path: Path | None = PathOption,
             as_json: bool = typer.Option(False, "--json", help="Print the profile JSON as stored.")) -> None:
    """Show the current profile: provenance, whether it fits this machine, and its entries."""
    from xlstm_kernels.kernels.config import Workload
    from xlstm_kernels.profiles.fingerprint import fingerprint
    from xlstm_kernels.profiles.profile import ProfileMismatchError, check_profile_matches, default_profile_path, load_profile

    with _errors():
        target = path or default_profile_path()
        profile = load_profile(target)
    if as_json:
        typer.echo(profile.to_json(), nl=False)
        return
    try:
        check_profile_matches(profile, fingerprint(profile.device_type))
        fits = "yes"
    except ProfileMismatchError as exc:
        fits = f"no: {exc}"
    pub = profile.publication
    fp = profile.fingerprint
    typer.echo(f"profile    {target}")
    typer.echo(f"version    {pub.version if pub else 'unpublished'}  {pub.checksum if pub else ''}")
    typer.echo(f"machine    {profile.machine_id}  {fp.get('device_type')} {fp.get('device_name')!r}  {fp.get('os')}")
    typer.echo(f"software   torch {profile.torch}, triton {profile.triton}, python {fp.get('python')}")
    typer.echo(f"created    {profile.created_at.isoformat()}  run {profile.tuning_run.run_id} ({profile.tuning_run.source})")
    typer.echo(f"this host  {fits}")
    typer.echo(f"{'workload':<34} {'config':<34} {'T req/eff':>9} {'median ms':>10} {'tok/s':>12} {'speedup':>8} {'err':>8}")
    for e in profile.entries:
        short = e.kernel_config.short(Workload.parse(e.workload).mode)
        typer.echo(
            f"{e.workload:<34} {short:<34} {e.t_inner_requested:>4}/{e.t_inner_effective:<4} "
            f"{e.median_s * 1e3:>10.3f} {e.tokens_per_s:>12,.0f} {e.speedup_vs_default:>7.2f}x {e.equivalence_error:>8.1e}"
        )
    for e in profile.model_entries:  # model workloads (docs/model-tuning.md)
        typer.echo(f"{e.workload}  {e.run_config.short()}: TTFT {e.ttft_s * 1e3:.2f} ms, decode "
                   f"{e.decode_tokens_per_s:,.1f} tok/s, {e.speedup_vs_default:.2f}x default, err {e.logits_error:.1e}")


@profile_app.command("list")
def list_cmd(path: Path | None = PathOption) -> None:
    """List the kept versions of the profile (current one marked with *)."""
    from xlstm_kernels.profiles.profile import default_profile_path, list_profile_versions

    target = path or default_profile_path()
    versions = list_profile_versions(target)
    if not versions:
        typer.echo(f"no published versions of {target}")
        return
    for v in versions:
        mark = "*" if v.current else " "
        when = v.published_at.isoformat(timespec="seconds") if v.published_at else "-"
        checksum = v.checksum or "DAMAGED"
        typer.echo(f"{mark} v{v.version:<4} {when:<26} {v.entries:>4} entries  {checksum}  {v.path.name}")


@profile_app.command("publish")
def publish_cmd(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="Profile JSON (e.g. written by the tuner)."),
    path: Path | None = PathOption,
    db: Path | None = typer.Option(None, "--db", help="Tuning database to record the version in (default: from settings)."),
) -> None:
    """Validate a profile JSON file, publish it as the next version (atomic; earlier versions kept) and
    record the version in the tuning database (created if absent)."""
    from tuner import ProfileRecordError, publish_profile_file

    with _errors():
        try:
            result = publish_profile_file(source, path=path, db=db)
        except ProfileRecordError as exc:  # says whether anything was published
            raise error_exit(str(exc), EXIT_FAILED) from None
    typer.echo(json.dumps({"path": str(result.path), "version": result.version, "checksum": result.checksum}))


@profile_app.command("rollback")
def rollback_cmd(
    to: int | None = typer.Option(None, "--to", help="Version to make current (default: the previous one)."),
    path: Path | None = PathOption,
) -> None:
    """Make an earlier kept version the current profile again."""
    from xlstm_kernels.profiles.profile import rollback_profile

    with _errors():
        result = rollback_profile(to, path)
    typer.echo(json.dumps({"path": str(result.path), "version": result.version, "checksum": result.checksum}))
