"""The ``xlstm-autotune`` command line: thin typer commands over library functions."""

from __future__ import annotations

import typer

from flows.commands_profile import profile_app

app = typer.Typer(
    name="xlstm-autotune",
    help="Autotune torch.compile pseudo-kernels of the xLSTM mLSTM for this machine.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(profile_app, name="profile")


@app.command()
def tune(quick: bool = typer.Option(False, "--quick", help="A short run on small budgets.")) -> None:
    """Run one tuning run now on the embedded defaults (SQLite DB, Prefect's temporary server)."""
    typer.echo("xlstm-autotune tune: not yet available (the tuner has not landed yet).", err=True)
    raise typer.Exit(code=2)


@app.command()
def version() -> None:
    """Print the versions of xlstm-autotune and torch."""
    import torch

    import xlstm_kernels

    typer.echo(f"xlstm-autotune {xlstm_kernels.__version__} (torch {torch.__version__})")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
