"""The tile stage: cut scenes into chips with Dask, with a tile index and band statistics.

:func:`tile` plans the chips of every scene on the client (opening each source once to check it),
then runs one Dask task per batch of chips (those of whole source blocks, see ``MIN_CHIPS``). A
task opens its scene's rasters, reads only its own windows (S1 and labels through a WarpedVRT onto
the S2 grid when their grid differs), writes each chip to a temporary name and renames it, and
records what it did in ``DIR/.geogan/tasks/{task}.json`` with a fingerprint of its sources and
options and the band statistics of its chips (taken from the arrays in memory, see
:class:`TaskStats`; ``stats.json`` merges the tasks'). A re-run skips every task whose record
matches; a killed run leaves at most some complete chips and temporary files (see
:mod:`geogan.files`), which the next run removes before it rewrites that task's chips under the
same names. A run holds the folder's lock (``DIR/.geogan/lock``): a second run into the same
folder stops with :class:`geogan.files.LockError` naming the holder.

Outputs in ``DIR``: the chips in the SEN12MS layout (see :mod:`geogan.scenes`), ``train_list.txt``
and ``test_list.txt`` (S2 chip names of the train and test splits),
``index.gpkg`` (layer ``tiles``), ``split.json`` (see :mod:`geogan.tiles`), ``stats.json`` and, when
some scene failed, ``failures.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from dask.array.percentile import merge_percentiles  # imported here: threads importing dask.array race
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

import geogan
from geogan.bands import SENSORS
from geogan.config import TileOptions
from geogan.errors import InputError, NotWritable
from geogan.files import COPYRIGHT, DiskFullError, folder_lock, replacing, sweep, temporary_name, write_text
from geogan.scenes import Scene, find_scenes
from geogan.tiles import INDEX_FILE, INDEX_LAYER, STATS_FILE, read_tile_index, write_lists

log = logging.getLogger(__name__)

# A task holds the chips whose origins lie in whole source blocks, so that each block is decompressed
# by one task: the chips of one block, or of consecutive blocks until it has MIN_CHIPS, and never
# more than MAX_CHIPS (a stripped raster's block is a whole row of chips). 8 rather than 4 (two
# 512 px blocks of 256 px chips, not one): 6 % faster with 2 workers, the scheduler's CPU in the
# client's process 0.20 s instead of 0.32 s on a 4096 px scene (benchmarks/RESULTS.md).
MIN_CHIPS, MAX_CHIPS = 8, 64
STATE = ".geogan"  # task records live in DIR/.geogan/tasks
LOCK = "lock"  # DIR/.geogan/lock, held while a run writes the folder
FOLDER = "folder.json"  # DIR/.geogan/folder.json: the chip size and the scenes the folder holds
RESAMPLING = {"s1": Resampling.bilinear, "lc": Resampling.nearest}
# Percentiles of each task (0.1 % steps in the tails, 1 % between), merged into p01 / p99.
QS = np.unique(np.concatenate([np.linspace(0, 5, 51), np.linspace(5, 95, 91), np.linspace(95, 100, 51)]))
PERCENTILE_METHOD = (
    "approximate: percentiles (0.1 % steps below 5 % and above 95 %, 1 % between) of each Dask task's "
    "chips, exact for 8/16-bit integers (one histogram per band) and merged over each task's chips for "
    "other types, then merged over the tasks by dask.array.percentile.merge_percentiles, weighted by "
    "valid-pixel counts"
)


class SceneError(InputError):
    """A scene cannot be tiled; the message names the file (``path``) and the problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}{problem}")
        self.path = path


@dataclass
class TileSummary:
    written: int = 0  # chips written by this run (a chip is its s2/s1/lc twins)
    skipped: int = 0  # chips already done by an earlier run with the same inputs and options
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> chips
    failures: list[dict[str, str]] = field(default_factory=list)  # scene, path, error
    chips: int = 0  # chips in the index
    seconds: float = 0.0
    out: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


# --- planning (client side) --------------------------------------------------------------------


def _offsets(length: int, size: int, stride: int, edge: str) -> list[int]:
    """Chip origins along one axis: whole chips only (drop), or until the edge is covered (pad)."""
    if edge == "drop":
        return list(range(0, length - size + 1, stride))
    offsets, off = [], 0
    while off < length:
        offsets.append(off)
        if off + size >= length:
            break
        off += stride
    return offsets


def _expected_bands(role: str, count: int) -> str | None:
    if role == "lc":
        return None if count in (1, 4) else "1 band (class values) or 4 (SEN12MS IGBP, LCCS)"
    sensor = SENSORS[role]
    return None if count == sensor.count else f"{sensor.count} bands ({', '.join(sensor.band_names)})"


