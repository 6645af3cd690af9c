"""Writing synthetic image + mask pairs as files GIS tools read: COGs, styles, index, VRT, STAC.

Output layout of one export folder::

    OUT/images/<id>.tif      13-band uint16 L1C DN Cloud-Optimized GeoTIFF (+ <id>.qml true colour)
    OUT/masks/<id>.tif       uint8 class values, colour table; <id>.tif.aux.xml holds category
                             names and a raster attribute table; <id>.qml a paletted QGIS style
    OUT/index.gpkg           one footprint per pair (layer ``pairs``) with its provenance
    OUT/images_<crs>.vrt     one mosaic of the images and one of the masks per grid (CRS)
    OUT/masks_<crs>.vrt      (+ masks_<crs>.qml)
    OUT/stac/catalog.json    a STAC catalogue, one item per pair

Every file is written to a temporary name in its folder and renamed into place, so an
interrupted export leaves only whole files; pairs whose files exist are skipped on a rerun, and
the collections (index, VRTs, STAC) are rebuilt from what is on disk, so they always describe it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import rasterio
import rasterio.shutil
from distributed import Client, wait
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import MemoryFile
from rasterio.transform import Affine, array_bounds
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box, mapping, shape

import geogan
from geogan.bands import S2, Sensor
from geogan.files import COPYRIGHT, MARK, DiskFullError, reads_back, replacing, temporary_name, write_text
from geogan.labels import NODATA, ClassScheme
from geogan.progress import Progress

log = logging.getLogger(__name__)

IMAGES = "images"
MASKS = "masks"
INDEX = "index.gpkg"
STAC = "stac"
TRUE_COLOUR_DN = (300, 2500)  # DN stretch of the true-colour QGIS style of the images


@dataclass(frozen=True)
class Provenance:
    """What made a set of pairs: written into every file's tags and the index."""

    model: str  # e.g. "spade step 2000" or "mask-gan step 500 + spade step 2000"
    checkpoint_sha256: str
    scheme: ClassScheme
    sensor: Sensor = S2
    mask_checkpoint_sha256: str | None = None  # the mask model's, when one made the masks
    attribution: tuple[str, ...] = ()  # of the training data (tiles' stats.json), kept in every file
    layout: str | None = None  # new layouts made from file masks: warp or mosaic (None: as they are)
    balance: bool = False  # masks chosen for an even class mix (geogan generate --balance)
    best_of: int = 1  # candidates made of each pair, the one the scorer agrees with most kept
    scorer: str | None = None  # the segmenter that scored the pairs (geogan.scoring), with its skill
    scorer_sha256: str | None = None  # its training chips' and settings' fingerprint (scoring.Recipe)
    styles: str | None = None  # the tile folder whose chips' encoded styles the images took


@dataclass(frozen=True)
class Pair:
    """One generated sample: image (bands, H, W) in the sensor's DN, mask (H, W) class values.

    ``mask`` is None for image-only models (MSG-StyleGAN), whose samples have no labels.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray | None
    crs: CRS
    transform: Affine
    seed: int
    source_chip: str | None = None  # the real chip a conditioning mask came from
    agreement: float | None = None  # the scorer's agreement of image and mask (geogan.scoring)
    style_chip: str | None = None  # the real chip whose encoded style the image took

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or (self.mask is not None and self.mask.shape != self.image.shape[1:]):
            raise ValueError(
                f"pair {self.id}: image {self.image.shape} and mask "
                f"{None if self.mask is None else self.mask.shape} "
                "must be (bands, H, W) and (H, W)"
            )


# --- one pair ------------------------------------------------------------------------------------


# DEFLATE, which every GeoTIFF reader decodes (ZSTD, used for the chips, is not read by every tool
# an analyst may share the pairs with), at level 1: on real 256 px 13-band pairs 0.58 of level 6's
# time for 3 % more bytes (benchmarks/RESULTS.md, "Writing a pair").
DEFLATE_LEVEL = 1


def _cog_layout(height: int, width: int) -> tuple[int, list[int]]:
    """Tile size (at most half the chip, so there is an overview) and overview factors."""
    tile = min(256, max(16, (min(height, width) // 2) // 16 * 16))
    factors: list[int] = []
    while min(height, width) // (2 ** (len(factors) + 1)) >= tile:
        factors.append(2 ** (len(factors) + 1))
    return tile, factors


def _write_cog(
    path: Path,
    data: np.ndarray,
    crs: CRS,
    transform: Affine,
    nodata: float | None,
    descriptions: Sequence[str],
    tags: dict[str, str],
    overview_resampling: Resampling,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write ``data`` as a COG: an in-memory GeoTIFF with its overviews, copied by GDAL's COG driver.

    The overviews are built before the colour table is set: GDAL's MODE over a paletted band takes
    twice the time for the same result. The copy is read back and compared before it takes
    ``path``'s name.
    """
    count, height, width = data.shape
    tile, factors = _cog_layout(height, width)
    src_profile = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": tile,
        "blockysize": tile,
    }
    with MemoryFile() as mem, replacing(path, data.nbytes, check=reads_back(data)) as tmp:
        with mem.open(**src_profile) as src:
            src.write(data)
            src.build_overviews(factors, overview_resampling)
            src.descriptions = tuple(descriptions)
            src.update_tags(**tags, OVERVIEW_RESAMPLING=overview_resampling.name.upper())
            if colormap is not None:
                src.colorinterp = [ColorInterp.palette]
                src.write_colormap(1, colormap)
        with mem.open() as src:
            rasterio.shutil.copy(
                src,
                str(tmp),
                driver="COG",
                COMPRESS="DEFLATE",
                LEVEL=DEFLATE_LEVEL,
                PREDICTOR="STANDARD",
                BLOCKSIZE=tile,
                OVERVIEWS="FORCE_USE_EXISTING",
            )
    return path


