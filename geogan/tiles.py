"""The tile folder: the contract between ``geogan tile`` and every stage after it.

Its files and names live here: chip names (:data:`CHIP_NAME`) and their twins of other roles
(:func:`twin_path`), ``index.gpkg`` (:data:`INDEX_FILE`, layer ``tiles``, read by
:func:`read_tile_index`; written by :func:`geogan.tiling.write_index` from the chips it wrote),
``stats.json`` (:data:`STATS_FILE`), ``split.json`` (:data:`SPLIT_FILE`) and the SEN12MS lists
(:func:`write_lists`). geopandas is imported where it is used: tile's Dask workers import this
module as they start.

The split: train / val / test of every chip, decided once by ``geogan tile``.

Every stage after ``tile`` reads the split from the folder (:func:`read_split`), never restates
fractions or seeds. ``DIR/split.json`` holds the method, its settings, the count per split and
``{chip id: split}``; ``index.gpkg`` has the same in its ``split`` column, so QGIS can colour
chips by split.

Two methods (:func:`decide_split`):

- ``scene``: whole scenes (groups of scenes whose footprints overlap) go to one split, dealt out so
  that each split's share of chips comes close to its fraction.
- ``blocks``: spatial blocks of ``block`` x ``block`` chips (on one grid per CRS, so scenes of the
  same place share their blocks) are dealt out the same way, and chips that touch a chip of another
  split become ``gap``: a val chip touching a test chip, a train chip touching a val or test chip.
  So no chip of one split shares an edge or a corner with a chip of another, and one scene is
  enough to train, validate and test. Gap chips are kept on disk and in the index, in no split.

``auto`` (the default) splits by scene when there are at least as many separate scenes as splits
to fill, else by blocks (of fewer chips where the scenes are too small for ``block``; where they are
too small for any, every chip is train and the method reads ``none``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geogan.files import write_text

if TYPE_CHECKING:  # geopandas is imported where it is used: tile's workers import this module
    import geopandas as gpd

log = logging.getLogger(__name__)

# --- the tile folder's files and names --------------------------------------------------------------

INDEX_FILE = "index.gpkg"  # layer INDEX_LAYER: a row per chip file (footprint, role, scene, fractions, split)
INDEX_LAYER = "tiles"
STATS_FILE = "stats.json"  # band statistics per role, attribution
SPLIT_FILE = "split.json"
SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")  # SEN12MS folders
SPLITS = ("train", "val", "test")
GAP = "gap"

#: ``{ROI}_{season}_{role}_{scene}_{patch}.tif``, e.g. ``ROIs1158_spring_s2_1_p30.tif``.
CHIP_NAME = re.compile(r"^(?P<season>.+)_(?P<role>[a-z0-9]+)_(?P<scene>[^_]+)_(?P<patch>[^_]+)\.tif$")

MASK_ROLE = "mask"


def twin_path(path: str | Path, role: str) -> Path:
    """The path of a chip's twin of another role in the tile layout.

    ``DIR/ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p30.tif`` with role ``mask`` is
    ``DIR/ROIs1158_spring/mask_1/ROIs1158_spring_mask_1_p30.tif``.
    """
    path = Path(path)
    match = CHIP_NAME.match(path.name)
    if match is None:
        raise ValueError(
            f"{path}: not a chip name of the tile layout ({{folder}}_{{role}}_{{scene}}_{{patch}}.tif)"
        )
    season, scene, patch = match["season"], match["scene"], match["patch"]
    return path.parent.parent / f"{role}_{scene}" / f"{season}_{role}_{scene}_{patch}.tif"


def read_tile_index(tiles: str | Path) -> gpd.GeoDataFrame:
    """The ``tiles`` layer of ``DIR/index.gpkg`` written by ``geogan tile``."""
    path = Path(tiles) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tile index (run `geogan tile ... --out {tiles}` first)")
    import geopandas as gpd

    try:
        index = gpd.read_file(path, layer=INDEX_LAYER)
    except Exception as err:  # pyogrio raises several error types for unreadable files
        raise ValueError(f"{path}: cannot read layer 'tiles' ({err})") from err
    missing = {"path", "role", "scene", "chip"} - set(index.columns)
    if missing:
        raise ValueError(f"{path}: layer 'tiles' lacks the columns {sorted(missing)}")
    return index


def write_lists(out: Path, chips: list[dict], split: dict[str, str]) -> None:
    """``train_list.txt`` / ``test_list.txt``: S2 chip names of the train and test splits (val and
    gap chips are in ``split.json`` and ``index.gpkg`` only), and the folders torchgeo checks.

    Every chip with an S2 raster is listed, whatever its layout. torchgeo's own SEN12MS class loads
    s1 and lc twins for every name, so it reads folders whose chips have all three roles;
    :mod:`geogan.datasets` reads any.
    """
    for season in SEASONS:
        (out / season).mkdir(exist_ok=True)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for c in chips:
        if "s2" in c["roles"] and split[c["chip"]] in lists:
            lists[split[c["chip"]]].append(Path(c["roles"]["s2"]).name)
    for name, items in lists.items():
        write_text(out / f"{name}_list.txt", "".join(f"{i}\n" for i in sorted(items)))


# --- the split ---------------------------------------------------------------------------------------


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    out = np.asarray(fractions, dtype=np.float64)
    if out.shape != (3,) or (out < 0).any() or not np.isclose(out.sum(), 1.0):
        raise ValueError(f"split fractions must be three numbers >= 0 that sum to 1, got {tuple(fractions)}")
    return out


def _deal(units: list[list[str]], sizes: list[int], fractions: np.ndarray, seed: int) -> list[int]:
    """Split index (0 train, 1 val, 2 test) of each unit: shuffled with ``seed``, the first ones to
    test, val, train (those with a fraction above 0), then each to the split furthest below its share."""
    wanted = [i for i in (2, 1, 0) if fractions[i] > 0]
    order = np.random.default_rng(seed).permutation(len(units))
    counts = np.zeros(3)
    out = [0] * len(units)
    for n, u in enumerate(order):
        i = wanted[n] if n < len(wanted) else int(np.argmax(fractions * (counts.sum() + sizes[u]) - counts))
        counts[i] += sizes[u]
        out[u] = i
    return out


def scene_groups(index: gpd.GeoDataFrame) -> list[list[str]]:
    """Scenes grouped so that scenes whose footprints overlap share a group (sorted, stable)."""
    import geopandas as gpd

    footprints = index[["scene", "geometry"]].dissolve("scene").reset_index()
    parent = {s: s for s in footprints["scene"]}

    def root(s: str) -> str:
        while parent[s] != s:
            s = parent[s]
        return s

    shapes = dict(zip(footprints["scene"], footprints.geometry, strict=True))
    pairs = gpd.sjoin(footprints, footprints, predicate="intersects")
    for left, right in zip(pairs["scene_left"], pairs["scene_right"], strict=True):
        if left != right and shapes[left].intersection(shapes[right]).area > 0:
            parent[root(left)] = root(right)
    groups: dict[str, list[str]] = {}
    for s in sorted(parent):
        groups.setdefault(root(s), []).append(s)
    return sorted(groups.values())


def split_scenes(
    index: gpd.GeoDataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """``{scene: split}``: groups of overlapping scenes dealt out by chip count (see the module doc).

    Every chip counts once, whatever its roles. Each split with a fraction above 0 gets at least one
    group; fewer groups than such splits is an error. Same index, fractions and seed, same split.
    """
    shares = _check_fractions(fractions)
    index = index.drop_duplicates("chip")
    groups = scene_groups(index)
    wanted = int((shares > 0).sum())
    if len(groups) < wanted:
        raise ValueError(
            f"{len(groups)} separate scene(s) cannot fill {wanted} splits (fractions {tuple(shares)}); "
            "split by spatial blocks (--split blocks), tile more scenes or set a fraction to 0"
        )
    chips = index["scene"].value_counts()
    dealt = _deal(groups, [int(sum(chips[s] for s in g)) for g in groups], shares, seed)
    return {s: SPLITS[i] for g, i in zip(groups, dealt, strict=True) for s in g}


def split_blocks(
    index: gpd.GeoDataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1), block: int = 4, seed: int = 0
) -> dict[str, str]:
    """``{chip: split or "gap"}`` by spatial blocks of ``block`` x ``block`` chips (see the module doc).

    ``index`` has one row per chip (``chip``, ``geometry``: the chip's footprint, all in one CRS).
    """
    shares = _check_fractions(fractions)
    index = index.drop_duplicates("chip").reset_index(drop=True)
    bounds = index.geometry.bounds
    width = float(np.median(bounds["maxx"] - bounds["minx"]))
    cell = block * width
    x0, y0 = bounds["minx"].min(), bounds["maxy"].max()
    keys = [
        (math.floor((x - x0) / cell + 1e-6), math.floor((y0 - y) / cell + 1e-6))
        for x, y in zip(bounds["minx"], bounds["maxy"], strict=True)
    ]
    blocks: dict[tuple[int, int], list[int]] = {}
    for row, key in enumerate(keys):
        blocks.setdefault(key, []).append(row)
    units = [blocks[k] for k in sorted(blocks)]
    wanted = int((shares > 0).sum())
    if len(units) < wanted:
        raise ValueError(
            f"the chips make {len(units)} spatial block(s) of {block} x {block} chips, too few for {wanted} "
            "splits; give a smaller --split-block"
        )
    dealt = _deal([[str(r) for r in u] for u in units], [len(u) for u in units], shares, seed)
    split = np.empty(len(index), dtype=object)
    for unit, i in zip(units, dealt, strict=True):
        split[unit] = SPLITS[i]
    # Gaps: a chip touching a chip of a split dealt before it (test, then val) leaves its split.
    import geopandas as gpd
    from shapely.geometry import box

    eps = width * 1e-6
    grown = [box(x0_ - eps, y0_ - eps, x1 + eps, y1 + eps) for x0_, y0_, x1, y1 in bounds.to_numpy()]
    tree = gpd.GeoSeries(grown).sindex
    for higher, lower in (("test", "val"), ("test", "train"), ("val", "train")):
        rows = np.flatnonzero(split == higher)
        if not len(rows):
            continue
        _, hit = tree.query(index.geometry.iloc[rows], predicate="intersects")
        hit = np.unique(hit)
        split[hit[split[hit] == lower]] = GAP
    out = dict(zip(index["chip"], split, strict=True))
    empty = [SPLITS[i] for i in (2, 1, 0) if shares[i] > 0 and SPLITS[i] not in out.values()]
    if empty:
        raise ValueError(
            f"spatial blocks of {block} x {block} chips leave no {' or '.join(empty)} chips once the gaps "
            "between splits are taken out; give a smaller --split-block"
        )
    return out


def decide_split(
    index: gpd.GeoDataFrame, method: str, fractions: Sequence[float], block: int, seed: int
) -> dict[str, Any]:
    """The split of a tile folder's chips: what :func:`write_split` writes (see the module doc)."""
    shares = _check_fractions(fractions)
    index = index.drop_duplicates("chip")
    asked = method
    chips: dict[str, str] | None
    if method == "auto":
        wanted = (shares > 0).sum()  # fewer scenes than splits make fewer groups: no need to group them
        enough = index["scene"].nunique() >= wanted and len(scene_groups(index)) >= wanted
        method = "scene" if enough else "blocks"
    if method == "scene":
        by_scene = split_scenes(index, fractions, seed)
        chips = {c: by_scene[s] for c, s in zip(index["chip"], index["scene"], strict=True)}
    elif method == "blocks":
        chips = None
        sizes = [block]
        if asked == "auto":
            sizes = sorted({block, *(b for b in (4, 2, 1) if b < block)}, reverse=True)
        for size in sizes:  # auto: smaller blocks where the chips are too few for the asked size
            try:
                chips, block = split_blocks(index, fractions, size, seed), size
                break
            except ValueError:
                if size == sizes[-1] and asked == "blocks":
                    raise
        if chips is None:  # auto, and too few chips for any spatial split
            log.warning("%d chip(s) are too few to split: all are train, none val or test", len(index))
            method, chips = "none", dict.fromkeys(index["chip"], "train")
    else:
        raise ValueError(f"split method must be auto, scene or blocks, got {method!r}")
    chips = dict(sorted(chips.items()))
    counts = {s: sum(1 for v in chips.values() if v == s) for s in (*SPLITS, GAP)}
    return {
        "method": method,
        "fractions": [float(f) for f in shares],
        "block": block if method == "blocks" else None,
        "seed": seed,
        "counts": counts,
        "fingerprint": hashlib.sha256(json.dumps(chips).encode()).hexdigest()[:16],
        "chips": chips,
    }


def write_split(out: Path, split: dict[str, Any]) -> Path:
    path = Path(out) / SPLIT_FILE
    write_text(path, json.dumps(split, indent=1))
    return path


def read_split(tiles: str | Path) -> dict[str, Any]:
    """``DIR/split.json`` as :func:`decide_split` made it; a clear error where there is none."""
    path = Path(tiles) / SPLIT_FILE
    try:
        split = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: the tile folder has no split (written by an older geogan?); run `geogan tile` with "
            "the same sources and --out again: it keeps the chips and writes the split"
        ) from None
    except ValueError as err:
        raise ValueError(f"{path}: not a split file ({err})") from None
    if not isinstance(split, dict) or not isinstance(split.get("chips"), dict):
        raise ValueError(f"{path}: not a split file (no 'chips' mapping)")
    return split


def chips_of(tiles: str | Path, wanted: str | Sequence[str]) -> set[str]:
    """Chip ids of one split (or of several) of a tile folder."""
    splits = {wanted} if isinstance(wanted, str) else set(wanted)
    bad = splits - {*SPLITS, GAP}
    if bad:
        raise ValueError(f"split must be one of {SPLITS}, got {sorted(bad)}")
    return {c for c, s in read_split(tiles)["chips"].items() if s in splits}