def check_scene(scene: Scene) -> dict[str, Any]:
    """Open each raster of ``scene`` and check it; return the S2 grid. Raises :class:`SceneError`."""
    grid: dict[str, Any] = {}
    for role, path in scene.paths.items():
        try:  # no PAM: the statistics of label rasters never go into an .aux.xml beside the user's file
            with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as src:
                crs, bounds, count, transform, dtype = (
                    src.crs,
                    src.bounds,
                    src.count,
                    src.transform,
                    src.dtypes[0],
                )
                values = _label_range(src) if role == "lc" else None
                if role == "s2":
                    grid = {
                        "width": src.width,
                        "height": src.height,
                        "crs": src.crs,
                        "bounds": bounds,
                        "block": src.block_shapes[0],
                    }
        except RasterioError as err:
            raise SceneError(path, f": not a raster GDAL can read ({err})") from None
        if crs is None:
            raise SceneError(path, ": the raster has no CRS, so it cannot be placed on a map")
        expected = _expected_bands(role, count)
        if expected:
            raise SceneError(path, f": a {role} raster needs {expected}, this one has {count}")
        if transform.b or transform.d:
            raise SceneError(
                path,
                f": its grid is rotated or sheared ({tuple(transform)[:6]}); geogan tiles "
                "north-up grids: warp it first (gdalwarp)",
            )
        if role == "s2" and np.issubdtype(np.dtype(dtype), np.floating):
            raise SceneError(
                path,
                f": S2 must be L1C digital numbers (integers, reflectance x 10000, as uint16), this one "
                f"is {dtype}; scale reflectances by 10000 and save as UInt16",
            )
        if values is not None:
            low, high = values
            if low < 0 or high > 255:
                raise SceneError(
                    path,
                    f": label values must be class values 0..255 (0: unlabelled); it holds {low:g}..{high:g}",
                )
        if role != "s2":
            left, bottom, right, top = transform_bounds(crs, grid["crs"], *bounds)
            s2 = grid["bounds"]
            if min(right, s2.right) <= max(left, s2.left) or min(top, s2.top) <= max(bottom, s2.bottom):
                raise SceneError(path, f" does not overlap {scene.paths['s2']}: nothing to align")
    return grid


def _label_range(src) -> tuple[float, float] | None:
    """(min, max) of a label raster's band 1 where its type can leave 0..255; None where it cannot.

    GDAL's approximate statistics (from overviews or a sample of blocks): enough to catch a label
    raster of another kind (a DEM, codes above 255), not a single stray pixel.
    """
    dtype = np.dtype(src.dtypes[0])
    if dtype == np.uint8:
        return None
    stats = src.statistics(1, approx=True)
    return float(stats.min), float(stats.max)


def _source_stamp(path: str) -> list[Any]:
    try:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:  # a GDAL virtual path (/vsicurl/...): only its name is known
        return [path]


def _task_key(scene: Scene, index: int) -> str:
    return f"{scene.chip_id(0, 0).rsplit('_', 1)[0]}_{scene.patch or 'scene'}-{index:05d}"


