"""Local HTTP servers speaking Sentinel Hub's and a STAC API's request and response formats.

Started by the tests (threads, 127.0.0.1, a free port), they serve pixels of a deterministic
"world": :func:`world` gives the value of each band at each map position, so a test can say which
pixels a fetched scene must hold on whatever grid it was written. Every request is recorded
(method, path, headers, body) so tests can check what the clients sent and how many bytes they read.
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import Affine

S2_RESOLUTION = {  # metres: the native grid of each band
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B10": 60,
    "B11": 20,
    "B12": 20,
}
EARTH_SEARCH_KEYS = {  # asset keys of Earth Search's Sentinel-2 collections
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
BAND_CODE = {name: i + 1 for i, name in enumerate([*S2_RESOLUTION, "VV", "VH"])}


def world(band: str, seed: int, xs: np.ndarray, ys: np.ndarray, resolution: float) -> np.ndarray:
    """Value of ``band`` of scene ``seed`` in the ``resolution``-m pixel holding map point (x, y).

    S2 bands: uint16 DN in 1..9000, different in every band, pixel and scene. S1 (VV, VH): dB.
    """
    col = np.floor(xs / resolution).astype(np.int64)
    row = np.floor(ys / resolution).astype(np.int64)
    code = BAND_CODE[band]
    if band in ("VV", "VH"):
        return (-25.0 + ((col * 7 + row * 3 + code * 11 + seed * 5) % 200) / 10.0).astype(np.float32)
    return (1 + (col * 31 + row * 17 + code * 523 + seed * 1009) % 9000).astype(np.uint16)


def world_grid(
    band: str, seed: int, transform: Affine, width: int, height: int, resolution: float
) -> np.ndarray:
    """:func:`world` at the pixel centres of a grid."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs = transform.c + transform.a * cols + transform.b * rows
    ys = transform.f + transform.d * cols + transform.e * rows
    return world(band, seed, xs, ys, resolution)


