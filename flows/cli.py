"""The ``xlstm-autotune`` command line: thin typer commands over library functions."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="xlstm-autotune",
    help="Autotune torch.compile pseudo-kernels of the xLSTM mLSTM for this machine.",
    no_args_is_help=True,
    add_completion=False,
)


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


from flows.commands_best import best  # noqa: E402
app.command("best")(best)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
