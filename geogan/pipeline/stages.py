"""The stages a pipeline file can name, and the kinds of source it can read.

A stage kind ties a name to the existing stage function and its options model, and says what the
runner needs to know to run it incrementally:

* ``wire``: option fields the pipeline fills with an earlier stage's output folder (``tiles``,
  ``run``); ``reads``: further earlier stages whose outputs it reads without an option naming them;
* ``volatile``: options that change where or how fast it runs, never what it writes (workers,
  scheduler); they are left out of its fingerprint;
* ``grows``: options a re-run may change while keeping what is already written (``"up"``: only
  when the value grows, e.g. more training steps or more samples); any other change, or a change
  of its inputs (other than ``incremental_inputs``), clears the stage's folder and runs it afresh;
* ``digest``: a cheap fingerprint of what the stage wrote, which later stages take as their input.

Adding a stage is one entry in :data:`STAGES`; adding a source kind is one in :data:`SOURCES`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from rich.console import Console

from geogan.config import (
    ClusterOptions,
    EvaluateOptions,
    GenerateOptions,
    GeoTiffSource,
    ProceduralSource,
    Sen12msSource,
    Source,
    StageOptions,
    TileOptions,
    TrainOptions,
)
from geogan.errors import RunFailed
from geogan.files import sweep
from geogan.tiles import STATS_FILE

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One stage of a pipeline: its name, kind, validated options and where it reads and writes."""

    name: str
    kind: StageKind
    options: StageOptions
    line: int | None = None
    inputs: list[str] = field(default_factory=list)  # names of the earlier stages it reads
    model: str | None = None  # train: the model name
    sources: dict[str, tuple[SourceKind, BaseModel, Path]] = field(default_factory=dict)  # tile: its sources


# --- the Dask cluster the stages share -----------------------------------------------------------


@dataclass
class Context:
    cluster: ClusterOptions
    console: Console
    progress: bool = True
    _client: Any = None
    _clients: ExitStack = field(default_factory=ExitStack)

    def client(self):
        """The Dask client of the pipeline's cluster: made on first use, closed at the end of the run."""
        if self._client is None:
            from geogan.cluster import client

            given = self.cluster
            self._client = self._clients.enter_context(client(given.scheduler, given.workers, given.threads))
        return self._client

    def close(self) -> None:
        self._clients.close()


class StageFailed(RunFailed):
    """A stage ran but did not finish its work (e.g. a scene failed); the message says why."""


def _hash(items: Any) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def _listing(root: Path, pattern: str) -> list[list]:
    """(relative path, size) of the files under ``root`` matching ``pattern``, hidden ones left out."""
    if not root.is_dir():
        return []
    return sorted(
        [str(p.relative_to(root)), p.stat().st_size]
        for p in root.glob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _stamps(paths: list[Path]) -> list[list]:
    """(path, size, mtime) of each file: a source that is rewritten or replaced changes its stamp."""
    out = []
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p)])
    return out


# --- sources -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceKind:
    """Where scenes come from: ``make`` writes or checks them, ``tile_sources`` gives the tile stage's
    source strings, ``files`` the rasters (for fingerprints); ``made`` whether the pipeline owns them."""

    name: str
    make: Callable[[Any, Path], None]
    tile_sources: Callable[[Any, Path], list[str]]
    files: Callable[[Any, Path], list[Path]]
    made: bool


def _make_procedural(options: ProceduralSource, folder: Path) -> None:
    from geogan import sample

    sample.write_sen12ms(
        folder,
        scenes=options.scenes,
        patches_per_side=options.patches_per_side,
        patch_size=options.patch_size,
        seed=options.seed,
    )


def _check_sen12ms(options: Sen12msSource, folder: Path) -> None:
    from geogan.scenes import sen12ms

    if not options.path.is_dir():
        raise FileNotFoundError(f"{options.path}: no such folder (a SEN12MS-layout folder)")
    sen12ms.find_scenes(options.path)  # raises ValueError naming the folder when it holds no patches


def _sen12ms_files(root: Path) -> list[Path]:
    return sorted(root.glob("ROIs*_*/*_*/*.tif")) if root.is_dir() else []


def _geotiff_strings(options: GeoTiffSource, folder: Path) -> list[str]:
    return [f"{role}={getattr(options, role)}" for role in ("s2", "s1", "labels") if getattr(options, role)]


def _geotiff_files(options: GeoTiffSource, folder: Path) -> list[Path]:
    import glob

    found = []
    for role in ("s2", "s1", "labels"):
        value = getattr(options, role)
        if value and not value.startswith("/vsi"):
            found += [Path(p) for p in glob.glob(value)] if any(c in value for c in "*?[") else [Path(value)]
    return found


def _check_geotiff(options: GeoTiffSource, folder: Path) -> None:
    from geogan.scenes import find_scenes

    find_scenes(_geotiff_strings(options, folder))
    for path in _geotiff_files(options, folder):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")