def _batches(rows: list[int], cols: list[int], block: tuple[int, int]) -> list[list[tuple[int, int]]]:
    """Chip origins (row, col) in tasks: see MIN_CHIPS. Blocks in row-major order, chips within too."""
    bh, bw = block
    by_block: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r in rows:
        for c in cols:
            by_block.setdefault((r // bh, c // bw), []).append((r, c))
    batches: list[list[tuple[int, int]]] = []
    batch: list[tuple[int, int]] = []
    for key in sorted(by_block):
        chips = by_block[key]
        for i in range(0, len(chips), MAX_CHIPS):
            part = chips[i : i + MAX_CHIPS]
            if len(batch) + len(part) > MAX_CHIPS:
                batches.append(batch)
                batch = []
            batch.extend(part)
            if len(batch) >= MIN_CHIPS:
                batches.append(batch)
                batch = []
    return batches + [batch] if batch else batches


def plan(scenes: list[Scene], options: TileOptions) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Tasks of every scene that passes its checks, the failures of the others, edge drops."""
    stride = options.stride or options.size
    tasks: list[dict] = []
    failures: list[dict] = []
    dropped: Counter[str] = Counter()
    largest = (0, 0)  # of the scenes that passed their checks
    for scene in scenes:
        try:
            grid = check_scene(scene)
        except SceneError as err:
            log.error("%s", err)
            failures.append({"scene": scene.scene, "path": err.path, "error": str(err)})
            continue
        largest = max(largest, (grid["width"], grid["height"]), key=lambda wh: wh[0] * wh[1])
        rows = _offsets(grid["height"], options.size, stride, options.edge)
        cols = _offsets(grid["width"], options.size, stride, options.edge)
        if options.edge == "drop":
            whole = len(_offsets(grid["height"], options.size, stride, "pad")) * len(
                _offsets(grid["width"], options.size, stride, "pad")
            )
            if whole > len(rows) * len(cols):
                dropped["edge"] += whole - len(rows) * len(cols)
        log.info(
            "%s: %d x %d px, %d chips of %d px",
            scene.scene,
            grid["width"],
            grid["height"],
            len(rows) * len(cols),
            options.size,
        )
        stamps = {role: _source_stamp(path) for role, path in sorted(scene.paths.items())}
        for i, batch in enumerate(_batches(rows, cols, grid["block"])):
            body = {
                "version": 1,
                "sources": stamps,
                "size": options.size,
                "edge": options.edge,
                "min_valid": options.min_valid,
                "min_labelled": options.min_labelled,
                "zstd_level": options.zstd_level,
                "windows": batch,
            }
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            tasks.append(
                {
                    "key": _task_key(scene, i),
                    "scene": scene,
                    "windows": batch,
                    "fingerprint": digest,
                }
            )
    if not tasks and largest != (0, 0):
        n = len(scenes) - len(failures)
        raise ValueError(
            f"no {options.size} px chip fits in the {n} scene(s) given (the largest is {largest[0]} x "
            f"{largest[1]} px): tile them with a smaller size, or with edge pad"
        )
    return tasks, failures, dict(dropped)


# --- the task (worker side) --------------------------------------------------------------------


def _nodata(role: str, src) -> float | int:
    """The raster's own nodata, else the role's convention (0 for S2 and labels, NaN for S1)."""
    if src.nodata is not None:
        return src.nodata
    default = SENSORS[role].nodata
    assert default is not None  # every role's sensor has a nodata convention
    if np.isnan(default) and not np.issubdtype(np.dtype(src.dtypes[0]), np.floating):
        return 0
    return default


def _valid(data: np.ndarray, nodata: float | int) -> np.ndarray:
    """(H, W) True where every band holds a value (not nodata, not NaN)."""
    if np.issubdtype(data.dtype, np.floating):
        ok = np.isfinite(data)
        if not np.isnan(nodata):
            ok &= data != nodata
        return ok.all(axis=0)
    return (data != nodata).all(axis=0)


def _read(src, window: Window, nodata) -> np.ndarray:
    """Read ``window``, filling the part beyond the raster with nodata (for --edge pad)."""
    inside = window.intersection(Window(0, 0, src.width, src.height))
    if (inside.width, inside.height) == (window.width, window.height):
        return src.read(window=window)
    out = np.full((src.count, int(window.height), int(window.width)), nodata, dtype=src.dtypes[0])
    r0, c0 = int(inside.row_off - window.row_off), int(inside.col_off - window.col_off)
    out[:, r0 : r0 + int(inside.height), c0 : c0 + int(inside.width)] = src.read(window=inside)
    return out


def _descriptions(role: str, src) -> tuple[str, ...]:
    if all(src.descriptions):
        return tuple(src.descriptions)
    if role == "lc" and src.count == 1:
        return ("class",)
    return SENSORS[role].band_names


def write_chip(path: Path, data: np.ndarray, profile: dict, descriptions, tags: dict) -> None:
    """Write one chip as a GeoTIFF with ``profile``, to a temporary name and then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, data.nbytes) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        dst.update_tags(**tags)


def _profile(src, size: int, transform, nodata, zstd_level: int) -> dict:
    floating = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": src.count,
        "dtype": src.dtypes[0],
        "crs": src.crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "zstd",
        "zstd_level": zstd_level,
        "predictor": 3 if floating else 2,
    }
    if size % 16 == 0:
        profile.update(tiled=True, blockxsize=min(size, 256), blockysize=min(size, 256))
    return profile


def run_task(task: dict, out: str, options: dict) -> dict:
    """Tile one batch of windows of one scene; never raises: a failure comes back as a record."""
    scene: Scene = task["scene"]
    size, level = options["size"], options["zstd_level"]
    keep = options["min_valid"], options["min_labelled"]
    stats = {"s2": TaskStats(), "s1": TaskStats()}  # of the kept chips; stats.json merges the tasks'
    try:
        chips = []
        with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(scene.paths["s2"]) as s2:
            sources = {"s2": s2}
            opened = []
            try:
                for role, path in scene.paths.items():
                    if role == "s2":
                        continue
                    src = rasterio.open(path)
                    opened.append(src)
                    if src.crs != s2.crs or src.transform != s2.transform or src.shape != s2.shape:
                        nd = _nodata(role, src)
                        src = WarpedVRT(
                            src,
                            crs=s2.crs,
                            transform=s2.transform,
                            width=s2.width,
                            height=s2.height,
                            resampling=RESAMPLING[role],
                            src_nodata=nd,
                            nodata=nd,
                        )
                        opened.append(src)
                    sources[role] = src
                for row, col in task["windows"]:
                    chips.append(_chip(scene, sources, row, col, size, keep, level, stats, Path(out)))
            finally:
                for src in reversed(opened):
                    src.close()
    except DiskFullError as err:  # not the scene's fault: the client stops the whole run
        return {"key": task["key"], "disk_full": str(err)}
    except Exception as err:  # any error of this scene's rasters is this scene's failure
        bad = next((p for p in scene.paths.values() if p in str(err)), scene.paths["s2"])
        text = str(err).replace(f"{bad}: ", "").replace(" See previous exception for details.", "")
        if any(k in text for k in ("Read failed", "IReadBlock", "TIFFRead", "truncated")):
            text += " (the file is truncated or damaged: its pixel data cannot be read)"
        return {"key": task["key"], "scene": scene.scene, "error": f"{bad}: {text}", "path": bad}
    record = {
        "key": task["key"],
        "scene": scene.scene,
        "fingerprint": task["fingerprint"],
        "chips": chips,
        "stats": {role: _stats_json(acc.result()) for role, acc in stats.items()},
    }
    state = Path(out) / STATE / "tasks" / f"{task['key']}.json"
    try:
        write_text(state, json.dumps(record))
    except DiskFullError as err:
        return {"key": task["key"], "disk_full": str(err)}
    return record