def _provenance_tags(provenance: Provenance, pair: Pair, created: str) -> dict[str, str]:
    tags = {
        "GEOGAN_VERSION": geogan.__version__,
        "GEOGAN_SYNTHETIC": "true",
        "GEOGAN_MODEL": provenance.model,
        "GEOGAN_CHECKPOINT_SHA256": provenance.checkpoint_sha256,
        "GEOGAN_SEED": str(pair.seed),
        "GEOGAN_CREATED": created,
    }
    if provenance.mask_checkpoint_sha256:
        tags["GEOGAN_MASK_CHECKPOINT_SHA256"] = provenance.mask_checkpoint_sha256
    if provenance.attribution:
        tags[COPYRIGHT] = "; ".join(provenance.attribution)
    if pair.source_chip:
        tags["GEOGAN_SOURCE_CHIP"] = pair.source_chip
    if provenance.layout:
        tags["GEOGAN_LAYOUT"] = provenance.layout
    if provenance.balance:
        tags["GEOGAN_BALANCE"] = "even"
    if provenance.best_of > 1:
        tags["GEOGAN_BEST_OF"] = str(provenance.best_of)
    if provenance.scorer:
        tags["GEOGAN_SCORER"] = provenance.scorer
    if provenance.scorer_sha256:
        tags["GEOGAN_SCORER_SHA256"] = provenance.scorer_sha256
    if provenance.styles:
        tags["GEOGAN_STYLES"] = provenance.styles
    if pair.style_chip:
        tags["GEOGAN_STYLE_CHIP"] = pair.style_chip
    if pair.agreement is not None:
        tags["GEOGAN_AGREEMENT"] = f"{pair.agreement:.4f}"
    return tags


def write_image(
    path: str | Path,
    image: np.ndarray,
    crs: CRS,
    transform: Affine,
    sensor: Sensor = S2,
    tags: dict[str, str] | None = None,
) -> Path:
    """A (bands, H, W) image as a COG in the sensor's dtype, band names and nodata, overviews."""
    path = Path(path)
    if image.shape[0] != sensor.count:
        raise ValueError(f"{path}: expected {sensor.count} {sensor.role} bands, got {image.shape[0]}")
    _write_cog(
        path,
        image.astype(sensor.dtype),
        crs,
        transform,
        sensor.nodata,
        sensor.band_names,
        {"GEOGAN_ROLE": sensor.role, "GEOGAN_UNITS": sensor.units, **(tags or {})},
        Resampling.average,
    )
    write_text(path.with_suffix(".qml"), image_qml(sensor))
    return path


