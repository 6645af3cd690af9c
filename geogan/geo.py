"""Geometry shared by the stages: AOIs, CRSs, grids, and writing a raster.

- :func:`read_aoi`: an AOI vector file, with its features and CRS checked (one reader for fetch
  and generate); :func:`aoi_bounds`: an AOI (file or ``W,S,E,N``) as bounds in degrees.
- :class:`RasterGrid` and :func:`raster_grid`: the pixel grid a fetched scene is written on.
- :class:`ChipGrid`, :func:`chips_beside` and :func:`aoi_chips`: where generated chips go (beside
  the real chips, or over an AOI); generate decides which, export writes the pairs.
- :func:`write_raster`: a (bands, H, W) array as a tiled, compressed GeoTIFF of a sensor's bands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from shapely.geometry import box

from geogan.bands import Sensor
from geogan.files import replacing

WGS84 = CRS.from_epsg(4326)


def read_aoi(aoi: Path):
    """The features of the AOI file ``aoi`` (a GeoDataFrame); a clear error naming it otherwise."""
    import geopandas as gpd

    try:
        frame = gpd.read_file(aoi)
    except Exception as err:  # pyogrio raises its own error types
        raise ValueError(f"{aoi}: not a vector file GDAL can read ({err})") from None
    if frame.empty:
        raise ValueError(f"{aoi}: the AOI holds no features")
    if frame.crs is None:
        raise ValueError(f"{aoi}: the AOI has no CRS")
    return frame


def aoi_bounds(aoi: str) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in degrees of ``"W,S,E,N"`` or of a vector file's features."""
    if Path(aoi).exists():
        west, south, east, north = (float(v) for v in read_aoi(Path(aoi)).to_crs(WGS84).total_bounds)
    else:
        parts = aoi.split(",")
        try:
            west, south, east, north = (float(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"aoi {aoi!r}: neither a vector file that exists nor 'W,S,E,N' in degrees"
            ) from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(f"aoi {aoi!r}: needs west < east within -180..180 and south < north within -90..90")
    return west, south, east, north


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS of a point."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def parse_crs(value: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError as err:
        raise ValueError(f"crs {value!r}: not a CRS ({err})") from None


def raster_grid(bounds: tuple[float, float, float, float], crs: CRS, resolution: float) -> RasterGrid:
    """The AOI's extent in ``crs``, grown outward to whole pixels on a grid anchored at 0, 0."""
    left, bottom, right, top = transform_bounds(WGS84, crs, *bounds, densify_pts=21)
    x0, y1 = math.floor(left / resolution) * resolution, math.ceil(top / resolution) * resolution
    width = max(1, math.ceil((right - x0) / resolution - 1e-9))
    height = max(1, math.ceil((y1 - bottom) / resolution - 1e-9))
    return RasterGrid(crs, Affine(resolution, 0.0, x0, 0.0, -resolution, y1), width, height)


@dataclass(frozen=True)
class RasterGrid:
    """The pixel grid a fetched scene is written on: ``crs``, ``transform`` and size."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform.c, self.transform.f
        return left, top + self.transform.e * self.height, left + self.transform.a * self.width, top


@dataclass(frozen=True)
class ChipGrid:
    """Where unconditional samples go: one square chip per transform, all in ``crs``."""

    crs: CRS
    size: int
    transforms: tuple[Affine, ...]


def chips_beside(
    n: int, size: int, resolution: float, crs: CRS, real_bounds: Sequence[float], gap_chips: int = 4
) -> ChipGrid:
    """``n`` chips in rows, east of the real chips' extent with a gap of ``gap_chips`` chips.

    The grid is aligned to whole chips, so it can never overlap a real chip: it starts at least
    ``gap_chips`` chip widths beyond the real extent's eastern edge, level with its top.
    """
    if n < 1:
        raise ValueError(f"asked for {n} chips; need at least 1")
    step = size * resolution
    minx, miny, maxx, maxy = real_bounds
    x0 = math.ceil(maxx / step) * step + gap_chips * step
    y0 = math.ceil(maxy / step) * step
    cols = math.ceil(math.sqrt(n))
    transforms = tuple(
        Affine(resolution, 0.0, x0 + (i % cols) * step, 0.0, -resolution, y0 - (i // cols) * step)
        for i in range(n)
    )
    return ChipGrid(CRS.from_user_input(crs), size, transforms)


def aoi_chips(
    aoi: str | Path, n: int, size: int, resolution: float, crs: str | CRS | None = None
) -> ChipGrid:
    """``n`` chips in rows (west to east, north to south) over the polygons of an AOI file.

    ``crs`` defaults to the AOI's own CRS, which must then be projected (metres, not degrees).
    Chips touching the AOI are kept; too small an AOI for ``n`` chips is an error.
    """
    aoi = Path(aoi)
    frame = read_aoi(aoi)
    target = CRS.from_user_input(crs) if crs is not None else CRS.from_user_input(frame.crs.to_wkt())
    if target.is_geographic:
        raise ValueError(
            f"{aoi}: chips need a projected CRS in metres, not {target.to_string()}; pass one, "
            "e.g. --crs EPSG:32630"
        )
    area = frame.to_crs(target.to_wkt()).union_all()
    step = size * resolution
    minx, miny, maxx, maxy = area.bounds
    x0, y0 = math.floor(minx / step) * step, math.ceil(maxy / step) * step
    cols, rows = math.ceil((maxx - x0) / step), math.ceil((y0 - miny) / step)
    transforms = []
    for r in range(rows):
        for c in range(cols):
            x, y = x0 + c * step, y0 - r * step
            if area.intersects(box(x, y - step, x + step, y)):
                transforms.append(Affine(resolution, 0.0, x, 0.0, -resolution, y))
            if len(transforms) == n:
                return ChipGrid(target, size, tuple(transforms))
    raise ValueError(
        f"{aoi}: the AOI holds {len(transforms)} chips of {size} px at {resolution:g} m; asked for {n}"
    )


def write_raster(
    path: str | Path,
    data: np.ndarray,
    sensor: Sensor,
    transform: Affine,
    crs: CRS,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a (bands, H, W) array as a tiled, compressed GeoTIFF, atomically (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": sensor.dtype,
        "crs": crs,
        "transform": transform,
        "nodata": sensor.nodata,
        "tiled": True,
        "blockxsize": min(256, _block(data.shape[2])),
        "blockysize": min(256, _block(data.shape[1])),
        "compress": "deflate",
        "predictor": 3 if sensor.dtype.startswith("float") else 2,
    }
    with replacing(path, data.nbytes) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data.astype(sensor.dtype))
        dst.descriptions = sensor.band_names
        dst.update_tags(
            GEOGAN_ROLE=sensor.role,
            GEOGAN_UNITS=sensor.units,
            **(tags or {}),
        )
    return path


def _block(n: int) -> int:
    """The largest multiple of 16 not above ``n`` (GeoTIFF tiles are multiples of 16)."""
    return max(16, (n // 16) * 16)