def _fetch(module: str, function: str) -> Callable[[Any, Path], None]:
    def fetch(options: Any, folder: Path) -> None:
        import importlib

        getattr(importlib.import_module(module), function)(options, folder, progress_bar=False)

    return fetch


def _fetched_sources(options: Any, folder: Path) -> list[str]:
    from geogan.scenes.remote import tile_sources as fetched

    return fetched(folder)


def _fetched_files(options: Any, folder: Path) -> list[Path]:
    from geogan.scenes.remote import scene_files

    return scene_files(folder)


SOURCES: dict[str, SourceKind] = {
    "procedural": SourceKind(
        "procedural", _make_procedural, lambda o, f: [str(f)], lambda o, f: _sen12ms_files(f), made=True
    ),
    "sen12ms": SourceKind(
        "sen12ms", _check_sen12ms, lambda o, f: [str(o.path)], lambda o, f: _sen12ms_files(o.path), made=False
    ),
    "geotiff": SourceKind("geotiff", _check_geotiff, _geotiff_strings, _geotiff_files, made=False),
    # Remote scenes are fetched into OUT/sources/NAME when the source's options change (or its
    # files do); a run with unchanged options does not ask the service again.
    "sentinelhub": SourceKind(
        "sentinelhub",
        _fetch("geogan.scenes.sentinelhub", "fetch_sentinelhub"),
        _fetched_sources,
        _fetched_files,
        made=True,
    ),
    "stac": SourceKind(
        "stac", _fetch("geogan.scenes.stac", "fetch_stac"), _fetched_sources, _fetched_files, made=True
    ),
}


class SourcesOptions(StageOptions):
    """Options of the implicit first stage: every source of the file, by name."""

    sources: dict[str, Source]
    out: Path


# --- stages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageKind:
    name: str
    choose: Callable[[dict], tuple[type[StageOptions], str | None]]  # raw options -> model, model name
    run: Callable[[Stage, Context], dict[str, Any]]  # runs the stage; returns counts for the summary
    digest: Callable[[Any], str]  # its options -> fingerprint of what it wrote ("" when nothing)
    wire: dict[str, str] = field(default_factory=dict)
    reads: tuple[str, ...] = ()
    volatile: frozenset[str] = frozenset()
    grows: dict[str, str] = field(default_factory=dict)  # option -> "any" | "up"
    incremental_inputs: frozenset[str] = frozenset()
    takes_sources: bool = False
    check: Callable[[Any], tuple[str, str] | None] | None = None  # its options -> (field, problem)
    refs: frozenset[str] = frozenset()  # options that may name an earlier stage (its folder is meant)

    def options_model(self, raw: dict) -> tuple[type[StageOptions], str | None]:
        return self.choose(raw)


def _fixed(model: type[StageOptions]) -> Callable[[dict], tuple[type[StageOptions], None]]:
    return lambda raw: (model, None)


def _choose_train(raw: dict) -> tuple[type[StageOptions], str]:
    from geogan.models import MODELS

    model = raw.get("model")
    if model is None:
        raise ValueError(f"missing: which model to train ({', '.join(sorted(MODELS))})")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; models are {', '.join(sorted(MODELS))}")
    return MODELS[model].options, model


OptionsT = TypeVar("OptionsT", bound=StageOptions)


def options_of(stage: Stage, model: type[OptionsT]) -> OptionsT:
    """``stage.options``, which the stage's kind made as a ``model``."""
    if not isinstance(stage.options, model):
        raise TypeError(
            f"stage {stage.name}: options are {type(stage.options).__name__}, not {model.__name__}"
        )
    return stage.options


def _run_sources(stage: Stage, ctx: Context) -> dict[str, Any]:
    given = options_of(stage, SourcesOptions)
    for name, options in given.sources.items():
        kind = SOURCES[options.kind]
        folder = given.out / name
        if kind.made:
            sweep(folder)
        kind.make(options, folder)
    files = sum(len(SOURCES[o.kind].files(o, given.out / n)) for n, o in given.sources.items())
    return {"sources": len(given.sources), "rasters": files}


def _digest_sources(options: SourcesOptions) -> str:
    files = [p for n, o in options.sources.items() for p in SOURCES[o.kind].files(o, options.out / n)]
    return _hash(_stamps(files)) if files else ""


def _client_for(options: StageOptions, ctx: Context):
    """The pipeline's shared Dask client, unless the stage's own options name a scheduler."""
    return None if getattr(options, "scheduler", None) else ctx.client()


def tile_sources(stage: Stage) -> list[str]:
    """The ``geogan tile`` sources of the pipeline sources a tile stage names (known once they exist)."""
    return [s for kind, options, folder in stage.sources.values() for s in kind.tile_sources(options, folder)]