def write_mask(
    path: str | Path,
    mask: np.ndarray,
    crs: CRS,
    transform: Affine,
    scheme: ClassScheme,
    tags: dict[str, str] | None = None,
) -> Path:
    """A (H, W) mask of class values as a uint8 COG with the scheme's colour table.

    Category names and a raster attribute table go into ``<mask>.tif.aux.xml`` (GDAL keeps them
    there for GeoTIFFs; GDAL and QGIS read it), and a paletted QGIS style into ``<mask>.qml``.
    Both are written before the mask itself, so a mask on disk always has them.
    """
    path = Path(path)
    unknown = sorted(set(np.unique(mask).tolist()) - {NODATA, *scheme.values})
    if unknown:
        raise ValueError(f"{path}: mask values {unknown} are not classes of scheme {scheme.name!r}")
    write_text(Path(f"{path}.aux.xml"), mask_aux_xml(scheme))
    write_text(path.with_suffix(".qml"), mask_qml(scheme))
    _write_cog(
        path,
        mask.astype(np.uint8)[None],
        crs,
        transform,
        NODATA,
        ("class",),
        {"GEOGAN_ROLE": "mask", "GEOGAN_SCHEME": scheme.name, **(tags or {})},
        Resampling.mode,
        colormap=scheme.colormap(),
    )
    return path


def pair_paths(out: str | Path, pair_id: str) -> tuple[Path, Path]:
    """Where the image and the mask of pair ``pair_id`` go in export folder ``out``."""
    out = Path(out)
    return out / IMAGES / f"{pair_id}.tif", out / MASKS / f"{pair_id}.tif"


def pair_written(out: str | Path, pair_id: str) -> bool:
    """Whether a pair is on disk: its image is renamed into place last, only when all is whole."""
    return pair_paths(out, pair_id)[0].exists()


def write_pair(out: str | Path, pair: Pair, provenance: Provenance) -> bool:
    """Write one pair's mask (if any) and then its image; False (nothing written) if it exists.

    The image is written whole, under the mask's unlabelled (nodata) pixels too: the model drew land
    there, as real scenes have land where an analyst drew no polygon. Image values of 0 become 1,
    since 0 is the image's nodata.
    """
    image_path, mask_path = pair_paths(out, pair.id)
    if pair_written(out, pair.id):
        log.debug("skipped %s: it exists", pair.id)
        return False
    image_path.parent.mkdir(parents=True, exist_ok=True)
    tags = _provenance_tags(provenance, pair, datetime.now(UTC).isoformat(timespec="seconds"))
    image = np.maximum(pair.image, 1)
    if pair.mask is not None:
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        write_mask(mask_path, pair.mask, pair.crs, pair.transform, provenance.scheme, tags)
    write_image(image_path, image, pair.crs, pair.transform, provenance.sensor, tags)
    log.debug("wrote %s and %s", image_path, mask_path)
    return True


def write_batch(out: str | Path, pairs: Sequence[Pair], provenance: Provenance) -> int | str:
    """Write a batch of pairs (one Dask task); the number actually written.

    A full disk comes back as its message (a string), for the client to raise as
    :class:`~geogan.files.DiskFullError`: the worker then logs no traceback for it.
    """
    try:
        return sum(write_pair(out, p, provenance) for p in pairs)
    except DiskFullError as err:
        return str(err)


