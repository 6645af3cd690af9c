"""What the evaluate stage compares: real chips by split, and a synthetic export folder, as arrays.

Real chips come from a tile folder written by ``geogan tile``; they are split as the folder's
``split.json`` says (the split training read too), so the *training* chips are the ones the
generator saw and the *held-out* chips (val + test; no gap chips) are never among them.
Synthetic pairs come from a folder written by ``geogan generate`` (``index.gpkg`` layer ``pairs``,
``images/*.tif``, ``masks/*.tif``).

Every set is held as S2 L1C digital numbers (``dn``: uint16 ``(N, 13, H, W)``), the same chips
normalised with the *real* tiles' ``stats.json`` (``x``: float32 in [-1, 1]) and, where masks
exist, class indices of the chosen scheme (``mask``: int64 ``(N, H, W)``, -1 = nodata).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio

from geogan.bands import S2
from geogan.datasets import ChipDataset, Normalizer, mask_converter
from geogan.export import INDEX
from geogan.labels import ClassScheme
from geogan.progress import track
from geogan.tiles import MASK_ROLE, SPLIT_FILE, read_split, read_tile_index

log = logging.getLogger(__name__)


@dataclass
class ChipSet:
    """Chips of one set: names, DN, normalised values and (optionally) class indices."""

    name: str
    ids: list[str]
    dn: np.ndarray
    x: np.ndarray
    mask: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray | list[int], name: str | None = None) -> ChipSet:
        """The chips at positions ``keep`` (indices, or a boolean array over the chips)."""
        keep = np.asarray(keep)
        rows = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        mask = None if self.mask is None else self.mask[rows]
        return ChipSet(name or self.name, [self.ids[i] for i in rows], self.dn[rows], self.x[rows], mask)


def _read(path: Path, what: str) -> np.ndarray:
    try:
        with rasterio.open(path) as src:
            return src.read()
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{path}: cannot read this {what} ({err})") from err


def _pick(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items, drawn without replacement, in order."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(rng.choice(n, limit, replace=False))


def split_chips(
    tiles: Path,
    name: str,
    wanted: set[str],
    scheme: ClassScheme,
    mask_role: str | None,
    normalizer: Normalizer,
    max_tiles: int | None = None,
    rng: np.random.Generator | None = None,
    progress: bool = False,
) -> ChipSet | None:
    """The S2 chips of tile folder ``tiles`` in splits ``wanted`` (at most ``max_tiles``, drawn with
    ``rng``), as a chip set named ``name``; None when those splits hold no chips."""
    splits = read_split(tiles)["chips"]
    data = ChipDataset(tiles, split=None, roles=("s2",), scheme=scheme, mask_role=mask_role)
    rows = [i for i, c in enumerate(data.chips) if splits.get(c) in wanted]
    if not rows:
        return None
    rows = [rows[i] for i in _pick(len(rows), max_tiles, rng or np.random.default_rng(0))]
    dn, masks = [], []
    for i in track(rows, description=f"reading {name}", disable=not progress):
        dn.append(_read(tiles / data.paths.iloc[i]["s2"], "S2 chip"))
        if data.mask_role:
            masks.append(data[i]["mask"].numpy())  # class indices, converted as training sees them
    return _chipset(name, [data.chips[i] for i in rows], dn, masks or None, normalizer)


def real_splits(
    tiles: Path,
    scheme: ClassScheme,
    mask_role: str | None,
    normalizer: Normalizer,
    max_tiles: int | None,
    seed: int,
    progress: bool = True,
) -> tuple[ChipSet, ChipSet, dict[str, list[str]]]:
    """The training chips and the held-out (val + test) chips of a tile folder, and their scenes."""
    scene = read_tile_index(tiles).drop_duplicates("chip").set_index("chip")["scene"]
    rng = np.random.default_rng(seed)
    out = []
    scenes: dict[str, list[str]] = {}
    for name, wanted in (("real train", {"train"}), ("real held-out", {"val", "test"})):
        chips = split_chips(tiles, name, wanted, scheme, mask_role, normalizer, max_tiles, rng, progress)
        if chips is None:
            raise ValueError(f"{tiles}: no chips in split(s) {sorted(wanted)} (see {tiles / SPLIT_FILE})")
        scenes[name] = sorted({scene[c] for c in chips.ids})
        out.append(chips)
    return out[0], out[1], scenes


def _chipset(name, ids, dn, masks, normalizer: Normalizer) -> ChipSet:
    shapes = {d.shape for d in dn}
    if len(shapes) != 1:
        raise ValueError(f"{name}: chips differ in shape ({sorted(shapes)}); evaluate needs one chip size")
    dn = np.stack(dn).astype(np.uint16)
    x = np.stack([normalizer.encode(d) for d in dn])
    return ChipSet(name, list(ids), dn, x, None if masks is None else np.stack(masks).astype(np.int64))


def read_pairs_index(folder: Path) -> gpd.GeoDataFrame:
    """The ``pairs`` layer of ``folder/index.gpkg`` written by ``geogan generate``."""
    path = folder / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is {folder} a folder written by `geogan generate`?)")
    try:
        return gpd.read_file(path, layer="pairs")
    except Exception as err:  # pyogrio raises its own errors for a missing layer or a bad file
        raise ValueError(f"{path}: cannot read layer 'pairs' ({err})") from err


def synthetic_set(
    folder: Path,
    scheme: ClassScheme,
    normalizer: Normalizer,
    max_tiles: int | None,
    seed: int,
    progress: bool = True,
) -> ChipSet:
    """The pairs listed in ``folder/index.gpkg``: images (13-band DN) and masks where there are masks."""
    index = read_pairs_index(folder)
    if index.empty:
        raise ValueError(f"{folder / INDEX}: lists no pairs")
    rows = index.iloc[_pick(len(index), max_tiles, np.random.default_rng(seed + 1))]
    with_masks = bool((rows["mask"].fillna("") != "").all())
    if not with_masks and (rows["mask"].fillna("") != "").any():
        log.warning("%s: some pairs have no mask; masks are left out of the evaluation", folder)
    dn, masks, convert = [], [], None
    for row in track(list(rows.itertuples()), description="reading synthetic", disable=not progress):
        image = _read(folder / row.image, "synthetic image")
        if image.shape[0] != S2.count:
            raise ValueError(f"{folder / row.image}: {image.shape[0]} bands; expected the 13 S2 bands")
        dn.append(image)
        if with_masks:
            path = folder / row.mask
            if convert is None:
                convert = mask_converter(path, MASK_ROLE, scheme)
            masks.append(convert(_read(path, "synthetic mask")[0]))
    return _chipset("synthetic", list(rows["id"]), dn, masks if with_masks else None, normalizer)


def fingerprint(settings: Any, *arrays: np.ndarray | None) -> str:
    """sha256 of ``settings`` (JSON) and every array's shape, type and values: what a saved result of
    the evaluate stage was computed from, so that a re-run can take it instead of computing it."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for a in arrays:
        a = np.ascontiguousarray(a if a is not None else np.zeros(0))
        digest.update(f"{a.shape}{a.dtype.str}".encode())
        digest.update(a.data)
    return digest.hexdigest()
