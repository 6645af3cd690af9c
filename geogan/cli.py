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


@app.command()
def tile(
    sources: list[str] = typer.Argument(
        ..., help="SEN12MS folders, or s2=PATH s1=PATH labels=PATH per scene (globs, VRTs, /vsicurl/ work)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the chips, index.gpkg and stats.json."),
    size: int = typer.Option(256, help="Chip size in pixels."),
    stride: int | None = typer.Option(None, help="Pixels between chip origins [default: size]."),
    edge: str = typer.Option("drop", help="Chips crossing the scene edge: drop, or pad with nodata."),
    min_valid: float = typer.Option(0.9, "--min-valid", help="Drop chips with a smaller valid fraction."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of scenes in the test split."),
    workers: int = typer.Option(2, help="Dask worker processes of the local cluster."),
    threads: int = typer.Option(1, help="Threads per Dask worker."),
    scheduler: str | None = typer.Option(None, help="Address of a running Dask scheduler to use instead."),
) -> None:
    """Cut scenes into chips (SEN12MS layout) with Dask, with index.gpkg and stats.json."""
    from pydantic import ValidationError

    from geogan.config import TileOptions
    from geogan.tiling import tile as run_tile

    if log.getEffectiveLevel() > logging.DEBUG:  # Dask's and GDAL-writer chatter only with --verbose
        for name in ("distributed", "pyogrio"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        options = TileOptions(
            sources=sources, out=out, size=size, stride=stride, edge=edge, min_valid=min_valid,
            test_fraction=test_fraction, workers=workers, threads=threads, scheduler=scheduler,
        )  # fmt: skip
        summary = run_tile(options)
    except ValidationError as err:
        fail(ValueError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in err.errors())))
    except (FileNotFoundError, ValueError) as err:
        fail(err)
    table = Table(title=f"geogan tile wrote {out}")
    table.add_column("chips")
    table.add_column("count", justify="right")
    table.add_row("written", str(summary.written))
    table.add_row("already done (skipped)", str(summary.skipped))
    for reason, count in sorted(summary.dropped.items()):
        table.add_row(f"dropped: {reason}", str(count))
    table.add_row("in index.gpkg", str(summary.chips))
    table.add_row("failed scenes", str(len({f["scene"] for f in summary.failures})))
    Console().print(table)
    console.print(f"{summary.seconds:.1f} s; open {out / 'index.gpkg'} (layer tiles) in QGIS")
    if summary.failures:
        console.print(f"[bold red]{len(summary.failures)} failure(s)[/], listed in {out / 'failures.json'}:")
        for failure in summary.failures:
            console.print(f"  {failure['error']}")
        raise typer.Exit(1)


labels_app = typer.Typer(
    name="labels", help="Class labels from the analyst's own polygons.", no_args_is_help=True
)
app.add_typer(labels_app, name="labels")


@labels_app.command("rasterize")
def labels_rasterize(
    polygons: Path = typer.Argument(..., help="Polygon layer (GeoPackage, Shapefile, GeoJSON...), any CRS."),
    tiles: Path = typer.Option(..., "--tiles", help="Tile folder written by `geogan tile`."),
    column: str = typer.Option(..., "--column", help="Attribute holding each polygon's class (id or name)."),
    scheme: str = typer.Option("igbp", "--scheme", help="igbp, dfc2020 or a YAML scheme file."),
    background: str | None = typer.Option(
        None, "--background", help="Class (id or name) outside every polygon [default: 0 = unlabelled]."
    ),
    all_touched: bool = typer.Option(False, "--all-touched", help="Burn every pixel a polygon touches."),
) -> None:
    """Burn polygons onto every chip's grid: mask chips beside the images, rows in index.gpkg."""
    from geogan.config import RasterizeOptions
    from geogan.labels import rasterize

    options = RasterizeOptions(
        polygons=polygons, tiles=tiles, column=column, scheme=scheme, background=background,
        all_touched=all_touched,
    )  # fmt: skip
    try:
        report = rasterize(**options.model_dump(), progress=True)
    except (FileNotFoundError, KeyError, ValueError) as err:
        fail(err)
    table = Table(title=f"geogan labels rasterize: {polygons} -> {tiles}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("mask chips written", str(report.written))
    table.add_row("mask chips already up to date", str(report.up_to_date))
    table.add_row("polygons burned", str(report.burned))
    table.add_row("polygons touching no chip", str(len(report.outside)))
    table.add_row("polygons with an unknown class", str(len(report.unknown)))
    table.add_row("invalid geometries", str(len(report.invalid)))
    Console().print(table)
    shown = 10
    for title, items in (
        ("touching no chip (FID)", [str(f) for f in report.outside]),
        (f"unknown class in {column!r} (FID: value), not burned", [f"{f}: {v}" for f, v in report.unknown]),
        ("invalid geometry (FID: reason)", [f"{f}: {r}" for f, r in report.invalid]),
    ):
        if items:
            more = f" ... and {len(items) - shown} more" if len(items) > shown else ""
            console.print(f"[yellow]{title}:[/] {'; '.join(items[:shown])}{more}")
    console.print(
        f"full lists in {tiles / 'rasterize_report.json'}; open the mask chips "
        f"({tiles}/*/mask_*/*.tif) or {tiles / 'index.gpkg'} (role = 'mask') in QGIS"
    )


train_app = typer.Typer(name="train", help="Train a generative model on a tile folder.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("msg-stylegan")
def train_msg_stylegan(
    tiles: Path = typer.Option(..., "--tiles", help="Tile folder written by `geogan tile`."),
    out: Path = typer.Option(..., "--out", help="Run folder: config, checkpoints, samples, logs."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML file of training options (any field of MSGStyleGANOptions)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Train up to this many steps in total."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Tiles per step."),
    resolution: int | None = typer.Option(None, "--resolution", help="Tile size in pixels (a power of two)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of weights, data order and noise."),
    devices: int | None = typer.Option(None, "--devices", help="GPUs to train on (DDP if more than 1)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its newest checkpoint."
    ),
) -> None:
    """Train MSG-StyleGAN: unconditional tiles of every band, an image out of every block."""
    import yaml
    from pydantic import ValidationError

    from geogan.config import MSGStyleGANOptions
    from geogan.training import CONFIG_FILE, train

    try:
        doc: dict = {}
        if config is not None:
            doc = yaml.safe_load(config.read_text()) or {}
            if not isinstance(doc, dict):
                raise ValueError(f"{config}: expected a mapping of option: value")
        elif resume and (out / CONFIG_FILE).is_file():
            doc = yaml.safe_load((out / CONFIG_FILE).read_text())["options"]
        given = {
            "steps": steps,
            "batch_size": batch_size,
            "resolution": resolution,
            "seed": seed,
            "devices": devices,
        }
        doc.update({k: v for k, v in given.items() if v is not None}, tiles=tiles, out=out)
        options = MSGStyleGANOptions.model_validate(doc)
        checkpoint = train("msg-stylegan", options, resume=resume, console=console)
    except ValidationError as err:
        fail(ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())))
    except (OSError, yaml.YAMLError, ValueError) as err:
        fail(err)
    console.print(
        f"checkpoint {checkpoint}; sample grids in {out / 'samples'} (PNG); "
        f"metrics in {out / 'logs' / 'metrics.csv'} (tensorboard --logdir {out / 'logs'})"
    )