def write_pairs(
    out: str | Path,
    batches: Iterable[Sequence[Pair]],
    provenance: Provenance,
    client: Client,
    total: int | None = None,
    max_in_flight: int | None = None,
) -> int:
    """Write batches of pairs on the Dask cluster of ``client`` while the next batches are made.

    ``batches`` is consumed lazily (a model can yield them as it samples). Each batch is spread
    over every worker thread (one task per part), so that a batch larger than the cluster keeps
    all of it busy; at most ``max_in_flight`` parts (default twice the cluster's threads: about
    two batches) wait to be written at once, which bounds memory. Returns the number of pairs
    written (existing ones are skipped).
    """
    threads = max(1, sum(client.nthreads().values()))
    if max_in_flight is None:
        max_in_flight = 2 * threads
    out = Path(out)
    written = 0
    pending: dict = {}
    with Progress(transient=False) as progress:
        task = progress.add_task("writing pairs", total=total)

        def collect(done) -> None:
            nonlocal written
            for future in done:
                ids = pending.pop(future)
                try:
                    result = future.result()
                except Exception as err:
                    raise RuntimeError(f"writing pairs {ids[0]}..{ids[-1]} into {out} failed: {err}") from err
                if isinstance(result, str):
                    raise DiskFullError(result)
                written += result
                progress.advance(task, len(ids))

        for batch in batches:
            batch = list(batch)
            size = max(1, -(-len(batch) // threads))  # ceil: one part per worker thread
            for start in range(0, len(batch), size):
                part = batch[start : start + size]
                future = client.submit(write_batch, str(out), part, provenance, pure=False)
                pending[future] = [p.id for p in part]
                if len(pending) >= max_in_flight:
                    collect(wait(list(pending), return_when="FIRST_COMPLETED").done)
        while pending:
            collect(wait(list(pending), return_when="FIRST_COMPLETED").done)
    log.info("wrote %d pairs into %s", written, out)
    return written


# --- styles and GDAL side-cars -------------------------------------------------------------------


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def mask_aux_xml(scheme: ClassScheme) -> str:
    """GDAL PAM side-car of a mask: category names (index = value) and an attribute table."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for value in range(max(scheme.values) + 1):
        ET.SubElement(names, "Category").text = scheme.by_value(value).name if value in scheme.values else ""
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    # GDAL field types: 0 integer, 2 string; usages: 5 min-max (the value), 2 name, 6-9 RGBA.
    fields = (
        ("Value", 0, 5),
        ("Class", 2, 2),
        ("Red", 0, 6),
        ("Green", 0, 7),
        ("Blue", 0, 8),
        ("Alpha", 0, 9),
    )
    for i, (name, kind, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    for i, c in enumerate(scheme.classes):
        row = ET.SubElement(rat, "Row", index=str(i))
        for v in (c.value, c.name, *c.rgb, 255):
            ET.SubElement(row, "F").text = str(v)
    return _xml(root)


def _qml(renderer: ET.Element) -> str:
    root = ET.Element("qgis", version="3.22.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _xml(root)


def mask_qml(scheme: ClassScheme) -> str:
    """A QGIS style: paletted renderer with each class's colour and name; nodata transparent."""
    renderer = ET.Element("rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in scheme.classes:
        ET.SubElement(palette, "paletteEntry", value=str(c.value), color=c.colour, alpha="255", label=c.name)
    return _qml(renderer)


def image_qml(sensor: Sensor = S2) -> str:
    """A QGIS style for the images: true colour (B04, B03, B02) with a fixed DN stretch."""
    renderer = ET.Element(
        "rasterrenderer",
        type="multibandcolor",
        opacity="1",
        alphaBand="-1",
        redBand=str(sensor.index("B04") + 1),
        greenBand=str(sensor.index("B03") + 1),
        blueBand=str(sensor.index("B02") + 1),
    )
    ET.SubElement(renderer, "rasterTransparency")
    lo, hi = TRUE_COLOUR_DN
    for colour in ("red", "green", "blue"):
        ce = ET.SubElement(renderer, f"{colour}ContrastEnhancement")
        ET.SubElement(ce, "minValue").text = str(lo)
        ET.SubElement(ce, "maxValue").text = str(hi)
        ET.SubElement(ce, "algorithm").text = "StretchToMinimumMaximum"
    return _qml(renderer)


# --- collections: index, VRT mosaics, STAC -------------------------------------------------------


@dataclass(frozen=True)
class PairRecord:
    """A written pair as read back from its files (``mask`` None for an image-only sample)."""

    id: str
    image: Path
    mask: Path | None
    crs: CRS
    transform: Affine
    width: int
    height: int
    tags: dict[str, str]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return array_bounds(self.height, self.width, self.transform)


def read_records(out: str | Path) -> list[PairRecord]:
    """Every pair in export folder ``out``, read back from the files, sorted by id."""
    out = Path(out)
    records = []
    for image in sorted((out / IMAGES).glob("*.tif")):
        mask_path = out / MASKS / image.name
        mask = mask_path if mask_path.exists() else None
        with rasterio.open(image) as src:
            records.append(
                PairRecord(image.stem, image, mask, src.crs, src.transform, src.width, src.height, src.tags())
            )
    return records


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG_{epsg}" if epsg else "crs_" + format(abs(hash(crs.to_wkt())) % 10**8, "08d")


def write_index(out: str | Path, records: Sequence[PairRecord]) -> Path:
    """``index.gpkg``: one footprint per pair with its files and provenance (layer ``pairs``).

    Footprints are in the pairs' CRS when they share one, else in WGS84 (EPSG:4326).
    """
    out = Path(out)
    crss = {r.crs for r in records}
    target = crss.pop() if len(crss) == 1 else CRS.from_epsg(4326)
    rows, geoms = [], []
    for r in records:
        geom = mapping(box(*r.bounds))
        if r.crs != target:
            geom = transform_geom(r.crs, target, geom)
        geoms.append(geom)
        rows.append(
            {
                "id": r.id,
                "image": r.image.relative_to(out).as_posix(),
                "mask": r.mask.relative_to(out).as_posix() if r.mask else "",
                "crs": r.crs.to_string(),
                "synthetic": r.tags.get("GEOGAN_SYNTHETIC") == "true",
                "model": r.tags.get("GEOGAN_MODEL", ""),
                "checkpoint_sha256": r.tags.get("GEOGAN_CHECKPOINT_SHA256", ""),
                "mask_checkpoint_sha256": r.tags.get("GEOGAN_MASK_CHECKPOINT_SHA256", ""),
                "seed": int(r.tags.get("GEOGAN_SEED", "-1")),
                "source_chip": r.tags.get("GEOGAN_SOURCE_CHIP", ""),
                "layout": r.tags.get("GEOGAN_LAYOUT", ""),
                "balance": r.tags.get("GEOGAN_BALANCE", ""),
                "best_of": int(r.tags.get("GEOGAN_BEST_OF", "1")),
                "style_chip": r.tags.get("GEOGAN_STYLE_CHIP", ""),
                "agreement": float(r.tags.get("GEOGAN_AGREEMENT", "nan")),
                "created": r.tags.get("GEOGAN_CREATED", ""),
                "geogan_version": r.tags.get("GEOGAN_VERSION", ""),
            }
        )
    frame = gpd.GeoDataFrame(rows, geometry=[shape(g) for g in geoms], crs=target.to_wkt())
    path = out / INDEX
    with replacing(path) as tmp:
        frame.to_file(tmp, layer="pairs", driver="GPKG")
    log.info("wrote %s (%d pairs)", path, len(frame))
    return path


def write_vrt(
    path: str | Path,
    files: Sequence[Path],
    descriptions: Sequence[str],
    dtype: str,
    nodata: float | None,
    scheme: ClassScheme | None = None,
) -> Path:
    """A GDAL VRT mosaic of GeoTIFFs that share a CRS, resolution and pixel grid.

    For masks (``scheme`` given) each band carries the colour table and category names, so the
    mosaic opens classified too. Source paths are relative to the VRT.
    """
    path = Path(path)
    metas = []
    for f in files:
        with rasterio.open(f) as src:
            metas.append((f, src.crs, src.transform, src.width, src.height))
    crs, t0 = metas[0][1], metas[0][2]
    for f, c, t, _, _ in metas:
        if c != crs or (t.a, t.b, t.d, t.e) != (t0.a, t0.b, t0.d, t0.e):
            raise ValueError(f"{f}: not on the grid of {metas[0][0]} (CRS or resolution differ)")
    xres, yres = t0.a, t0.e
    lefts = [t.c for _, _, t, _, _ in metas]
    tops = [t.f for _, _, t, _, _ in metas]
    rights = [t.c + w * xres for _, _, t, w, _ in metas]
    bottoms = [t.f + h * yres for _, _, t, _, h in metas]
    x0, y0 = min(lefts), max(tops)
    width = round((max(rights) - x0) / xres)
    height = round((min(bottoms) - y0) / yres)
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}[dtype]
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (x0, xres, 0.0, y0, 0.0, yres)
    )
    for b, description in enumerate(descriptions, start=1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(b))
        ET.SubElement(band, "Description").text = description
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = str(nodata)
        if scheme is not None:
            ET.SubElement(band, "ColorInterp").text = "Palette"
            table = ET.SubElement(band, "ColorTable")
            cmap = scheme.colormap()
            for value in range(max(cmap) + 1):
                r, g, bl, a = cmap.get(value, (0, 0, 0, 0))
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(bl), c4=str(a))
            names = ET.SubElement(band, "CategoryNames")
            for value in range(max(scheme.values) + 1):
                name = scheme.by_value(value).name if value in scheme.values else ""
                ET.SubElement(names, "Category").text = name
        for f, _, t, w, h in metas:
            src = ET.SubElement(band, "ComplexSource")
            rel = os.path.relpath(f, path.parent)
            ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = Path(rel).as_posix()
            ET.SubElement(src, "SourceBand").text = str(b)
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            x_off, y_off = round((t.c - x0) / xres), round((t.f - y0) / yres)
            ET.SubElement(src, "DstRect", xOff=str(x_off), yOff=str(y_off), xSize=str(w), ySize=str(h))
            if nodata is not None:
                ET.SubElement(src, "NODATA").text = str(nodata)
    return write_text(path, _xml(root))


