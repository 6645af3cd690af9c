"""What the remote scene sources (Sentinel Hub, STAC) share: AOI, output grid, files and manifest.

A fetch writes into one folder ``OUT``:

- ``OUT/s2/{item}.tif`` (13 bands, uint16 L1C DN, nodata 0) and ``OUT/s1/{item}.tif`` (VV, VH in
  dB, float32, nodata NaN), named by the item id of the scene, on the grid of the AOI; each written
  atomically (temporary name, then rename) and tagged ``GEOGAN_ROLE``, ``GEOGAN_SOURCE`` (the
  service, no credentials), ``GEOGAN_ITEMS``, ``GEOGAN_DATETIME`` and ``GEOGAN_CLOUD_COVER``;
- ``OUT/scenes.json``: one record per scene (role, id, items, datetime, cloud cover, path);
- ``OUT/sources.txt``: the role-tagged sources for ``geogan tile``, one per line: each S2 scene
  (``s2=PATH``) followed by the S1 scene nearest in time within ``pair_days`` (``s1=PATH``).

A scene whose file exists is skipped (it was written whole), so a stopped fetch resumes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from geogan.bands import SENSORS
from geogan.errors import GeoganError
from geogan.files import write_text
from geogan.geo import RasterGrid, write_raster

MAX_SCENE_PIXELS = 10_000 * 10_000  # a scene is held in memory whole: 2.6 GB of S2 at this size
MANIFEST = "scenes.json"
SOURCES = "sources.txt"


class RemoteError(GeoganError, RuntimeError):
    """A remote source failed; the message names the service, the item (if any) and the problem."""


@dataclass
class FetchSummary:
    written: list[str] = field(default_factory=list)  # item ids of scenes written by this run
    skipped: list[str] = field(default_factory=list)  # item ids already on disk
    dropped: dict[str, str] = field(default_factory=dict)  # item id -> why it was not fetched
    sources: list[str] = field(default_factory=list)  # s2=PATH / s1=PATH items for `geogan tile`
    out: Path | None = None
    seconds: float = 0.0


def public_url(url: str) -> str:
    """``url`` without ``user:password@`` and without its query string (either may hold a secret)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str) -> str:
    """``text`` (an error message) with every URL's query string and ``user:password@`` taken out:
    the libraries' errors repeat the URL they failed on, secrets and signed tokens included."""
    text = re.sub(r"\?[^\s'\")?]*=[^\s'\")]*", "?...", text)  # a query: ?key=value...
    return re.sub(r"//[^/\s@'\"]+@", "//", text)


def check_size(grid: RasterGrid, aoi: str, resolution: float) -> RasterGrid:
    """``grid`` if a scene on it fits :data:`MAX_SCENE_PIXELS`; else a ``ValueError`` naming the AOI."""
    if grid.width * grid.height > MAX_SCENE_PIXELS:
        raise ValueError(
            f"aoi {aoi!r}: {grid.width} x {grid.height} px at {resolution:g} m is more than "
            f"{MAX_SCENE_PIXELS:,} px a scene (a smaller AOI or a larger resolution)"
        )
    return grid


def time_range(start: date, end: date) -> tuple[datetime, datetime]:
    """The UTC instants from the start of ``start`` to the end of ``end``."""
    return (
        datetime.combine(start, time.min, tzinfo=UTC),
        datetime.combine(end, time.max, tzinfo=UTC).replace(microsecond=0),
    )


def parse_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def file_name(item_id: str) -> str:
    """A file name of an item id: characters other than letters, digits, ``-``, ``_``, ``.`` -> ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", item_id).strip(".-") or "scene"


def scene_path(out: Path, role: str, item_id: str) -> Path:
    return out / role / f"{file_name(item_id)}.tif"


def write_scene(path: Path, data: np.ndarray, role: str, grid: RasterGrid, record: dict[str, Any]) -> Path:
    """Write one scene GeoTIFF atomically with geogan's band names and provenance tags."""
    tags = {
        "GEOGAN_SOURCE": record["source"],
        "GEOGAN_ITEMS": ",".join(record["items"]),
        "GEOGAN_DATETIME": record["datetime"],
    }
    if record.get("cloud_cover") is not None:
        tags["GEOGAN_CLOUD_COVER"] = str(record["cloud_cover"])
    tags.update(record.get("tags", {}))
    return write_raster(path, data, SENSORS[role], grid.transform, crs=grid.crs, tags=tags)


def update_manifest(out: Path, records: list[dict[str, Any]], pair_days: float) -> list[str]:
    """Merge ``records`` into ``OUT/scenes.json``, rewrite ``OUT/sources.txt``; return its sources.

    Records of earlier runs stay (a resumed or extended fetch lists every scene in the folder);
    a record whose file is gone is dropped.
    """
    manifest = out / MANIFEST
    known: dict[tuple[str, str], dict] = {}
    if manifest.exists():
        for record in json.loads(manifest.read_text()):
            known[(record["role"], record["id"])] = record
    for record in records:
        known[(record["role"], record["id"])] = record
    kept = sorted(
        (r for r in known.values() if (out / r["path"]).exists()), key=lambda r: (r["role"], r["datetime"])
    )
    write_text(manifest, json.dumps(kept, indent=1) + "\n")
    s1 = [r for r in kept if r["role"] == "s1"]
    sources = []
    for record in (r for r in kept if r["role"] == "s2"):
        sources.append(f"s2={(out / record['path']).resolve()}")
        when = parse_datetime(record["datetime"])
        near = min(s1, key=lambda r: abs(parse_datetime(r["datetime"]) - when), default=None)
        if near and abs(parse_datetime(near["datetime"]) - when) <= timedelta(days=pair_days):
            sources.append(f"s1={(out / near['path']).resolve()}")
    write_text(out / SOURCES, "".join(f"{s}\n" for s in sources))
    return sources


def progress(items: Iterable, description: str, enabled: bool, total: int) -> Iterator:
    """``items`` with a rich progress bar on stderr when ``enabled`` (and there is something to do)."""
    if not enabled or total == 0:
        yield from items
        return
    from rich.console import Console

    from geogan.progress import track

    yield from track(items, description=description, total=total, console=Console(stderr=True))


def tile_sources(out: Path) -> list[str]:
    """The ``s2=PATH`` / ``s1=PATH`` sources a fetch into ``out`` left for ``geogan tile``."""
    path = Path(out) / SOURCES
    if not path.exists():
        raise FileNotFoundError(f"{path}: no fetch has written this folder yet")
    return [line for line in path.read_text().splitlines() if line.strip()]


def scene_files(out: Path) -> list[Path]:
    """Every scene GeoTIFF listed in ``out/scenes.json`` (S2 and S1), in a stable order."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return []
    return sorted(Path(out) / record["path"] for record in json.loads(path.read_text()))
