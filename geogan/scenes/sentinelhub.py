"""Scenes from Sentinel Hub: S2 L1C (13 bands, DN) and S1 GRD (VV, VH in dB) over an AOI.

:func:`fetch_sentinelhub` authenticates (OAuth client credentials), searches the Catalog API for
acquisitions over the AOI and time range (S2: ``eo:cloud_cover <= max_cloud``), and asks the
Process API for each acquisition as a GeoTIFF on the AOI grid, with the ``sentinelhub`` package
doing what its own clients do (:class:`~sentinelhub.SentinelHubSession`,
:class:`~sentinelhub.SentinelHubCatalog`, :class:`~sentinelhub.SentinelHubRequest`). Items of one
pass over the AOI (adjacent tiles of one datatake, within a minute) make one scene, named by the
first item id. The folder layout, resuming and ``sources.txt`` are :mod:`geogan.scenes.remote`'s.

Configuration: ``SH_CLIENT_ID`` / ``SH_CLIENT_SECRET`` (or the sentinelhub config file, profile
``$SH_PROFILE``), service URLs from the options, else ``SH_BASE_URL`` / ``SH_TOKEN_URL``, else
the config file (Copernicus Data Space: ``https://sh.dataspace.copernicus.eu`` and
``https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token``).
The secret is only ever sent to the token URL; it is never logged, written, or put in errors.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import requests
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from geogan.bands import S1, S2
from geogan.config import SentinelHubSource
from geogan.geo import RasterGrid, aoi_bounds, parse_crs, raster_grid, utm_crs
from geogan.scenes.remote import (
    FetchSummary,
    RemoteError,
    check_size,
    parse_datetime,
    progress,
    public_url,
    scene_path,
    time_range,
    update_manifest,
    write_scene,
)

log = logging.getLogger(__name__)

SERVICE = "Sentinel Hub"
MAX_PIXELS = 2500  # the Process API's largest output width or height: larger grids go in pieces
SAME_PASS = timedelta(minutes=1)  # items this close in time are one acquisition
COLLECTIONS = {"s2": "SENTINEL2_L1C", "s1": "SENTINEL1_IW"}  # sentinelhub.DataCollection names
ENV_BASE_URL = "SH_BASE_URL"
ENV_TOKEN_URL = "SH_TOKEN_URL"
# requests_oauthlib logs the token request body (with the client secret) at DEBUG level.
CHATTY_LOGGERS = ("requests_oauthlib", "oauthlib")

_S2_QUOTED = ", ".join(f'"{b}"' for b in S2.band_names)
_S2_VALUES = ", ".join(f"s.{b}" for b in S2.band_names)
S2_EVALSCRIPT = f"""//VERSION=3
function setup() {{
  return {{
    input: [{{bands: [{_S2_QUOTED}], units: "DN"}}],
    output: {{id: "default", bands: {S2.count}, sampleType: "UINT16"}}
  }};
}}
function evaluatePixel(s) {{
  return [{_S2_VALUES}];
}}
"""

S1_EVALSCRIPT = """//VERSION=3
function setup() {
  return {
    input: [{bands: ["VV", "VH", "dataMask"], units: "LINEAR_POWER"}],
    output: {id: "default", bands: 2, sampleType: "FLOAT32"}
  };
}
function evaluatePixel(s) {
  return s.dataMask ? [s.VV, s.VH] : [NaN, NaN];
}
"""


def sh_config(source: SentinelHubSource):
    """The :class:`~sentinelhub.SHConfig` of ``source``: options, then environment, then config file."""
    from sentinelhub import SHConfig

    overrides: dict[str, Any] = {"max_download_attempts": source.attempts}
    base_url = source.base_url or os.environ.get(ENV_BASE_URL)
    token_url = source.token_url or os.environ.get(ENV_TOKEN_URL)
    if base_url:
        overrides["sh_base_url"] = base_url.rstrip("/")
    if token_url:
        overrides["sh_token_url"] = token_url
    try:
        config = SHConfig(source.profile, **overrides)
    except KeyError as err:
        raise RemoteError(f"{SERVICE}: {err.args[0]} ({SHConfig.get_config_location()})") from None
    if not (config.sh_client_id and config.sh_client_secret):
        raise RemoteError(
            f"{SERVICE}: no credentials; set SH_CLIENT_ID and SH_CLIENT_SECRET, or sh_client_id and "
            f"sh_client_secret in {SHConfig.get_config_location()}"
        )
    return config


def _redact(text: str, config) -> str:
    return text.replace(config.sh_client_secret, "***") if config.sh_client_secret else text


def _describe(err: Exception, config) -> str:
    """A one-line account of a failed request: the HTTP status, URL and server message."""
    from sentinelhub.decoding import decode_sentinelhub_err_msg
    from sentinelhub.exceptions import DownloadFailedException

    cause = err.request_exception if isinstance(err, DownloadFailedException) else err
    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        response = cause.response
        message = decode_sentinelhub_err_msg(response).strip()
        text = f"HTTP {response.status_code} from {public_url(response.url)}" + (
            f": {message}" if message else ""
        )
    elif isinstance(cause, requests.RequestException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = str(err).replace("\n", " ")
    return _redact(text, config)


def _quiet_oauth_logs() -> None:
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def open_client(config):
    """A download client holding a fresh OAuth session; a :class:`RemoteError` if the login fails."""
    from oauthlib.oauth2 import InsecureTransportError, OAuth2Error
    from sentinelhub import SentinelHubDownloadClient, SentinelHubSession
    from sentinelhub.exceptions import DownloadFailedException

    _quiet_oauth_logs()
    try:
        session = SentinelHubSession(config=config)
    except InsecureTransportError:
        raise RemoteError(
            f"{SERVICE}: the token URL {public_url(config.sh_token_url)} is not https (oauthlib allows "
            "plain http only with OAUTHLIB_INSECURE_TRANSPORT=1, for a local test server)"
        ) from None
    except OAuth2Error as err:
        problem = f"{err.error}: {err.description}" if err.description else err.error
        raise RemoteError(
            f"{SERVICE}: the token service {public_url(config.sh_token_url)} refused the credentials "
            f"({_redact(problem, config)}); check SH_CLIENT_ID and SH_CLIENT_SECRET"
        ) from None
    except (DownloadFailedException, requests.RequestException, ValueError) as err:
        raise RemoteError(
            f"{SERVICE}: no token from {public_url(config.sh_token_url)} ({_describe(err, config)})"
        ) from None
    return SentinelHubDownloadClient(session=session, config=config)


def search(client, config, role: str, bounds, start, end, max_cloud: float) -> list[dict]:
    """Catalog API features of ``role`` over ``bounds`` (degrees) in the time range."""
    from sentinelhub import CRS as SHCRS
    from sentinelhub import BBox, DataCollection, SentinelHubCatalog
    from sentinelhub.exceptions import DownloadFailedException

    collection = getattr(DataCollection, COLLECTIONS[role])
    catalog = SentinelHubCatalog(config=config)
    catalog.client = client  # the client with our session: one login for the whole fetch
    query = f"eo:cloud_cover <= {max_cloud:g}" if role == "s2" else None
    try:
        features = list(
            catalog.search(collection, bbox=BBox(bounds, crs=SHCRS.WGS84), time=(start, end), filter=query)
        )
    except (DownloadFailedException, requests.RequestException, KeyError) as err:
        raise RemoteError(
            f"{SERVICE}: catalog search of {collection.catalog_id} failed ({_describe(err, config)})"
        ) from None
    log.info("%s catalog: %d %s items over the AOI", SERVICE, len(features), collection.catalog_id)
    return features


def acquisitions(features: list[dict], role: str, max_cloud: float, dropped: dict[str, str]) -> list[dict]:
    """Features grouped into passes (newest first); S2 features above ``max_cloud`` go to ``dropped``."""
    kept = []
    for feature in features:
        cloud = feature.get("properties", {}).get("eo:cloud_cover")
        if role == "s2" and cloud is not None and float(cloud) > max_cloud:
            dropped[feature["id"]] = f"cloud cover {float(cloud):g} % > {max_cloud:g} %"
            log.info("dropped %s: %s", feature["id"], dropped[feature["id"]])
            continue
        kept.append(feature)
    kept.sort(key=lambda f: (parse_datetime(f["properties"]["datetime"]), f["id"]))
    groups: list[list[dict]] = []
    for feature in kept:
        when = parse_datetime(feature["properties"]["datetime"])
        if groups and when - parse_datetime(groups[-1][0]["properties"]["datetime"]) <= SAME_PASS:
            groups[-1].append(feature)
        else:
            groups.append([feature])
    scenes = []
    for group in groups:
        times = [parse_datetime(f["properties"]["datetime"]) for f in group]
        clouds = [f["properties"].get("eo:cloud_cover") for f in group]
        clouds = [float(c) for c in clouds if c is not None]
        scenes.append(
            {
                "role": role,
                "id": min(f["id"] for f in group),
                "items": sorted(f["id"] for f in group),
                "datetime": min(times).isoformat().replace("+00:00", "Z"),
                "window": (min(times) - SAME_PASS / 2, max(times) + SAME_PASS / 2),
                "cloud_cover": max(clouds) if clouds else None,
            }
        )
    return scenes[::-1]


def process_request(config, role: str, grid: RasterGrid, window, max_cloud: float):
    """The Process API request of one acquisition on ``grid`` as a GeoTIFF."""
    from sentinelhub import CRS as SHCRS
    from sentinelhub import BBox, DataCollection, MimeType, MosaickingOrder, SentinelHubRequest

    collection = getattr(DataCollection, COLLECTIONS[role])
    extra = (
        {"processing": {"backCoeff": "SIGMA0_ELLIPSOID", "orthorectify": True, "demInstance": "COPERNICUS"}}
        if role == "s1"
        else None
    )
    input_data = SentinelHubRequest.input_data(
        collection,
        time_interval=window,
        maxcc=max_cloud / 100 if role == "s2" else None,
        mosaicking_order=MosaickingOrder.LEAST_CC if role == "s2" else MosaickingOrder.MOST_RECENT,
        other_args=extra,
    )
    epsg = grid.crs.to_epsg()
    if epsg is None:
        raise ValueError(f"crs {grid.crs}: Sentinel Hub needs a CRS with an EPSG code")
    return SentinelHubRequest(
        evalscript=S2_EVALSCRIPT if role == "s2" else S1_EVALSCRIPT,
        # A plain dict: the collection's own service URL would otherwise override config.sh_base_url.
        input_data=[dict(input_data)],
        responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
        bbox=BBox(grid.bounds, crs=SHCRS(epsg)),
        size=(grid.width, grid.height),
        config=config,
    )


def to_db(linear: np.ndarray) -> np.ndarray:
    """Backscatter in dB of linear power; 0, negative and missing values become NaN."""
    out = np.full(linear.shape, np.nan, dtype=np.float32)
    valid = np.isfinite(linear) & (linear > 0)
    out[valid] = 10.0 * np.log10(linear[valid])
    return out


def blocks(grid: RasterGrid, size: int) -> list[tuple[int, int, RasterGrid]]:
    """``(row, col, sub-grid)`` pieces of ``grid`` at most ``size`` px a side, in row-major order."""
    t = grid.transform
    pieces = []
    for row in range(0, grid.height, size):
        for col in range(0, grid.width, size):
            transform = Affine(t.a, t.b, t.c + t.a * col + t.b * row, t.d, t.e, t.f + t.d * col + t.e * row)
            width, height = min(size, grid.width - col), min(size, grid.height - row)
            pieces.append((row, col, RasterGrid(grid.crs, transform, width, height)))
    return pieces


def _request_block(client, config, scene: dict, grid: RasterGrid, max_cloud: float) -> np.ndarray:
    from sentinelhub.exceptions import DownloadFailedException

    sensor = S2 if scene["role"] == "s2" else S1
    request = process_request(config, scene["role"], grid, scene["window"], max_cloud)
    try:
        [response] = client.download(request.download_list, max_threads=1, decode_data=False)
    except (DownloadFailedException, requests.RequestException) as err:
        raise RemoteError(f"{SERVICE}: process API, item {scene['id']}: {_describe(err, config)}") from None
    try:
        with MemoryFile(response.content) as memory, memory.open() as src:
            data = src.read()
    except Exception as err:  # rasterio raises several error types for bad bytes
        raise RemoteError(
            f"{SERVICE}: process API, item {scene['id']}: the response is not a TIFF ({err})"
        ) from None
    if data.shape != (sensor.count, grid.height, grid.width):
        raise RemoteError(
            f"{SERVICE}: process API, item {scene['id']}: got a {data.shape[2]} x {data.shape[1]} px "
            f"{data.shape[0]}-band TIFF, asked for {grid.width} x {grid.height} px with {sensor.count} bands"
        )
    return data


def fetch_scene(client, config, scene: dict, grid: RasterGrid, max_cloud: float) -> np.ndarray:
    """The pixels of one acquisition, ``(bands, H, W)`` in geogan's order and units.

    A grid wider or taller than the Process API's limit (:data:`MAX_PIXELS`) is requested in
    pieces on the same pixel grid and put together.
    """
    role = scene["role"]
    sensor = S2 if role == "s2" else S1
    data = np.zeros((sensor.count, grid.height, grid.width), np.uint16 if role == "s2" else np.float32)
    for row, col, piece in blocks(grid, MAX_PIXELS):
        block = _request_block(client, config, scene, piece, max_cloud)
        data[:, row : row + piece.height, col : col + piece.width] = block
    return data if role == "s2" else to_db(data)


def fetch_sentinelhub(source: SentinelHubSource, out: Path, progress_bar: bool = True) -> FetchSummary:
    """Fetch every acquisition of ``source`` into ``out`` (see :mod:`geogan.scenes.remote`)."""
    began = time.perf_counter()
    out = Path(out)
    bounds = aoi_bounds(source.aoi)
    crs = (
        parse_crs(source.crs)
        if source.crs
        else utm_crs((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    )
    grid = raster_grid(bounds, crs, source.resolution)
    check_size(grid, source.aoi, source.resolution)
    start, end = time_range(source.start, source.end)
    config = sh_config(source)
    client = open_client(config)
    out.mkdir(parents=True, exist_ok=True)
    summary = FetchSummary(out=out)
    records: list[dict] = []
    try:
        for role in source.sensors:
            features = search(client, config, role, bounds, start, end, source.max_cloud)
            scenes = acquisitions(features, role, source.max_cloud, summary.dropped)
            scenes = scenes[: source.limit] if source.limit else scenes
            todo = []
            for scene in scenes:
                path = scene_path(out, role, scene["id"])
                scene.update(
                    path=str(path.relative_to(out)), source=f"{SERVICE} {public_url(config.sh_base_url)}"
                )
                if path.exists():
                    summary.skipped.append(scene["id"])
                    log.info("skipped %s: %s is already there", scene["id"], path)
                    records.append(scene)
                else:
                    todo.append(scene)
            for scene in progress(todo, f"{SERVICE} {role}", progress_bar, len(todo)):
                data = fetch_scene(client, config, scene, grid, source.max_cloud)
                write_scene(out / scene["path"], data, role, grid, scene)
                summary.written.append(scene["id"])
                records.append(scene)
                log.info("wrote %s", out / scene["path"])
    finally:  # what was written stays listed, also when a later scene fails
        for record in records:
            record.pop("window", None)
        summary.sources = update_manifest(out, records, source.pair_days)
    summary.seconds = time.perf_counter() - began
    return summary