def tiff_bytes(data: np.ndarray, transform: Affine, crs: CRS, driver: str = "GTiff", nodata=None) -> bytes:
    """A (bands, H, W) array as GeoTIFF (or COG) bytes."""
    profile = {
        "driver": driver,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if driver == "COG":
        profile.update(blocksize=128, compress="deflate", overview_resampling="nearest")
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(data)
        return memory.read()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    sent: int = 0  # body bytes sent back


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _record(self) -> Recorded:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        entry = Recorded(self.command, self.path, dict(self.headers.items()), body)
        with self.server.lock:
            self.server.requests.append(entry)
        return entry

    def _send(self, entry: Recorded, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            entry.sent = len(body)
        entry.status = status

    def _json(self, entry: Recorded, status: int, payload: Any, ctype: str = "application/json") -> None:
        self._send(entry, status, json.dumps(payload).encode(), ctype)

    def _file(self, entry: Recorded, data: bytes) -> None:
        """Serve bytes with HEAD and single ``Range: bytes=a-b`` support, as GDAL's /vsicurl/ uses."""
        match = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        if not match:
            self._send(entry, 200, data, "image/tiff", {"Accept-Ranges": "bytes"})
            return
        first = int(match.group(1) or 0)
        last = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        if first >= len(data):
            self._send(entry, 416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
            return
        self._send(
            entry,
            206,
            data[first : last + 1],
            "image/tiff",
            {"Accept-Ranges": "bytes", "Content-Range": f"bytes {first}-{last}/{len(data)}"},
        )

    def do_GET(self) -> None:
        self.server.app.handle(self, self._record())

    def do_HEAD(self) -> None:
        self.server.app.handle(self, self._record())

    def do_POST(self) -> None:
        self.server.app.handle(self, self._record())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []


@contextmanager
def serve(app):
    """Run ``app`` (an object with ``handle(handler, entry)``) on a local port; yield the server."""
    server = _Server(app)
    app.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --- Sentinel Hub ------------------------------------------------------------------------------


@dataclass
class ShItem:
    id: str
    collection: str  # catalog id: sentinel-2-l1c, sentinel-1-grd
    datetime: str
    seed: int
    cloud_cover: float | None = None
    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)


@dataclass
class SentinelHubApp:
    """OAuth token endpoint, Catalog API search (paged) and Process API returning GeoTIFFs."""

    client_id: str
    client_secret: str
    items: list[ShItem]
    page_size: int = 2
    process_error: tuple[int, dict] | None = None  # (status, JSON body) the process API answers with
    url: str = ""
    tokens: set[str] = field(default_factory=set)

    def handle(self, h: _Handler, entry: Recorded) -> None:
        path = urlparse(h.path).path
        if h.command == "POST" and path == "/oauth/token":
            return self._token(h, entry)
        if h.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return h._json(
                entry,
                401,
                {
                    "error": {
                        "status": 401,
                        "reason": "Unauthorized",
                        "code": "COMMON_UNAUTHORIZED",
                        "message": "You are not authorized! Please provide a valid access token within the "
                        "header [Authorization: Bearer <accessToken>] of your request.",
                    }
                },
            )
        if h.command == "POST" and path == "/api/v1/catalog/1.0.0/search":
            return self._search(h, entry)
        if h.command == "POST" and path == "/api/v1/process":
            return self._process(h, entry)
        h._json(entry, 404, {"error": {"status": 404, "reason": "Not Found", "message": f"no {path}"}})

    def _token(self, h: _Handler, entry: Recorded) -> None:
        form = {k: v[0] for k, v in parse_qs(entry.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return h._json(entry, 400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return h._json(
                entry,
                401,
                {
                    "error": "invalid_client",
                    "error_description": "Invalid client or Invalid client credentials",
                },
            )
        token = f"token-{len(self.tokens) + 1}"
        self.tokens.add(token)
        h._json(
            entry,
            200,
            {
                "access_token": token,
                "expires_in": 3600,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "email profile",
            },
        )

    def _matches(self, item: ShItem, query: dict) -> bool:
        if item.collection not in query["collections"]:
            return False
        start, end = query["datetime"].split("/")
        if not (start <= item.datetime <= end):
            return False
        w, s, e, n = query["bbox"]
        if item.bbox[0] > e or item.bbox[2] < w or item.bbox[1] > n or item.bbox[3] < s:
            return False
        for term in (query.get("filter") or "").split(" AND "):
            cloud = re.fullmatch(r"eo:cloud_cover\s*<=\s*([\d.]+)", term.strip())
            if cloud and item.cloud_cover is not None and item.cloud_cover > float(cloud.group(1)):
                return False
        return True

    def _feature(self, item: ShItem) -> dict:
        w, s, e, n = item.bbox
        properties: dict[str, Any] = {"datetime": item.datetime, "constellation": item.collection[:10]}
        if item.cloud_cover is not None:
            properties["eo:cloud_cover"] = item.cloud_cover
        return {
            "stac_version": "1.0.0",
            "stac_extensions": [],
            "type": "Feature",
            "id": item.id,
            "bbox": [w, s, e, n],
            "properties": properties,
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "assets": {},
            "links": [],
        }

    def _search(self, h: _Handler, entry: Recorded) -> None:
        query = json.loads(entry.body)
        found = [i for i in self.items if self._matches(i, query)]
        start = int(query.get("next") or 0)
        page = found[start : start + min(self.page_size, query.get("limit", 100))]
        following = start + len(page)
        context = {"limit": query.get("limit"), "returned": len(page)}
        if following < len(found):
            context["next"] = following
        h._json(
            entry,
            200,
            {
                "type": "FeatureCollection",
                "features": [self._feature(i) for i in page],
                "links": [],
                "context": context,
            },
            "application/geo+json",
        )

    def _process(self, h: _Handler, entry: Recorded) -> None:
        if self.process_error:
            return h._json(entry, self.process_error[0], self.process_error[1])
        body = json.loads(entry.body)
        bounds, data, output = body["input"]["bounds"], body["input"]["data"][0], body["output"]
        collection = {"sentinel-2-l1c": "sentinel-2-l1c", "sentinel-1-grd": "sentinel-1-grd"}[data["type"]]
        window = data["dataFilter"]["timeRange"]
        chosen = [
            i
            for i in self.items
            if i.collection == collection and window["from"] <= i.datetime <= window["to"]
        ]
        crs = CRS.from_epsg(int(bounds["properties"]["crs"].rsplit("/", 1)[1]))
        left, bottom, right, top = bounds["bbox"]
        width, height = output["width"], output["height"]
        transform = Affine((right - left) / width, 0, left, 0, -(top - bottom) / height, top)
        names = re.search(r"bands:\s*\[([^\]]*)\]", body["evalscript"]).group(1)
        names = [n.strip().strip('"') for n in names.split(",") if n.strip().strip('"') != "dataMask"]
        if not chosen:  # no data: zeros, as the service answers
            dtype = np.float32 if collection == "sentinel-1-grd" else np.uint16
            pixels = np.zeros((len(names), height, width), dtype)
        else:
            item = chosen[0]
            pixels = np.stack([world_grid(n, item.seed, transform, width, height, 10.0) for n in names])
            if collection == "sentinel-1-grd":  # the evalscript asks for linear power
                pixels = (10.0 ** (pixels / 10.0)).astype(np.float32)
        h._send(entry, 200, tiff_bytes(pixels, transform, crs), "image/tiff")


# --- STAC API ----------------------------------------------------------------------------------


@dataclass
class StacItem:
    id: str
    datetime: str
    seed: int
    cloud_cover: float
    crs: CRS
    origin: tuple[float, float]  # x, y of the top-left corner (multiples of 60 m)
    size_m: int = 7680  # square extent in metres (768 px at 10 m, 6 x 6 COG tiles)
    baseline: str | None = None  # s2:processing_baseline; from "04.00" the served DN include +1000


@dataclass
class StacApp:
    """A STAC API (landing page, /search GET and POST with next links, items) and the items' COGs."""

    items: list[StacItem]
    collection: str = "sentinel-2-l1c"
    page_size: int = 1
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    missing_asset: str | None = None  # an asset path answered with 404
    href_query: str = ""  # appended to asset hrefs, like the signature of a signed URL

    def __post_init__(self) -> None:
        for item in self.items:
            for band, res in S2_RESOLUTION.items():
                n = item.size_m // res
                transform = Affine(res, 0, item.origin[0], 0, -res, item.origin[1])
                data = world_grid(band, item.seed, transform, n, n, res)[None]
                self.files[self.asset_path(item, band)] = tiff_bytes(
                    data, transform, item.crs, "COG", nodata=0
                )

    @staticmethod
    def asset_path(item: StacItem, band: str) -> str:
        return f"/data/{item.id}/{band}.tif"

    def handle(self, h: _Handler, entry: Recorded) -> None:
        parsed = urlparse(h.path)
        path = parsed.path.rstrip("/") or "/"
        if path in self.files:
            if path == self.missing_asset:
                return h._send(entry, 404, b"not found", "text/plain")
            return h._file(entry, self.files[path])
        if path == "/" and h.command == "GET":
            return h._json(entry, 200, self._landing())
        if path == "/search" and h.command in ("GET", "POST"):
            if h.command == "POST":
                query = json.loads(entry.body or b"{}")
            else:
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                for key in ("collections", "bbox"):
                    if key in query:
                        query[key] = query[key].split(",")
                if "query" in query:
                    query["query"] = json.loads(query["query"])
            return self._search(h, entry, query, h.command)
        match = re.fullmatch(r"/collections/([^/]+)/items/([^/]+)", path)
        if match and h.command == "GET":
            for item in self.items:
                if item.id == match.group(2):
                    return h._json(entry, 200, self._item(item), "application/geo+json")
        h._json(entry, 404, {"code": "NotFound", "description": f"no {path}"})

    def _landing(self) -> dict:
        return {
            "type": "Catalog",
            "id": "test-stac",
            "stac_version": "1.0.0",
            "description": "local STAC API",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/item-search#query",
                "https://api.stacspec.org/v1.0.0/ogcapi-features",
                "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
                "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
            ],
            "links": [
                {"rel": "self", "href": f"{self.url}/", "type": "application/json"},
                {"rel": "root", "href": f"{self.url}/", "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{self.url}/search",
                    "type": "application/geo+json",
                    "method": "GET",
                },
                {
                    "rel": "search",
                    "href": f"{self.url}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
            ],
        }

    def lonlat_bbox(self, item: StacItem) -> list[float]:
        from rasterio.warp import transform_bounds

        x0, y0 = item.origin
        return list(transform_bounds(item.crs, "EPSG:4326", x0, y0 - item.size_m, x0 + item.size_m, y0))

    def _item(self, item: StacItem) -> dict:
        w, s, e, n = self.lonlat_bbox(item)
        assets = {}
        for band in reversed(S2_RESOLUTION):  # JSON order unlike band order: order comes from names
            res = S2_RESOLUTION[band]
            n_px = item.size_m // res
            assets[EARTH_SEARCH_KEYS[band]] = {
                "href": f"{self.url}{self.asset_path(item, band)}{self.href_query}",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "eo:bands": [{"name": band}],
                "proj:shape": [n_px, n_px],
                "proj:transform": [res, 0, item.origin[0], 0, -res, item.origin[1]],
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": res}],
            }
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": item.id,
            "collection": self.collection,
            "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            ],
            "bbox": [w, s, e, n],
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {
                "datetime": item.datetime,
                "eo:cloud_cover": item.cloud_cover,
                "proj:epsg": item.crs.to_epsg(),
                "platform": "sentinel-2a",
                **({"s2:processing_baseline": item.baseline} if item.baseline else {}),
            },
            "assets": assets,
            "links": [{"rel": "self", "href": f"{self.url}/collections/{self.collection}/items/{item.id}"}],
        }

    def _matches(self, item: StacItem, query: dict) -> bool:
        if query.get("collections") and self.collection not in query["collections"]:
            return False
        if query.get("datetime"):
            start, end = query["datetime"].split("/")
            if (start not in ("", "..") and item.datetime < start) or (
                end not in ("", "..") and item.datetime > end
            ):
                return False
        if query.get("bbox"):
            w, s, e, n = (float(v) for v in query["bbox"])
            iw, is_, ie, in_ = self.lonlat_bbox(item)
            if iw > e or ie < w or is_ > n or in_ < s:
                return False
        for prop, ops in (query.get("query") or {}).items():
            value = {"eo:cloud_cover": item.cloud_cover}.get(prop)
            for op, bound in ops.items():
                if (
                    value is None
                    or not {
                        "lt": value < bound,
                        "lte": value <= bound,
                        "gt": value > bound,
                        "gte": value >= bound,
                        "eq": value == bound,
                    }[op]
                ):
                    return False
        return True

    def _search(self, h: _Handler, entry: Recorded, query: dict, method: str) -> None:
        found = [i for i in self.items if self._matches(i, query)]
        start = int(query.get("token") or 0)
        limit = int(query.get("limit") or 10)
        page = found[start : start + min(limit, self.page_size)]
        links = []
        if start + len(page) < len(found):
            token = str(start + len(page))
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": f"{self.url}/search",
                        "method": "POST",
                        "body": {**query, "token": token},
                        "merge": False,
                        "type": "application/geo+json",
                    }
                )
            else:
                parsed = urlparse(h.path)
                params = {k: v[0] for k, v in parse_qs(parsed.query).items()} | {"token": token}
                href = f"{self.url}/search?" + "&".join(f"{k}={v}" for k, v in params.items())
                links.append({"rel": "next", "href": href, "method": "GET", "type": "application/geo+json"})
        h._json(
            entry,
            200,
            {
                "type": "FeatureCollection",
                "features": [self._item(i) for i in page],
                "links": links,
                "numberReturned": len(page),
                "numberMatched": len(found),
            },
            "application/geo+json",
        )
