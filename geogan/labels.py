"""Class schemes: class values, names and colours of land-cover labels.

Masks on disk hold class *values* (IGBP codes 1-17, DFC2020 codes 1-10, or a custom scheme's
ids); 0 is nodata / unlabelled in every scheme. Models work with contiguous class *indices*
0..K-1; :meth:`ClassScheme.to_index` and :meth:`ClassScheme.to_value` convert between the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.features
import shapely
import shapely.validation
import yaml

from geogan.files import replacing
from geogan.progress import track
from geogan.tiles import INDEX_FILE, MASK_ROLE, read_tile_index, twin_path

log = logging.getLogger(__name__)

NODATA = 0


@dataclass(frozen=True)
class LandClass:
    value: int
    name: str
    colour: str  # "#rrggbb"

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.colour.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class ClassScheme:
    name: str
    classes: tuple[LandClass, ...]

    def __post_init__(self) -> None:
        values = [c.value for c in self.classes]
        if len(set(values)) != len(values):
            raise ValueError(f"scheme {self.name!r} repeats a class value: {values}")
        if any(not 1 <= v <= 255 for v in values):
            raise ValueError(f"scheme {self.name!r}: class values must be 1..255 (0 is nodata)")

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(c.value for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def by_value(self, value: int) -> LandClass:
        for c in self.classes:
            if c.value == value:
                return c
        raise KeyError(f"scheme {self.name!r} has no class value {value}")

    def by_name(self, name: str) -> LandClass:
        for c in self.classes:
            if c.name.lower() == name.lower():
                return c
        raise KeyError(f"scheme {self.name!r} has no class named {name!r}; it has {self.names}")

    def to_index(self, values: np.ndarray) -> np.ndarray:
        """Class values -> indices 0..K-1; nodata and unknown values become -1."""
        lut = np.full(256, -1, dtype=np.int64)
        lut[list(self.values)] = np.arange(len(self))
        return lut[np.asarray(values).astype(np.int64).clip(0, 255)]

    def to_value(self, indices: np.ndarray) -> np.ndarray:
        """Indices 0..K-1 -> class values (uint8); -1 becomes nodata."""
        lut = np.array([NODATA, *self.values], dtype=np.uint8)
        return lut[np.asarray(indices).astype(np.int64) + 1]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table (value -> RGBA); nodata is transparent black."""
        cmap = {NODATA: (0, 0, 0, 0)}
        cmap.update({c.value: (*c.rgb, 255) for c in self.classes})
        return cmap

    def colourise(self, values: np.ndarray) -> np.ndarray:
        """An 8-bit RGB picture (H, W, 3) of a mask of class values."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        for c in self.classes:
            lut[c.value] = c.rgb
        return lut[np.asarray(values).astype(np.int64).clip(0, 255)]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClassScheme:
        """A custom scheme from YAML: ``name:`` and ``classes:`` of ``{id, name, colour}``."""
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
            classes = tuple(LandClass(int(c["id"]), str(c["name"]), str(c["colour"])) for c in doc["classes"])
            return cls(str(doc.get("name", path.stem)), classes)
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: not a class scheme ({err}); expected 'classes:' with id, name, colour"
            ) from err


IGBP = ClassScheme(
    "igbp",
    (
        LandClass(1, "Evergreen Needleleaf Forests", "#05450a"),
        LandClass(2, "Evergreen Broadleaf Forests", "#086a10"),
        LandClass(3, "Deciduous Needleleaf Forests", "#54a708"),
        LandClass(4, "Deciduous Broadleaf Forests", "#78d203"),
        LandClass(5, "Mixed Forests", "#009900"),
        LandClass(6, "Closed Shrublands", "#c6b044"),
        LandClass(7, "Open Shrublands", "#dcd159"),
        LandClass(8, "Woody Savannas", "#dade48"),
        LandClass(9, "Savannas", "#fbff13"),
        LandClass(10, "Grasslands", "#b6ff05"),
        LandClass(11, "Permanent Wetlands", "#27ff87"),
        LandClass(12, "Croplands", "#c24f44"),
        LandClass(13, "Urban and Built-up Lands", "#a5a5a5"),
        LandClass(14, "Cropland/Natural Vegetation Mosaics", "#ff6d4c"),
        LandClass(15, "Permanent Snow and Ice", "#69fff8"),
        LandClass(16, "Barren", "#f9ffa4"),
        LandClass(17, "Water Bodies", "#1c0dff"),
    ),
)

DFC2020 = ClassScheme(
    "dfc2020",
    (
        LandClass(1, "Forest", "#009900"),
        LandClass(2, "Shrubland", "#c6b044"),
        LandClass(3, "Savanna", "#fbff13"),
        LandClass(4, "Grassland", "#b6ff05"),
        LandClass(5, "Wetlands", "#27ff87"),
        LandClass(6, "Croplands", "#c24f44"),
        LandClass(7, "Urban/Built-up", "#a5a5a5"),
        LandClass(8, "Snow/Ice", "#69fff8"),
        LandClass(9, "Barren", "#f9ffa4"),
        LandClass(10, "Water", "#1c0dff"),
    ),
)

# The simplified IGBP -> DFC2020 scheme of Schmitt et al. (SEN12MS, IEEE GRSS DFC 2020).
IGBP_TO_DFC2020 = {
    1: 1,
    2: 1,
    3: 1,
    4: 1,
    5: 1,
    6: 2,
    7: 2,
    8: 3,
    9: 3,
    10: 4,
    11: 5,
    12: 6,
    14: 6,
    13: 7,
    15: 8,
    16: 9,
    17: 10,
}

SCHEMES = {"igbp": IGBP, "dfc2020": DFC2020}


def scheme(name_or_path: str | Path) -> ClassScheme:
    """A built-in scheme by name (``igbp``, ``dfc2020``) or a custom one from a YAML file."""
    key = str(name_or_path).lower()
    if key in SCHEMES:
        return SCHEMES[key]
    path = Path(name_or_path)
    if path.suffix.lower() in {".yaml", ".yml"}:
        return ClassScheme.from_yaml(path)
    raise KeyError(f"unknown class scheme {name_or_path!r}: use igbp, dfc2020 or a YAML file")


_scheme = scheme  # for functions whose ``scheme`` argument hides the function


def igbp_to_dfc2020(values: np.ndarray) -> np.ndarray:
    """Map IGBP class values to simplified DFC2020 values (unknown -> nodata)."""
    lut = np.zeros(256, dtype=np.uint8)
    for igbp, dfc in IGBP_TO_DFC2020.items():
        lut[igbp] = dfc
    return lut[np.asarray(values).astype(np.int64).clip(0, 255)]


def convert(values: np.ndarray, source: ClassScheme, target: ClassScheme) -> np.ndarray:
    """Class values of ``source`` as class values of ``target`` (uint8; 0 stays nodata).

    The same scheme passes values through; IGBP -> DFC2020 uses :data:`IGBP_TO_DFC2020`. Any
    other pair has no published mapping and is refused.
    """
    if source == target:
        return np.asarray(values).astype(np.uint8)
    if source == IGBP and target == DFC2020:
        return igbp_to_dfc2020(values)
    raise ValueError(f"no mapping from class scheme {source.name!r} to {target.name!r}")


def class_value(label: object, scheme: ClassScheme) -> int | None:
    """The class value of one attribute value, given as a class id or a class name; else None.

    ``12``, ``12.0``, ``"12"`` and ``"Croplands"`` (any case) all name IGBP class 12.
    """
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return None
    text = str(label).strip()
    try:
        number = float(text)
    except ValueError:
        try:
            return scheme.by_name(text).value
        except KeyError:
            return None
    if number.is_integer() and int(number) in scheme.values:
        return int(number)
    return None


# -- Labels from vectors --------------------------------------------------------------------------


@dataclass
class RasterizeReport:
    """What ``rasterize`` did. Feature ids are the layer's FIDs (as QGIS shows them)."""

    written: int = 0  # mask chips written
    up_to_date: int = 0  # mask chips already burned from the same polygons, left as they were
    burned: int = 0  # polygons burned onto at least one chip
    outside: list[int] = field(default_factory=list)  # polygons touching no chip
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (fid, class value not in the scheme)
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (fid, reason and what was done)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _polygons(path: Path, column: str, target: ClassScheme, report: RasterizeReport) -> gpd.GeoDataFrame:
    """Read the layer; keep usable polygons with a ``value`` column; record every problem."""
    try:
        frame = gpd.read_file(path, fid_as_index=True)
    except Exception as err:  # pyogrio raises several error types for unreadable files
        raise ValueError(f"{path}: cannot read polygons ({err})") from err
    if column not in frame.columns:
        raise ValueError(
            f"{path}: no column {column!r}; its columns are {[c for c in frame.columns if c != 'geometry']}"
        )
    if frame.crs is None:
        raise ValueError(f"{path}: the layer has no CRS, so it cannot be placed on the chips")
    keep = []
    for fid, label, geom in zip(frame.index, frame[column], frame.geometry, strict=True):
        value = class_value(label, target)
        if value is None:
            report.unknown.append((int(fid), str(label)))
            continue
        if geom is None or geom.is_empty:
            report.invalid.append((int(fid), "empty geometry: skipped"))
            continue
        if not geom.is_valid:
            reason = shapely.validation.explain_validity(geom)
            geom = shapely.make_valid(geom)
            report.invalid.append((int(fid), f"{reason}: repaired with make_valid"))
        if geom.geom_type == "GeometryCollection":
            geom = shapely.union_all([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            report.invalid.append((int(fid), f"not a polygon ({geom.geom_type}): skipped"))
            continue
        keep.append((fid, value, geom))
    fids, values, geoms = zip(*keep, strict=True) if keep else ((), (), ())
    return gpd.GeoDataFrame({"value": values}, geometry=list(geoms), index=list(fids), crs=frame.crs)


def _fingerprint(polygons: gpd.GeoDataFrame, target: ClassScheme, background: int, all_touched: bool) -> str:
    digest = hashlib.sha256()
    digest.update(repr((target, background, all_touched)).encode())
    digest.update(np.asarray(polygons["value"], dtype=np.int64).tobytes())
    for wkb in shapely.to_wkb(polygons.geometry.values, hex=False):
        digest.update(wkb)
    digest.update(str(polygons.crs).encode())
    return digest.hexdigest()[:32]


def _write_mask(path: Path, data: np.ndarray, grid: dict, target: ClassScheme, tags: dict[str, str]) -> None:
    """One uint8 mask chip with the scheme's colour table, written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = data.shape
    tiled = height % 16 == 0 and width % 16 == 0
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid["crs"],
        "transform": grid["transform"],
        "nodata": NODATA,
        "compress": "deflate",
        "predictor": 2,
        "tiled": tiled,
        **({"blockxsize": min(256, width), "blockysize": min(256, height)} if tiled else {}),
    }
    with replacing(path, data.nbytes) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data, 1)
        dst.write_colormap(1, target.colormap())
        dst.set_band_description(1, f"class ({target.name})")
        dst.update_tags(**{"GEOGAN_ROLE": MASK_ROLE, "GEOGAN_SCHEME": target.name, **tags})


def _target(scheme: str | Path | ClassScheme, background: str | int | None) -> tuple[ClassScheme, int]:
    """The scheme to burn in and the value of pixels outside every polygon."""
    target = scheme if isinstance(scheme, ClassScheme) else _scheme(scheme)
    if background is None:
        return target, NODATA
    fill = class_value(background, target)
    if fill is None:
        raise ValueError(f"background {background!r} is not a class of scheme {target.name!r}")
    return target, fill


def _usable_polygons(
    path: Path, column: str, target: ClassScheme, report: RasterizeReport
) -> gpd.GeoDataFrame:
    shapes = _polygons(path, column, target, report)
    if shapes.empty:
        raise ValueError(f"{path}: no polygon with a class of scheme {target.name!r} in column {column!r}")
    return shapes


def _burn(hits: gpd.GeoDataFrame, grid: dict, fill: int, all_touched: bool) -> np.ndarray:
    return rasterio.features.rasterize(
        zip(hits.geometry, hits["value"], strict=True),
        out_shape=(grid["height"], grid["width"]),
        transform=grid["transform"],
        fill=fill,
        all_touched=all_touched,
        dtype="uint8",
    )


def rasterize(
    polygons: str | Path,
    tiles: str | Path,
    column: str,
    scheme: str | Path | ClassScheme = "igbp",
    background: str | int | None = None,
    all_touched: bool = False,
    progress: bool = False,
) -> RasterizeReport:
    """Burn a polygon layer onto every chip's grid as mask chips beside the images.

    ``polygons`` is any vector file GDAL reads (GeoPackage, Shapefile, GeoJSON...), in any CRS:
    it is reprojected to each chip's CRS. ``column`` holds a class of ``scheme`` per polygon, as
    an id or a name. Pixels whose centre lies in a polygon (every touched pixel with
    ``all_touched``) take its class value; polygons are burned in layer order, so where they
    overlap the later one wins. Other pixels take ``background`` (a class id or name), or 0 =
    unlabelled when it is None.

    For every chip of ``tiles/index.gpkg`` a ``mask`` chip is written beside its S2 chip
    (``{ROI}_{season}/mask_{scene}/{ROI}_{season}_mask_{scene}_{patch}.tif``: uint8, nodata 0,
    the scheme's colour table) and the index gains a ``mask`` row per chip; the index is
    rewritten atomically. A chip already burned from the same polygons, classes and options is
    left as it is, so a re-run resumes. Polygons that touch no chip, class values not in the
    scheme and invalid geometries (repaired with ``make_valid`` where possible, else skipped)
    are listed in the returned report and in ``tiles/rasterize_report.json``.
    """
    polygons, tiles = Path(polygons), Path(tiles)
    target, fill = _target(scheme, background)
    index = read_tile_index(tiles)
    report = RasterizeReport()
    shapes = _usable_polygons(polygons, column, target, report)
    fingerprint = _fingerprint(shapes, target, fill, all_touched)
    tags = {"GEOGAN_LABELS": fingerprint, "GEOGAN_SOURCE": str(polygons)}

    images = index[index["role"] != MASK_ROLE].copy()
    images["_order"] = images["role"].map({"s2": 0, "s1": 1}).fillna(2)
    images = images.sort_values(["chip", "_order"]).drop_duplicates("chip").drop(columns="_order")
    if images.empty:
        raise ValueError(f"{tiles / 'index.gpkg'}: no chips in the tile index")

    by_crs: dict[str, gpd.GeoDataFrame] = {}
    touched: set[int] = set()
    rows = []
    chips = list(images.itertuples(index=False))
    for chip in track(chips, description="burning polygons") if progress else chips:
        source = tiles / chip.path
        with rasterio.open(source) as src:
            grid = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
            bounds = shapely.box(*src.bounds)
        local = by_crs.get(grid["crs"].to_wkt())
        if local is None:
            local = by_crs[grid["crs"].to_wkt()] = shapes.to_crs(grid["crs"])
        hits = local.iloc[sorted(local.sindex.query(bounds, predicate="intersects"))]
        touched.update(int(f) for f in hits.index)
        out = twin_path(chip.path, MASK_ROLE)
        path = tiles / out
        if path.exists() and _tag(path, "GEOGAN_LABELS") == fingerprint:
            report.up_to_date += 1
            with rasterio.open(path) as src:
                data = src.read(1)
            log.debug("up to date: %s", path)
        else:
            data = _burn(hits, grid, fill, all_touched)
            _write_mask(path, data, grid, target, tags)
            report.written += 1
            log.debug("wrote %s (%d polygons)", path, len(hits))
        row = {k: v for k, v in chip._asdict().items() if not k.startswith("class_")}
        row.update(path=out.as_posix(), role=MASK_ROLE, labelled_fraction=float((data != NODATA).mean()))
        row.update(_histogram(data))
        rows.append(row)

    report.burned = len(touched)
    report.outside = sorted(set(int(f) for f in shapes.index) - touched)
    masks = gpd.GeoDataFrame(rows, geometry="geometry", crs=index.crs)
    _replace_rows(tiles / INDEX_FILE, index[index["role"] != MASK_ROLE], masks)
    (tiles / "rasterize_report.json").write_text(report.to_json())
    log.info(
        "rasterised %s onto %d chips (%d written, %d up to date): %d polygons burned, %d touch no chip, "
        "%d unknown classes, %d invalid geometries",
        polygons,
        len(rows),
        report.written,
        report.up_to_date,
        report.burned,
        len(report.outside),
        len(report.unknown),
        len(report.invalid),
    )
    return report


def rasterize_scene(
    polygons: str | Path,
    like: str | Path,
    out: str | Path,
    column: str,
    scheme: str | Path | ClassScheme = "igbp",
    background: str | int | None = None,
    all_touched: bool = False,
    tags: dict[str, str] | None = None,
) -> RasterizeReport:
    """Burn a polygon layer onto a whole scene's grid: one label raster, ``labels=`` for `geogan tile`.

    The grid (CRS, transform, size) is ``like``'s, e.g. the S2 scene the labels belong to; the
    rules are those of :func:`rasterize` (pixel centres, later polygons win, ``background`` or 0 =
    unlabelled elsewhere). ``out`` is written whole or not at all. A label raster already burned
    from the same polygons, classes and options onto the same grid is left as it is.
    """
    polygons, like, out = Path(polygons), Path(like), Path(out)
    target, fill = _target(scheme, background)
    report = RasterizeReport()
    shapes = _usable_polygons(polygons, column, target, report)
    try:
        with rasterio.open(like) as src:
            grid = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
            bounds = shapely.box(*src.bounds)
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{like}: not a raster GDAL can read ({err})") from None
    if grid["crs"] is None:
        raise ValueError(f"{like}: the raster has no CRS, so the polygons cannot be placed on it")
    local = shapes.to_crs(grid["crs"])
    hits = local.iloc[sorted(local.sindex.query(bounds, predicate="intersects"))]
    fingerprint = _fingerprint(shapes, target, fill, all_touched)
    fingerprint += (
        f"/{grid['width']}x{grid['height']}/{tuple(grid['transform'])[:6]}/{grid['crs'].to_string()}"
    )
    report.burned = len(hits)
    report.outside = sorted(set(int(f) for f in shapes.index) - set(int(f) for f in hits.index))
    if out.exists() and _tag(out, "GEOGAN_LABELS") == fingerprint:
        report.up_to_date = 1
        return report
    data = _burn(hits, grid, fill, all_touched)
    written = {"GEOGAN_ROLE": "labels", "GEOGAN_LABELS": fingerprint, "GEOGAN_SOURCE": str(polygons)}
    _write_mask(out, data, grid, target, {**written, **(tags or {})})
    report.written = 1
    log.info(
        "rasterised %s onto %s: %d polygons burned, %.1f %% of the pixels labelled",
        polygons,
        out,
        len(hits),
        100 * float((data != NODATA).mean()),
    )
    return report


def _tag(path: Path, key: str) -> str | None:
    with rasterio.open(path) as src:
        return src.tags().get(key)


def _histogram(data: np.ndarray) -> dict[str, int]:
    """``class_{value}`` pixel counts of a mask chip, as the tile index holds them (0 = nodata left out)."""
    values, counts = np.unique(data[data != NODATA], return_counts=True)
    return {f"class_{int(v)}": int(n) for v, n in zip(values, counts, strict=True)}


def _replace_rows(path: Path, kept: gpd.GeoDataFrame, added: gpd.GeoDataFrame) -> None:
    """Rewrite the ``tiles`` layer of ``path`` as ``kept`` + ``added``, atomically; other layers stay.

    Class histogram columns new to the index read 0 in rows that have a histogram, and mask rows
    read 0 for classes their chip lacks.
    """
    classes = sorted(
        {c for c in [*kept.columns, *added.columns] if c.startswith("class_")}, key=lambda c: int(c[6:])
    )
    had = kept[[c for c in classes if c in kept.columns]].notna().any(axis=1)
    kept = kept.copy()
    for c in classes:
        if c not in kept.columns:
            kept[c] = pd.NA
        kept.loc[had, c] = kept.loc[had, c].fillna(0)
        added[c] = added[c].fillna(0) if c in added.columns else 0
    columns = [c for c in kept.columns if c not in classes and c != "geometry"] + classes + ["geometry"]
    frame = pd.concat([kept[columns], added[columns]], ignore_index=True)
    for c in classes:
        frame[c] = frame[c].astype("Int64")
    frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=kept.crs)
    with replacing(path) as tmp:  # a copy first: the file's other layers are kept
        shutil.copy2(path, tmp)
        frame.to_file(tmp, layer="tiles", driver="GPKG")