def _run_tile(stage: Stage, ctx: Context) -> dict[str, Any]:
    from geogan.tiling import tile

    options = options_of(stage, TileOptions).model_copy(update={"sources": tile_sources(stage)})
    summary = tile(options, client=_client_for(options, ctx), progress=ctx.progress)
    counts = {"written": summary.written, "skipped": summary.skipped, "chips": summary.chips}
    if summary.failures:
        first = summary.failures[0]["error"]
        raise StageFailed(
            f"{len(summary.failures)} scene(s) failed, e.g. {first}; "
            f"all listed in {options.out / 'failures.json'}"
        )
    if not summary.chips:
        raise StageFailed(f"{options.out}: no chips were kept (check size, min_valid and the sources)")
    return counts


def _digest_tile(options: TileOptions) -> str:
    out = Path(options.out)
    texts = [
        (out / n).read_text() if (out / n).is_file() else None
        for n in (STATS_FILE, "train_list.txt", "test_list.txt")
    ]
    chips = _listing(out, "*/*/*.tif")
    return _hash([texts, chips]) if chips else ""


def _run_train(stage: Stage, ctx: Context) -> dict[str, Any]:
    from geogan.training import checkpoints, train

    options = options_of(stage, TrainOptions)
    assert stage.model is not None  # a train stage names its model (see _choose_train)
    resume = bool(checkpoints(Path(options.out)))
    newest = train(stage.model, options, resume=resume, console=ctx.console)
    return {"checkpoint": newest.name, "steps": options.steps, "resumed": resume}


def _digest_train(options: TrainOptions) -> str:
    from geogan.training import checkpoints

    found = checkpoints(Path(options.out))
    if not found:
        return ""
    st = found[-1].stat()
    return _hash([found[-1].name, st.st_size, st.st_mtime_ns])


def _run_generate(stage: Stage, ctx: Context) -> dict[str, Any]:
    from geogan.generate import generate

    options = options_of(stage, GenerateOptions)
    summary = generate(options, client=_client_for(options, ctx))
    return {"written": summary.written, "skipped": summary.skipped}


def _digest_generate(options: GenerateOptions) -> str:
    from geogan.export import INDEX

    out = Path(options.out)
    pairs = _listing(out, "images/*.tif") + _listing(out, "masks/*.tif")
    return _hash([pairs, (out / INDEX).is_file()]) if pairs else ""


def _run_evaluate(stage: Stage, ctx: Context) -> dict[str, Any]:
    from geogan.evaluate import evaluate

    summary = evaluate(options_of(stage, EvaluateOptions), progress=ctx.progress)
    return {"report": summary.report.name, "copies": len(summary.copies), "verdict": summary.verdict}


def _digest_evaluate(options: EvaluateOptions) -> str:
    path = Path(options.out) / "metrics.json"
    return _hash(path.read_text()) if path.is_file() else ""


def _check_evaluate(options: EvaluateOptions) -> tuple[str, str] | None:
    if options.drop_copies:
        return "drop_copies", (
            "moving pairs out of the generate stage's folder would make generate refill it on every run; "
            "run `geogan evaluate --drop-copies` on the pipeline's folders by hand instead"
        )
    return None


# The train stage's schedule options a resumed run may change (see geogan.training.RESUMABLE).
_TRAIN_GROWS = {
    "steps": "up",
    "sample_every": "any",
    "checkpoint_every": "any",
    "keep_checkpoints": "any",
    "log_every": "any",
}

STAGES: dict[str, StageKind] = {
    "sources": StageKind("sources", _fixed(SourcesOptions), _run_sources, _digest_sources),
    "tile": StageKind(
        "tile",
        _fixed(TileOptions),
        _run_tile,
        _digest_tile,
        volatile=frozenset({"workers", "threads", "scheduler"}),
        grows={"sources": "any"},
        incremental_inputs=frozenset({"sources"}),
        takes_sources=True,
    ),
    "train": StageKind(
        "train",
        _choose_train,
        _run_train,
        _digest_train,
        wire={"tiles": "tile"},
        volatile=frozenset({"workers"}),
        grows=_TRAIN_GROWS,
    ),
    "generate": StageKind(
        "generate",
        _fixed(GenerateOptions),
        _run_generate,
        _digest_generate,
        wire={"run": "train"},
        reads=("tile",),
        volatile=frozenset({"workers", "scheduler"}),
        grows={"n": "up"},
        refs=frozenset({"mask_run", "like"}),
    ),
    "evaluate": StageKind(
        "evaluate",
        _fixed(EvaluateOptions),
        _run_evaluate,
        _digest_evaluate,
        wire={"real": "tile", "synthetic": "generate"},
        check=_check_evaluate,
    ),
}


def fingerprinted(stage: Stage) -> dict[str, Any]:
    """The options that decide what ``stage`` writes (volatile and wired ones left out)."""
    values = stage.options.model_dump(mode="json")
    drop = {"out", *stage.kind.wire, *stage.kind.volatile, *stage.options.unused()}
    values = {k: v for k, v in values.items() if k not in drop}
    if stage.model:
        values["model"] = stage.model
    if isinstance(stage.options, SourcesOptions):
        values = {"sources": {n: o.model_dump(mode="json") for n, o in stage.options.sources.items()}}
    return values


def model_of(options: BaseModel) -> str:
    return type(options).__name__