def write_mosaics(out: str | Path, records: Sequence[PairRecord], provenance: Provenance) -> list[Path]:
    """One image VRT and one mask VRT per CRS of the pairs, each with its QGIS style."""
    out = Path(out)
    sensor, scheme = provenance.sensor, provenance.scheme
    written = []
    for crs in sorted({r.crs for r in records}, key=lambda c: c.to_string()):
        group = [r for r in records if r.crs == crs]
        name = _crs_name(crs)
        masks = [r.mask for r in group if r.mask is not None]
        try:
            images = [r.image for r in group]
            written.append(
                write_vrt(out / f"images_{name}.vrt", images, sensor.band_names, sensor.dtype, sensor.nodata)
            )
            write_text(out / f"images_{name}.qml", image_qml(sensor))
            if masks:
                written.append(
                    write_vrt(out / f"masks_{name}.vrt", masks, ("class",), "uint8", NODATA, scheme)
                )
                write_text(out / f"masks_{name}.qml", mask_qml(scheme))
        except ValueError as err:
            log.warning("no mosaic for %s: %s", crs.to_string(), err)
    log.info("wrote %d VRT mosaics into %s", len(written), out)
    return written


def _stac_item(r: PairRecord, provenance: Provenance) -> pystac.Item:
    footprint = mapping(box(*r.bounds))
    geometry = transform_geom(r.crs, "EPSG:4326", footprint)
    lons = [p[0] for p in geometry["coordinates"][0]]
    lats = [p[1] for p in geometry["coordinates"][0]]
    created = r.tags.get("GEOGAN_CREATED")
    when = datetime.fromisoformat(created) if created else datetime.now(UTC)
    properties = {
        "geogan:synthetic": True,
        "geogan:model": r.tags.get("GEOGAN_MODEL", ""),
        "geogan:checkpoint_sha256": r.tags.get("GEOGAN_CHECKPOINT_SHA256", ""),
        "geogan:seed": int(r.tags.get("GEOGAN_SEED", "-1")),
        "geogan:version": r.tags.get("GEOGAN_VERSION", ""),
    }
    if r.tags.get("GEOGAN_MASK_CHECKPOINT_SHA256"):
        properties["geogan:mask_checkpoint_sha256"] = r.tags["GEOGAN_MASK_CHECKPOINT_SHA256"]
    for tag in ("SOURCE_CHIP", "LAYOUT", "BALANCE", "SCORER", "STYLE_CHIP"):
        if r.tags.get(f"GEOGAN_{tag}"):
            properties[f"geogan:{tag.lower()}"] = r.tags[f"GEOGAN_{tag}"]
    if r.tags.get("GEOGAN_BEST_OF"):
        properties["geogan:best_of"] = int(r.tags["GEOGAN_BEST_OF"])
    if r.tags.get("GEOGAN_AGREEMENT") not in (None, "nan"):
        properties["geogan:agreement"] = float(r.tags["GEOGAN_AGREEMENT"])
    item = pystac.Item(r.id, geometry, [min(lons), min(lats), max(lons), max(lats)], when, properties)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = r.crs.to_epsg()
    proj.apply(
        code=f"EPSG:{epsg}" if epsg else None,
        wkt2=None if epsg else r.crs.to_wkt(),
        bbox=list(r.bounds),
        shape=[r.height, r.width],
        transform=list(r.transform)[:6],
    )
    sensor = provenance.sensor
    image = pystac.Asset(
        str(r.image), title=f"synthetic {sensor.title}", media_type=pystac.MediaType.COG, roles=["data"]
    )
    item.add_asset("image", image)
    EOExtension.ext(image, add_if_missing=True).apply(
        bands=[
            EOBand.create(
                b.name,
                description=b.description,
                center_wavelength=b.wavelength_nm / 1000 if b.wavelength_nm else None,
            )
            for b in sensor.bands
        ]
    )
    RasterExtension.ext(image, add_if_missing=True).apply(
        [
            RasterBand.create(
                nodata=sensor.nodata,
                data_type=DataType(sensor.dtype),
                scale=1 / sensor.scale,
                spatial_resolution=abs(r.transform.a),
            )
            for _ in sensor.bands
        ]
    )
    if r.mask is not None:
        _add_mask_assets(item, r, provenance.scheme)
    return item