def _chip(
    scene: Scene,
    sources: dict,
    row: int,
    col: int,
    size: int,
    keep: tuple[float, float],
    level: int,
    stats: dict[str, TaskStats],
    out: Path,
) -> dict:
    window = Window(col, row, size, size)
    s2 = sources["s2"]
    data, nodata, valid, counted = {}, {}, {}, {}
    for role, src in sources.items():
        try:
            nodata[role] = _nodata(role, src)
            data[role] = _read(src, window, nodata[role])
        except RasterioError as err:
            raise RasterioError(f"{scene.paths[role]}: cannot read window {window}: {err}") from None
        if role in stats:
            counted[role] = stats[role].count(data[role], nodata[role])
        if role in counted and counted[role].nodata_pixels == 0:  # no band holds nodata: every pixel is valid
            valid[role] = 1.0
        else:
            valid[role] = float(_valid(data[role], nodata[role]).mean())
    transform = s2.window_transform(window)
    chip = {
        "chip": scene.chip_id(row, col),
        "row_off": row,
        "col_off": col,
        "size": size,
        "crs": s2.crs.to_string(),
        "bounds": list(rasterio.windows.bounds(window, s2.transform)),
        "valid": valid,
        "roles": {},
        "histogram": None,
        "dropped": None,
    }
    min_valid, min_labelled = keep
    low = [role for role in sources if role != "lc" and valid[role] < min_valid]
    if low:
        chip["dropped"] = f"nodata ({low[0]})"
        return chip
    if "lc" in sources and valid["lc"] < min_labelled:
        chip["dropped"] = "too little labelled (lc)"
        return chip
    for role, found in counted.items():
        stats[role].add(found)
    if "lc" in data:
        values, counts = np.unique(data["lc"][0][data["lc"][0] != nodata["lc"]], return_counts=True)
        chip["histogram"] = {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)}
    for role, src in sources.items():
        rel = scene.chip_path(role, row, col)
        tags = {
            "GEOGAN_ROLE": role,
            "GEOGAN_SOURCE": scene.paths[role],
            "GEOGAN_WINDOW": f"{row},{col},{size}",
        }
        credit = getattr(src, "src_dataset", src).tags().get(COPYRIGHT)  # attribution travels with chips
        if credit:
            tags[COPYRIGHT] = credit
        write_chip(
            out / rel,
            data[role],
            _profile(src, size, transform, nodata[role], level),
            _descriptions(role, src),
            tags,
        )
        chip["roles"][role] = rel
    return chip


# --- band statistics (of each task's chips on its Dask worker, then merged over tasks) -------------


class TaskStats:
    """Band statistics of one role over the chips of one task: :meth:`count` one chip's pixels, then
    :meth:`add` what it counted if the chip is kept.

    8/16-bit integers: one histogram per band over all the chips, so count, mean, M2, min, max and
    percentiles are exact for the task (no sort, no float copy); other types: NumPy on each chip's
    valid values, merged by :func:`_merge_stats`.
    """

    def __init__(self) -> None:
        self.counts: list[np.ndarray] | None = None  # per band: pixel count of each value - shift
        self.shift = 0
        self.nodata: float | int | None = None
        self.parts: list[dict] = []

    def count(self, data: np.ndarray, nodata) -> ChipCounts:
        """One chip's (bands, H, W) pixels counted, not yet added."""
        if data.dtype.kind not in "ui" or data.dtype.itemsize > 2:
            return ChipCounts(part=_array_stats(data, nodata))
        shift = int(np.iinfo(data.dtype).min)
        histograms = [_histogram(band, shift) for band in data]
        at = float(nodata) - shift
        missing = None  # nodata pixels over the bands, where the histograms can say (an integer nodata)
        if at.is_integer():  # NaN is never an integer
            missing = sum(int(h[int(at)]) for h in histograms if 0 <= at < len(h))
        return ChipCounts(histograms=histograms, shift=shift, nodata_value=nodata, nodata_pixels=missing)

    def add(self, found: ChipCounts) -> None:
        """Add one kept chip's counts."""
        if found.part is not None:
            self.parts.append(found.part)
            return
        if self.counts is None:
            self.counts = [np.zeros(0, np.int64) for _ in found.histograms]
            self.shift, self.nodata = found.shift, found.nodata_value
        for i, histogram in enumerate(found.histograms):
            counts = self.counts[i]
            if len(histogram) > len(counts):
                histogram[: len(counts)] += counts
                self.counts[i] = histogram
            else:
                counts[: len(histogram)] += histogram

    def result(self) -> dict | None:
        if self.counts is None:
            return _merge_stats(self.parts)
        stats = [_histogram_stats(counts, self.shift, self.nodata) for counts in self.counts]
        return {k: np.array([s[i] for s in stats], dtype=np.float64) for i, k in enumerate(_KEYS)}


