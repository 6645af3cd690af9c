"""Sentinel-2 scenes from a STAC API: search, then read each item's COGs over the AOI only.

:func:`fetch_stac` searches ``collection`` with pystac-client (bbox, datetime and
``eo:cloud_cover <= max_cloud`` through the query extension, also checked here), and loads each
item with odc-stac onto the AOI grid: GDAL reads only the COG tiles under the AOI, over HTTP range
requests. The 13 bands are found by asset key (``B01``... or Earth Search's ``coastal``, ``blue``...),
by the asset's ``eo:bands`` name, or by ``assets`` in the options, and are written in geogan's order
(B01..B08, B8A, B09..B12) as uint16 at ``resolution`` (nearest-neighbour, so 20 m and 60 m bands
keep their values). The folder layout, resuming and ``sources.txt`` are :mod:`geogan.scenes.remote`'s.

L1C products of processing baseline 04.00 and later (from 25 January 2022) carry ESA's +1000 DN
radiometric offset. With ``harmonize`` (the default) it is removed from items whose
``s2:processing_baseline`` says so (valid pixels stay >= 1, nodata stays 0), as Sentinel Hub's
``harmonizeValues`` does, so values match older products and SEN12MS; such scenes are tagged
``GEOGAN_DN_OFFSET_REMOVED=1000``. Items without that property are written as they are.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from geogan.bands import S2
from geogan.config import StacSource
from geogan.geo import RasterGrid, aoi_bounds, parse_crs, raster_grid
from geogan.scenes.remote import (
    FetchSummary,
    RemoteError,
    check_size,
    parse_datetime,
    progress,
    public_url,
    redact,
    scene_path,
    time_range,
    update_manifest,
    write_scene,
)

log = logging.getLogger(__name__)

SERVICE = "STAC"
COMMON_KEYS = {  # Earth Search (element84) asset keys of the Sentinel-2 bands
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
}
# GDAL settings for reading COGs over HTTP: no directory listings, range requests merged.
OFFSET_BASELINE = 4.0  # L1C processing baselines from 04.00 add DN_OFFSET to every valid DN
DN_OFFSET = 1000
GDAL_HTTP = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
}


def band_assets(item, overrides: dict[str, str]) -> dict[str, str]:
    """Asset key of each S2 band of ``item``; a :class:`RemoteError` naming missing bands."""
    by_eo_name: dict[str, str] = {}
    for key, asset in item.assets.items():
        bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
        if len(bands) == 1 and bands[0].get("name"):
            by_eo_name.setdefault(str(bands[0]["name"]).upper(), key)
    keys, missing = {}, []
    for band in S2.band_names:
        short = band[0] + band[1:].lstrip("0") if band[1:].isdigit() else band  # B01 -> B1
        candidates = [overrides.get(band), band, band.lower(), short, COMMON_KEYS[band], by_eo_name.get(band)]
        found = next((c for c in candidates if c and c in item.assets), None)
        if found is None:
            missing.append(band)
        else:
            keys[band] = found
    if missing:
        raise RemoteError(
            f"{SERVICE}: item {item.id} has no asset for {', '.join(missing)} (assets: "
            f"{', '.join(sorted(item.assets))}); name them with assets: {{BAND: KEY}}"
        )
    return keys


def item_crs(item):
    """The CRS of ``item`` from its projection extension fields (item or first data asset)."""
    from rasterio.crs import CRS

    places = [item.properties, *(a.extra_fields for a in item.assets.values())]
    for fields in places:
        if fields.get("proj:code"):
            return CRS.from_user_input(fields["proj:code"])
        if fields.get("proj:epsg"):
            return CRS.from_epsg(int(fields["proj:epsg"]))
        if fields.get("proj:wkt2"):
            return CRS.from_wkt(fields["proj:wkt2"])
    raise RemoteError(f"{SERVICE}: item {item.id} has no proj:code / proj:epsg; give the crs option")


def acquired(item) -> datetime:
    """When ``item`` was acquired: its ``datetime``, else the start of its ``start_datetime`` range."""
    if item.datetime is not None:
        return item.datetime.astimezone(UTC)
    start = item.properties.get("start_datetime")
    if not start:
        raise RemoteError(f"{SERVICE}: item {item.id} has neither datetime nor start_datetime")
    return parse_datetime(start)


def search(source: StacSource, bounds, start, end) -> list:
    """Items of the search, newest first, the cloudy ones left out (the API should already have)."""
    import pystac_client
    from pystac_client.exceptions import APIError

    try:
        client = pystac_client.Client.open(source.url)
        found = client.search(
            collections=[source.collection],
            bbox=list(bounds),
            datetime=[start, end],
            query={"eo:cloud_cover": {"lte": source.max_cloud}},
        )
        items = list(found.items())
    except APIError as err:
        why = redact(str(err))
        raise RemoteError(
            f"{SERVICE} API {public_url(source.url)}: search of {source.collection} failed ({why})"
        ) from None
    except Exception as err:  # requests and pystac raise several types for unreachable or bad APIs
        first_line = redact(str(err).splitlines()[0]) if str(err) else ""
        raise RemoteError(
            f"{SERVICE} API {public_url(source.url)}: {type(err).__name__}: {first_line}"
        ) from None
    log.info(
        "%s %s: %d %s items over the AOI", SERVICE, public_url(source.url), len(items), source.collection
    )
    return sorted(items, key=lambda i: (acquired(i), i.id), reverse=True)


def load_item(item, keys: dict[str, str], grid: RasterGrid) -> np.ndarray:
    """The 13 bands of ``item`` on ``grid``, ``(13, H, W)`` uint16, read over the AOI only."""
    import odc.stac
    import rasterio
    from odc.geo.geobox import GeoBox

    geobox = GeoBox((grid.height, grid.width), grid.transform, grid.crs.to_wkt())
    assets = [keys[b] for b in S2.band_names]
    try:
        with rasterio.Env(**GDAL_HTTP):
            data = odc.stac.load(
                [item],
                bands=assets,
                geobox=geobox,
                groupby="id",
                resampling="nearest",
                dtype="uint16",
                nodata=0,
                pool=1,
            )
            stack = np.stack([np.asarray(data[key].values[0]) for key in assets])
    except Exception as err:  # rasterio/GDAL errors of unreachable or broken assets
        raise RemoteError(f"{SERVICE}: item {item.id}: {_failed_asset(keys, item, err)}") from None
    return stack.astype(np.uint16)


def _failed_asset(keys: dict[str, str], item, err: Exception) -> str:
    """Which asset of ``item`` cannot be opened, and why (GDAL's errors rarely name the file)."""
    import rasterio

    with rasterio.Env(**GDAL_HTTP):
        for band, key in keys.items():
            href = item.assets[key].href
            try:
                with rasterio.open(href):
                    pass
            except Exception as problem:
                return f"asset {key} ({band}) at {public_url(href)}: {redact(str(problem))}"
    return f"reading its assets failed ({type(err).__name__}: {redact(str(err))})"


def harmonize(data: np.ndarray, item) -> tuple[np.ndarray, bool]:
    """``data`` without the +1000 DN offset if ``item``'s processing baseline has it; and whether it had."""
    baseline = item.properties.get("s2:processing_baseline")
    try:
        has_offset = baseline is not None and float(baseline) >= OFFSET_BASELINE
    except ValueError:
        raise RemoteError(
            f"{SERVICE}: item {item.id}: s2:processing_baseline {baseline!r} is not a number"
        ) from None
    if not has_offset:
        return data, False
    shifted = np.clip(data.astype(np.int32) - DN_OFFSET, 1, None)
    return np.where(data == 0, 0, shifted).astype(np.uint16), True


def fetch_stac(source: StacSource, out: Path, progress_bar: bool = True) -> FetchSummary:
    """Fetch every item of ``source`` over its AOI into ``out`` (see :mod:`geogan.scenes.remote`)."""
    began = time.perf_counter()
    out = Path(out)
    bounds = aoi_bounds(source.aoi)
    crs = parse_crs(source.crs) if source.crs else None
    start, end = time_range(source.start, source.end)
    items = search(source, bounds, start, end)
    out.mkdir(parents=True, exist_ok=True)
    summary = FetchSummary(out=out)
    kept = []
    for item in items:
        cloud = item.properties.get("eo:cloud_cover")
        if cloud is not None and float(cloud) > source.max_cloud:
            summary.dropped[item.id] = f"cloud cover {float(cloud):g} % > {source.max_cloud:g} %"
            log.info("dropped %s: %s", item.id, summary.dropped[item.id])
        else:
            kept.append(item)
    kept = kept[: source.limit] if source.limit else kept
    records: list[dict[str, Any]] = []
    todo = []
    for item in kept:
        path = scene_path(out, "s2", item.id)
        record = {
            "role": "s2",
            "id": item.id,
            "items": [item.id],
            "datetime": acquired(item).isoformat().replace("+00:00", "Z"),
            "cloud_cover": item.properties.get("eo:cloud_cover"),
            "path": str(path.relative_to(out)),
            "source": f"{SERVICE} {public_url(source.url)} {source.collection}",
        }
        if path.exists():
            summary.skipped.append(item.id)
            log.info("skipped %s: %s is already there", item.id, path)
            records.append(record)
        else:
            todo.append((item, record))
    # One grid for every scene: the crs option, else the CRS of the newest item.
    grid = raster_grid(bounds, crs or item_crs(kept[0]), source.resolution) if kept else None
    if grid is not None:
        check_size(grid, source.aoi, source.resolution)
    try:
        for item, record in progress(todo, f"{SERVICE} s2", progress_bar, len(todo)):
            assert grid is not None  # todo holds items of kept, so kept is not empty
            data = load_item(item, band_assets(item, source.assets), grid)
            if source.harmonize:
                data, removed = harmonize(data, item)
                if removed:
                    record["tags"] = {"GEOGAN_DN_OFFSET_REMOVED": str(DN_OFFSET)}
            write_scene(out / record["path"], data, "s2", grid, record)
            summary.written.append(item.id)
            records.append(record)
            log.info("wrote %s", out / record["path"])
    finally:  # what was written stays listed, also when a later item fails
        summary.sources = update_manifest(out, records, pair_days=0)
    summary.seconds = time.perf_counter() - began
    return summary