def _add_mask_assets(item: pystac.Item, r: PairRecord, scheme: ClassScheme) -> None:
    assert r.mask is not None  # called only for records with a mask
    mask = pystac.Asset(
        str(r.mask),
        title=f"class mask ({scheme.name})",
        media_type=pystac.MediaType.COG,
        roles=["labels", "data"],
    )
    item.add_asset("mask", mask)
    classes = [
        Classification.create(
            c.value, c.name, name=_stac_name(c.name), color_hint=c.colour.lstrip("#").upper()
        )
        for c in scheme.classes
    ]
    ClassificationExtension.ext(mask, add_if_missing=True).apply(classes=classes)
    RasterExtension.ext(mask, add_if_missing=True).apply(
        [RasterBand.create(nodata=NODATA, data_type=DataType.UINT8, spatial_resolution=abs(r.transform.a))]
    )
    style = pystac.Asset(
        str(r.mask.with_suffix(".qml")),
        title="QGIS style of the mask",
        media_type="text/xml",
        roles=["metadata"],
    )
    item.add_asset("mask_style", style)


def _stac_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name.lower())


def write_stac(out: str | Path, records: Sequence[PairRecord], provenance: Provenance) -> Path:
    """A self-contained STAC catalogue under ``OUT/stac`` with one item per pair.

    Written into a temporary folder and swapped in whole; asset links are relative.
    """
    out = Path(out).resolve()
    final = out / STAC
    catalog = pystac.Catalog(
        "geogan-synthetic",
        f"Synthetic {provenance.sensor.role.upper()} image + {provenance.scheme.name} mask pairs "
        f"made by geogan {geogan.__version__} ({provenance.model})"
        + "".join(f". {a}" for a in provenance.attribution),
        title="geogan synthetic pairs",
    )
    for r in records:
        catalog.add_item(_stac_item(r, provenance))
    catalog.normalize_hrefs(str(final))
    catalog.make_all_asset_hrefs_relative()
    tmp, old = temporary_name(final), out / f".{STAC}{MARK}-old"
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    catalog.save(pystac.CatalogType.SELF_CONTAINED, dest_href=str(tmp))
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    log.info("wrote STAC catalogue %s (%d items)", final / "catalog.json", len(records))
    return final / "catalog.json"