@dataclass
class ChipCounts:
    """What :meth:`TaskStats.count` found in one chip: per-band histograms (8/16-bit integers) or
    partial statistics (other types); ``nodata_pixels``: pixels holding nodata summed over the bands,
    where the histograms tell (None where they cannot)."""

    histograms: list[np.ndarray] = field(default_factory=list)
    shift: int = 0
    nodata_value: float | int | None = None
    nodata_pixels: int | None = None
    part: dict | None = None


_KEYS = ("n", "mean", "m2", "min", "max", "q")
_NO_VALUES = (0, 0.0, 0.0, np.inf, -np.inf, np.zeros(len(QS)))  # a band with no valid pixel


def _histogram(band: np.ndarray, shift: int) -> np.ndarray:
    """Pixel count of each value of an 8/16-bit integer band up to its largest; index = value - shift.

    Only as long as the band's largest value needs (reflectances reach a few thousand of 65536), so
    the task's histograms stay a few KB a band, not 512 KB.
    """
    values = band.ravel()
    return np.bincount(values.astype(np.int32) - shift if shift else values)


def _histogram_stats(counts: np.ndarray, shift: int, nodata) -> tuple:
    """(count, mean, M2, min, max, percentiles at QS) of the values a histogram counts, nodata left out."""
    nodata = float(nodata)
    if nodata.is_integer() and 0 <= nodata - shift < len(counts):  # NaN is never an integer
        counts = counts.copy()
        counts[int(nodata) - shift] = 0
    bins = np.flatnonzero(counts)
    if not bins.size:
        return _NO_VALUES
    values, weights = (bins + shift).astype(np.float64), counts[bins]
    n = int(weights.sum())
    mean = float(weights @ values) / n
    m2 = float(weights @ (values - mean) ** 2)
    cumulative = np.cumsum(weights)
    h = (n - 1) * QS / 100
    below, above = np.floor(h), np.minimum(np.floor(h) + 1, n - 1)
    lo = values[np.searchsorted(cumulative, below, side="right")]
    hi = values[np.searchsorted(cumulative, above, side="right")]
    return n, mean, m2, values[0], values[-1], lo + (h - below) * (hi - lo)


def _array_stats(data: np.ndarray, nodata) -> dict:
    """Valid-pixel count, mean, M2, min, max and percentiles of each band of one chip's array."""
    stats = [_band_stats(band, nodata) for band in data]
    return {k: np.array([s[i] for s in stats], dtype=np.float64) for i, k in enumerate(_KEYS)}


def _band_stats(band: np.ndarray, nodata) -> tuple:
    """(count, mean, M2, min, max, ``np.percentile(values, QS)``) of one band's valid pixels (the types
    :class:`TaskStats` does not count in a histogram)."""
    values = band[_valid(band[None], nodata)].astype(np.float64)
    if not values.size:
        return _NO_VALUES
    mean = values.mean()
    m2 = ((values - mean) ** 2).sum()
    return values.size, mean, m2, values.min(), values.max(), np.percentile(values, QS)


def _merge_stats(parts) -> dict | None:
    """One partial of many: Chan's parallel mean/variance, and merged percentiles per band."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    out = dict(parts[0])
    for p in parts[1:]:
        n = out["n"] + p["n"]
        delta = p["mean"] - out["mean"]
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(n > 0, p["n"] / n, 0.0)
            out["m2"] = out["m2"] + p["m2"] + np.where(n > 0, delta**2 * out["n"] * p["n"] / n, 0.0)
        out["mean"] = out["mean"] + delta * w
        out["n"] = n
        out["min"], out["max"] = np.minimum(out["min"], p["min"]), np.maximum(out["max"], p["max"])
    q = np.zeros_like(parts[0]["q"])
    for b in range(len(q)):
        have = [p for p in parts if p["n"][b] > 0]
        if have:
            q[b] = merge_percentiles(
                QS,
                [QS] * len(have),
                [p["q"][b] for p in have],
                Ns=[int(p["n"][b]) for p in have],
                method="linear",
            )
    out["q"] = q
    return out


def _stats_json(stats: dict | None) -> dict | None:
    return None if stats is None else {k: np.asarray(v).tolist() for k, v in stats.items()}


def _stats_array(stats: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}


def summarise_stats(parts: list[dict]) -> dict:
    """stats.json's numbers of one role from the partial statistics of its tasks."""
    total = _merge_stats([_stats_array(p) for p in parts])
    assert total is not None, "summarise_stats needs at least one task's statistics"
    i01, i99 = int(np.argmin(abs(QS - 1))), int(np.argmin(abs(QS - 99)))
    std = np.sqrt(np.where(total["n"] > 0, total["m2"] / np.maximum(total["n"], 1), np.nan))
    return {
        "count": total["n"].astype(int).tolist(),
        "mean": total["mean"].tolist(),
        "std": std.tolist(),
        "min": total["min"].tolist(),
        "max": total["max"].tolist(),
        "p01": total["q"][:, i01].tolist(),
        "p99": total["q"][:, i99].tolist(),
    }


