"""The ``geogan`` command: one thin command per pipeline stage, plus ``demo``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

import geogan
from geogan.config import DemoOptions

app = typer.Typer(
    name="geogan",
    help="Synthetic, labelled Sentinel-1/2 training data from georeferenced scenes.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)
log = logging.getLogger("geogan")


def fail(err: Exception, code: int = 2) -> None:
    """End a command with a one-line error that names the file and the problem."""
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geogan {geogan.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every file read and written."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, markup=False)],
        force=True,
    )


@app.command()
def demo(
    out: Path = typer.Option(Path("geogan-demo"), "--out", help="Folder the demo writes into."),
    input: Path | None = typer.Option(
        None, "--input", help="A SEN12MS-layout folder of real scenes to use instead."
    ),
    scenes: int = typer.Option(3, help="Procedural scenes to make."),
    seed: int = typer.Option(0, help="Seed of the procedural scenes."),
) -> None:
    """Make procedural SEN12MS-like scenes (or take --input) and run every stage on them."""
    from geogan.demo import run_demo

    options = DemoOptions(out=out, input=input, scenes=scenes, seed=seed)
    try:
        written = run_demo(options, console)
    except (FileNotFoundError, ValueError) as err:
        fail(err)
    table = Table(title="geogan demo wrote")
    table.add_column("stage")
    table.add_column("output")
    table.add_column("open in QGIS")
    for stage, path, how in written:
        table.add_row(stage, str(path), how)
    Console().print(table)