def validate_stac(catalog_path: str | Path) -> int:
    """Validate every object of a STAC catalogue offline; the number of objects checked.

    Each catalogue and item is checked against the STAC core JSON schemas that pystac ships
    (no network). Extension schemas (projection, eo, raster, classification) are published
    only online, so their fields are not schema-checked here.
    """
    from pystac.validation import JsonSchemaSTACValidator, validate_dict

    validator = JsonSchemaSTACValidator()
    checked = 0
    for path in sorted(Path(catalog_path).parent.rglob("*.json")):
        doc = json.loads(path.read_text())
        validate_dict(doc, extensions=[], href=str(path), validator=validator)
        checked += 1
    return checked


def write_collections(out: str | Path, provenance: Provenance) -> dict[str, list[Path]]:
    """Rebuild the index, VRT mosaics and STAC catalogue from the pairs on disk."""
    records = read_records(out)
    if not records:
        raise ValueError(f"{out}: no image + mask pairs to index")
    return {
        "index": [write_index(out, records)],
        "mosaics": write_mosaics(out, records, provenance),
        "stac": [write_stac(out, records, provenance)],
    }


def validate_cogs(paths: Iterable[Path]) -> list[str]:
    """Problems rio-cogeo finds in each path (an empty list when all are valid COGs)."""
    problems = []
    for p in paths:
        ok, errors, _ = cog_validate(str(p), quiet=True)
        if not ok:
            problems.append(f"{p}: {'; '.join(errors)}")
    return problems
