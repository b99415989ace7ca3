"""``xlstm-autotune probe`` and ``fuse-report``: thin typer commands over ``xlstm_kernels.probe``;
``tune --target mps`` (a dry planning run) over ``tuner.plan_target``."""

from __future__ import annotations

import json
from typing import Optional

import typer

from flows.exits import EXIT_FAILED, EXIT_OK, EXIT_TOO_LARGE, EXIT_USAGE, error_exit
from xlstm_kernels.kernels.config import KernelConfig, Workload
from xlstm_kernels.kernels.validation import WorkloadTooLarge

_WORKLOAD_HELP = "Workload 'B,NH,S,DHQK,DHV,dtype[,mode]'."
_TARGET_HELP = ("Probe for another device: 'mps' (Metal). Off-Mac the block's Metal source is generated "
                "with Inductor's MPS code generator and checked statically (not compiled, not run).")


def _config(family: str, chunk_size: int, t_inner: int, heads_per_band: Optional[int],
            compile_mode: str, precision: str) -> KernelConfig:
    try:
        return KernelConfig(family=family, chunk_size=chunk_size, t_inner=t_inner,  # type: ignore[arg-type]
                            heads_per_band=heads_per_band, compile_mode=compile_mode,  # type: ignore[arg-type]
                            precision=precision)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _workload(text: str) -> Workload:
    try:
        return Workload.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--workload") from None


def probe(
    workload: str = typer.Option("1,4,256,64,64,float32", "--workload", "-w", help=_WORKLOAD_HELP),
    family: str = typer.Option("chunkwise", help="Kernel family: recurrent | chunkwise."),
    chunk_size: int = typer.Option(64, "--chunk-size", help="Logical chunk (kept fixed by the ratchet)."),
    t_inner: int = typer.Option(16, "--t-inner", help="Requested T_inner (ratcheted down on limit failures)."),
    heads_per_band: Optional[int] = typer.Option(None, "--heads-per-band", help="Heads per band (default all)."),
    compile_mode: str = typer.Option("default", "--compile-mode", help="torch.compile mode."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | tf32 | mixed (tf32 and mixed matter on CUDA)."),
    device: Optional[str] = typer.Option(None, "--device", help="Device (default: best available)."),
    max_buffers: Optional[int] = typer.Option(
        None, "--max-buffers", min=1, help="Emulate a per-kernel buffer limit (default: 31 on MPS, off elsewhere)."),
    fusion_knob: bool = typer.Option(True, "--fusion-knob/--no-fusion-knob",
                                     help="Try Inductor's max_fusion_unique_io_buffers before stepping down."),
    in_process: bool = typer.Option(False, "--in-process",
                                    help="Compile in this process (faster; a hang is then not bounded)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per compile (default: setting)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    target: Optional[str] = typer.Option(None, "--target", help=_TARGET_HELP),
) -> None:
    """Compile-probe a config for one tile and print the T_inner ratchet."""
    from xlstm_kernels.probe.metal_codegen import MetalCodegenUnavailable
    from xlstm_kernels.probe import probe as run_probe

    cfg = _config(family, chunk_size, t_inner, heads_per_band, compile_mode, precision)
    try:
        result = run_probe(cfg, _workload(workload), device=device,
                           max_buffers="auto" if max_buffers is None else max_buffers,
                           fusion_knob=fusion_knob, isolate=not in_process, timeout_s=timeout, target=target)
    except WorkloadTooLarge as exc:
        raise error_exit(str(exc), EXIT_TOO_LARGE) from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except MetalCodegenUnavailable as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.format_text())
    if not result.ok:
        raise typer.Exit(code=EXIT_FAILED)


def fuse_report(
    workload: str = typer.Option("1,4,256,64,64,float32", "--workload", "-w", help=_WORKLOAD_HELP),
    family: str = typer.Option("chunkwise", help="Kernel family: recurrent | chunkwise."),
    chunk_size: int = typer.Option(64, "--chunk-size", help="Logical chunk size."),
    t_inner: int = typer.Option(4, "--t-inner", help="T_inner of the compiled tile."),
    heads_per_band: Optional[int] = typer.Option(None, "--heads-per-band", help="Heads per band (default all)."),
    compile_mode: str = typer.Option("default", "--compile-mode", help="torch.compile mode."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | tf32 | mixed (tf32 and mixed matter on CUDA)."),
    device: Optional[str] = typer.Option(None, "--device", help="Device (default: best available)."),
    max_buffers: Optional[int] = typer.Option(
        None, "--max-buffers", min=1, help="Flag kernels over this buffer limit (default: 31 on MPS, off elsewhere)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Fusion report for one tile: graphs, graph breaks, kernels with buffer counts, compile time."""
    from xlstm_kernels.probe import fuse_report as run_report

    cfg = _config(family, chunk_size, t_inner, heads_per_band, compile_mode, precision)
    try:
        report = run_report(cfg, _workload(workload), device=device,
                            max_buffers="auto" if max_buffers is None else max_buffers)
    except WorkloadTooLarge as exc:
        raise error_exit(str(exc), EXIT_TOO_LARGE) from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_text())
    if not report.ok:
        raise typer.Exit(code=EXIT_FAILED)


def plan_target_command(workloads: list[str], target: str, as_json: bool) -> None:
    """``tune --target``: probe every candidate for ``target`` without timing, store and print the plan."""
    from tuner import plan_target
    from xlstm_kernels.probe.metal_codegen import MetalCodegenUnavailable

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    try:
        plan = plan_target(workloads, target=target, progress=None if as_json else progress)
    except ValueError as exc:
        raise error_exit(f"bad input: {exc}", EXIT_USAGE) from None
    except MetalCodegenUnavailable as exc:
        raise error_exit(str(exc), EXIT_FAILED) from None
    typer.echo(json.dumps(plan.to_dict(), indent=2) if as_json else plan.format_text())
    raise typer.Exit(code=EXIT_OK)