# --- outputs -----------------------------------------------------------------------------------


def footprints(chips: list[dict]):
    """One polygon per chip (``chip``, ``scene``, ``crs``): in the chips' CRS when they share one,
    else in EPSG:4326."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    frame = pd.DataFrame(
        {
            "chip": [c["chip"] for c in chips],
            "scene": [c["scene"] for c in chips],
            "crs": [c["crs"] for c in chips],
            "geometry": [box(*c["bounds"]) for c in chips],
        }
    )
    crss = sorted(frame["crs"].unique())
    if len(crss) == 1:
        return gpd.GeoDataFrame(frame, geometry="geometry", crs=crss[0])
    return pd.concat(
        [gpd.GeoDataFrame(g, geometry="geometry", crs=crs).to_crs(4326) for crs, g in frame.groupby("crs")]
    )


def write_index(out: Path, chips: list[dict], split: dict[str, str], shapes) -> Path:
    """``index.gpkg``, layer ``tiles``: one polygon per written chip file (s2, s1 and lc rows).

    Geometries are in the scenes' CRS when all chips share one, else in EPSG:4326 (the ``crs``
    column always holds each chip's own CRS). ``valid_fraction`` is the share of valid pixels of an
    image row's raster (of the chip's S2 on label rows); ``labelled_fraction`` the share of labelled
    pixels of the chip's labels (empty without labels); ``split`` the chip's split (or ``gap``);
    ``shapes``: the chips' :func:`footprints`.
    """
    import geopandas as gpd
    import pandas as pd

    classes = sorted({int(v) for c in chips for v in (c["histogram"] or {})})
    shapes = shapes.set_index("chip").geometry
    rows = []
    for c in chips:
        for role, rel in c["roles"].items():
            row = {
                "chip": c["chip"],
                "path": rel,
                "role": role,
                "scene": c["scene"],
                "split": split[c["chip"]],
                "row_off": c["row_off"],
                "col_off": c["col_off"],
                "width": c["size"],
                "height": c["size"],
                "crs": c["crs"],
                "valid_fraction": c["valid"]["s2" if role == "lc" else role],
                "labelled_fraction": c["valid"].get("lc"),
            }
            for v in classes:
                row[f"class_{v}"] = (
                    (c["histogram"] or {}).get(str(v), 0) if c["histogram"] is not None else None
                )
            row["geometry"] = shapes[c["chip"]]
            rows.append(row)
    columns = [
        "chip",
        "path",
        "role",
        "scene",
        "split",
        "row_off",
        "col_off",
        "width",
        "height",
        "crs",
        "valid_fraction",
        "labelled_fraction",
        *[f"class_{v}" for v in classes],
        "geometry",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["labelled_fraction"] = frame["labelled_fraction"].astype("Float64")
    for v in classes:
        frame[f"class_{v}"] = frame[f"class_{v}"].astype("Int64")
    gdf = gpd.GeoDataFrame(frame, geometry="geometry", crs=shapes.crs)
    path = out / INDEX_FILE
    with replacing(path) as tmp:
        gdf.to_file(tmp, layer=INDEX_LAYER, driver="GPKG")
    return path


# --- the stage ---------------------------------------------------------------------------------


class _Cluster:
    """The Dask client of a run: the one given, else one of :func:`geogan.cluster.client` made when
    first needed (no scene to tile, no cluster started) and closed with the run."""

    def __init__(self, options: TileOptions, client=None):
        self.options, self.client, self.own = options, client, ExitStack()

    def get(self):
        if self.client is None:
            from geogan.cluster import client

            self.client = self.own.enter_context(
                client(self.options.scheduler, self.options.workers, self.options.threads)
            )
        return self.client

    def close(self) -> None:
        self.own.close()


def _check_output(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(out / f"write-test-{os.getpid()}")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise NotWritable(out, err.strerror or str(err)) from None


def _shape(options: TileOptions) -> dict[str, Any]:
    """The options that decide which chips a folder holds and how they are named."""
    return {"size": options.size, "stride": options.stride or options.size, "edge": options.edge}


def _records(out: Path) -> list[dict]:
    """Every task record in the folder (of this run's scenes and of earlier runs')."""
    found = []
    for path in sorted((out / STATE / "tasks").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "chips" in record and "stats" in record:
            found.append(record)
    return found


def _remove_chips(out: Path, paths: set[str]) -> None:
    for rel in sorted(paths):
        path = out / rel
        if path.resolve().is_relative_to(out.resolve()):
            path.unlink(missing_ok=True)
            Path(f"{path}.aux.xml").unlink(missing_ok=True)


def _kept_paths(records: list[dict]) -> set[str]:
    return {rel for r in records for c in r["chips"] if not c["dropped"] for rel in c["roles"].values()}


def _reconcile(out: Path, scenes: list[Scene], options: TileOptions) -> list[dict]:
    """Decide what a run into a folder tiled before does (``options.existing``); return the
    records of earlier scenes that stay in the folder (``add``). ``.geogan/folder.json`` (written at
    the end of a run) says what the folder holds: the chip size and the scenes tiled into it."""
    record = out / STATE / FOLDER
    try:
        held = json.loads(record.read_text())
    except (OSError, ValueError):
        held = None
    names = sorted({s.scene for s in scenes})
    earlier: list[dict] = []
    if held is not None:
        shape_changed = held.get("shape") != _shape(options)
        others = sorted(set(held.get("scenes", [])) - set(names))
        if shape_changed or others:
            what = []
            if shape_changed:
                what.append(f"chips of {held.get('shape')} (this run: {_shape(options)})")
            if others:
                more = f" and {len(others) - 3} more" if len(others) > 3 else ""
                what.append(f"scenes this run does not name ({', '.join(others[:3])}{more})")
            if options.existing == "refuse" or (options.existing == "add" and shape_changed):
                hint = "existing replace (or a new folder)" if shape_changed else "existing add or replace"
                raise ValueError(f"{out}: holds {' and '.join(what)}; tile with {hint}, or into a new folder")
            if options.existing == "replace":
                index = out / INDEX_FILE
                listed = set()
                if index.exists():
                    listed = set(read_tile_index(out)["path"])
                log.info("replacing what %s held: %s", out, "; ".join(what))
                _remove_chips(out, _kept_paths(_records(out)) | listed)
                for path in (out / STATE / "tasks").glob("*.json"):
                    path.unlink()
                held = None
            else:
                earlier = [r for r in _records(out) if r["scene"] in others]
                missing = [
                    r["scene"] for r in earlier if not all((out / p).exists() for p in _kept_paths([r]))
                ]
                if missing:
                    named = ", ".join(sorted(set(missing))[:3])
                    raise ValueError(
                        f"{out}: chips of earlier scenes are missing ({named}); tile with existing replace"
                    )
    return earlier


def _earlier(out: Path, task: dict) -> dict | None:
    """The record an earlier run left for ``task``'s key, whatever its fingerprint (None if none)."""
    try:
        record = json.loads((out / STATE / "tasks" / f"{task['key']}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if "chips" in record else None


def _done(out: Path, task: dict, record: dict | None) -> bool:
    """Whether ``record`` (see :func:`_earlier`) is ``task`` done: same fingerprint, its chips exist."""
    if record is None or record.get("fingerprint") != task["fingerprint"] or "stats" not in record:
        return False
    return all((out / rel).exists() for c in record["chips"] for rel in c["roles"].values())


def _run(tasks: list[dict], out: Path, options: TileOptions, cluster: _Cluster, progress: bool) -> list[dict]:
    from distributed import as_completed
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

    from geogan.progress import Progress

    client = cluster.get()
    opts = {
        "size": options.size,
        "min_valid": options.min_valid,
        "min_labelled": options.min_labelled,
        "zstd_level": options.zstd_level,
    }
    futures = [
        client.submit(run_task, t, str(out), opts, key=f"tile-{t['key']}-{t['fingerprint'][:12]}", pure=False)
        for t in tasks
    ]
    results = []
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        job = bar.add_task("tiling", total=len(futures))
        for future in as_completed(futures):
            result = future.result()
            if "disk_full" in result:
                raise DiskFullError(result["disk_full"])
            results.append(result)
            bar.advance(job)
    return results


def tile(options: TileOptions, client=None, progress: bool = True) -> TileSummary:
    """Run the tile stage; see the module docstring. ``client``: a dask.distributed Client to use.

    Raises ``ValueError`` for sources it cannot interpret and an output folder it cannot write,
    :class:`~geogan.files.LockError` while another run writes the folder, and
    :class:`~geogan.files.DiskFullError` when the disk fills; a scene that fails its checks or its
    reads is listed in ``failures`` and the others go on.
    """
    out = Path(options.out)
    _check_output(out)
    with folder_lock(out / STATE / LOCK, f"{out}: geogan tile into this folder"):
        return _tile(options, out, client, progress)


def _tile(options: TileOptions, out: Path, client, progress: bool) -> TileSummary:
    start = time.perf_counter()
    for tmp in sweep(out):  # left by a killed run: partial files under geogan's temporary names
        log.info("removed %s (left by an interrupted run)", tmp)
    (out / STATE / "tasks").mkdir(parents=True, exist_ok=True)
    scenes = find_scenes(options.sources)
    tasks, failures, dropped = plan(scenes, options)
    earlier = _reconcile(out, scenes, options)
    summary = TileSummary(dropped=Counter(dropped), failures=failures, out=out)
    records, todo, stale = list(earlier), [], set()
    for task in tasks:
        record = _earlier(out, task)
        if record is not None and _done(out, task, record):
            records.append(record)
            summary.skipped += sum(1 for c in record["chips"] if not c["dropped"])
        else:
            todo.append(task)
            if record is not None:  # the chips it kept before: removed below unless kept again
                stale |= _kept_paths([record])
    log.info("%d tasks: %d done before, %d to run", len(tasks), len(records), len(todo))
    cluster = _Cluster(options, client)
    try:
        if todo:
            for record in _run(todo, out, options, cluster, progress):
                if "error" in record:
                    log.error("%s", record["error"])
                    failures.append(
                        {"scene": record["scene"], "path": record["path"], "error": record["error"]}
                    )
                else:
                    summary.written += sum(1 for c in record["chips"] if not c["dropped"])
                    records.append(record)
        records.sort(key=lambda r: r["key"])  # merged statistics must not depend on completion order
        _remove_chips(out, stale - _kept_paths(records))
        chips = _collect(records, scenes, failures, summary)
        if chips:  # a run that kept nothing leaves the folder's index, statistics and split as they were
            _outputs(out, chips, records, options)
            held = sorted({c["scene"] for c in chips})
            write_text(out / STATE / FOLDER, json.dumps({"shape": _shape(options), "scenes": held}, indent=1))
    finally:
        cluster.close()
    if failures:
        write_text(out / "failures.json", json.dumps(failures, indent=2))
    elif (out / "failures.json").exists():
        (out / "failures.json").unlink()
    summary.chips = len(chips)
    summary.dropped = dict(summary.dropped)
    summary.seconds = time.perf_counter() - start
    return summary


def _collect(
    records: list[dict], scenes: list[Scene], failures: list[dict], summary: TileSummary
) -> list[dict]:
    """Kept chips of the scenes that did not fail; a scene whose role is all nodata fails here."""
    failed = {f["scene"] for f in failures}
    by_scene: dict[str, list[dict]] = {}
    for record in records:
        for c in record["chips"]:
            c["scene"] = record["scene"]
            by_scene.setdefault(record["scene"], []).append(c)
    paths = {s.scene: s.paths for s in scenes}
    for name, chips in by_scene.items():
        if name not in paths:  # a scene of an earlier run (existing add): checked when it was tiled
            continue
        for role in chips[0]["valid"]:
            if name not in failed and all(c["valid"][role] == 0 for c in chips):
                path = paths[name][role]
                error = f"{path}: every pixel the chips cover is nodata (the {role} raster is empty)"
                log.error("%s", error)
                failures.append({"scene": name, "path": path, "error": error})
                failed.add(name)
    kept = []
    for name, chips in sorted(by_scene.items()):
        for c in chips:
            if c["dropped"]:
                summary.dropped[c["dropped"]] += 1
            elif name not in failed:
                kept.append(c)
    return sorted(kept, key=lambda c: c["chip"])


def attribution(out: Path, chips: list[dict]) -> list[str]:
    """The sources' attributions (their ``TIFFTAG_COPYRIGHT``), read from one chip per scene and role."""
    first: dict[tuple[str, str], str] = {}
    for c in chips:
        for role, rel in c["roles"].items():
            first.setdefault((c["scene"], role), rel)
    found = set()
    for rel in first.values():
        with rasterio.open(out / rel) as src:
            credit = src.tags().get(COPYRIGHT)
        if credit:
            found.add(credit)
    return sorted(found)


def _outputs(out: Path, chips: list[dict], records: list[dict], options: TileOptions) -> None:
    from geogan import tiles  # geopandas: not in the workers, which import this module as they start

    split: dict[str, str] = {}
    if chips:
        shapes = footprints(chips)
        decided = tiles.decide_split(
            shapes, options.split, options.split_fractions, options.split_block, options.split_seed
        )
        split = decided["chips"]
        counts = ", ".join(f"{n} {k}" for k, n in decided["counts"].items())
        log.info("split by %s: %s", decided["method"], counts)
        tiles.write_split(out, decided)
        write_index(out, chips, split, shapes)
    write_lists(out, chips, split)
    fingerprint = hashlib.sha256(
        json.dumps(sorted((r["key"], r["fingerprint"]) for r in records)).encode()
    ).hexdigest()
    stats_path = out / STATS_FILE
    try:
        if json.loads(stats_path.read_text()).get("fingerprint") == fingerprint:
            log.info("stats.json is up to date")
            return
    except (OSError, ValueError):
        pass
    roles = {}
    kept = {c["scene"] for c in chips}
    for role in ("s2", "s1"):
        paths = [out / c["roles"][role] for c in chips if role in c["roles"]]
        parts = [r["stats"][role] for r in records if r["scene"] in kept and r["stats"].get(role)]
        if paths and parts:
            log.info("band statistics of %d %s chips", len(paths), role)
            with rasterio.open(paths[0]) as src:
                names, nodata = list(src.descriptions), src.nodata
            roles[role] = {
                "bands": names,
                "nodata": "nan" if nodata is None or np.isnan(nodata) else nodata,
                **summarise_stats(parts),
            }
    stats = {
        "geogan_version": geogan.__version__,
        "percentile_method": PERCENTILE_METHOD,
        "fingerprint": fingerprint,
        "roles": roles,
        "attribution": attribution(out, chips),
    }
    write_text(stats_path, json.dumps(stats, indent=2))
