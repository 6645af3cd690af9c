"""Sentinel Hub and STAC sources against local HTTP servers speaking the services' formats.

No network: tests/remote_servers.py runs an OAuth token endpoint, the Catalog and Process APIs,
and a STAC API whose assets are COGs served with HTTP range requests, all on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from distributed import Client, LocalCluster
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from remote_servers import S2_RESOLUTION, SentinelHubApp, ShItem, StacApp, StacItem, serve, world_grid
from typer.testing import CliRunner

from geogan.bands import S1, S2
from geogan.cli import app as cli_app
from geogan.config import SentinelHubSource, StacSource, TileOptions
from geogan.scenes.remote import RemoteError, scene_files, tile_sources
from geogan.scenes.sentinelhub import acquisitions, fetch_sentinelhub
from geogan.scenes.stac import fetch_stac
from geogan.tiling import tile

# odc-geo's own deprecation chatter (affine `*`, shapely.ops.transform), not ours
pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:odc.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:odc.*"),
]

SECRET = "geogan-test-secret-7f3a9c"
CLIENT_ID = "geogan-test-client"
UTM32 = CRS.from_epsg(32632)
SH_AOI = "11.0,46.0,11.01,46.006"  # ~780 x 670 m in UTM zone 32
SH_ITEMS = [
    ShItem("S2A_MSIL1C_20230605T103031_N0509_R108_T32TPS", "sentinel-2-l1c", "2023-06-05T10:30:31Z", 1, 5.0),
    ShItem("S2B_MSIL1C_20230610T103029_N0509_R108_T32TPS", "sentinel-2-l1c", "2023-06-10T10:30:29Z", 2, 85.0),
    ShItem("S2A_MSIL1C_20230615T103031_N0509_R108_T32TPS", "sentinel-2-l1c", "2023-06-15T10:30:31Z", 3, 12.0),
    ShItem("S2B_MSIL1C_20230620T103029_N0509_R108_T32TPS", "sentinel-2-l1c", "2023-06-20T10:30:29Z", 4, 0.5),
    ShItem(
        "S1A_IW_GRDH_1SDV_20230606T053012_048873_05E0A1_5C1D", "sentinel-1-grd", "2023-06-06T05:30:12Z", 5
    ),
]
CLEAR_S2 = [i.id for i in SH_ITEMS if i.collection == "sentinel-2-l1c" and i.cloud_cover < 30]
STAC_ITEMS = [
    StacItem(
        "S2A_32TQM_20230601_0_L1C",
        "2023-06-01T10:30:31Z",
        11,
        3.0,
        UTM32,
        (600000.0, 5000040.0),
        baseline="02.09",
    ),
    StacItem("S2B_32TQM_20230604_0_L1C", "2023-06-04T10:30:29Z", 12, 95.0, UTM32, (600000.0, 5000040.0)),
    # served DN of baseline 05.09 carry the +1000 offset, which the fetch removes
    StacItem(
        "S2A_32TQM_20230611_0_L1C",
        "2023-06-11T10:30:31Z",
        13,
        20.0,
        UTM32,
        (600000.0, 5000040.0),
        baseline="05.09",
    ),
]
STAC_AOI = transform_bounds(UTM32, "EPSG:4326", 602010, 4994020, 602830, 4994730)  # well inside the items


@contextmanager
def captured_logs():
    """Every log record (DEBUG and up, all loggers) formatted into a list while the block runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    root, handler = logging.getLogger(), Keep(logging.DEBUG)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def sh_env(tmp_path_factory):
    """Credentials in the environment, a private sentinelhub config folder, plain-http OAuth allowed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
        mp.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the local token endpoint is http
        mp.setenv("SH_CLIENT_ID", CLIENT_ID)
        mp.setenv("SH_CLIENT_SECRET", SECRET)
        mp.delenv("SH_PROFILE", raising=False)
        yield mp


@pytest.fixture(scope="module")
def sh_server(sh_env):
    app = SentinelHubApp(CLIENT_ID, SECRET, SH_ITEMS)
    with serve(app) as server:
        sh_env.setenv("SH_BASE_URL", app.url)
        sh_env.setenv("SH_TOKEN_URL", f"{app.url}/oauth/token")
        yield app, server


def sh_source(**kw) -> SentinelHubSource:
    return SentinelHubSource(aoi=SH_AOI, start="2023-06-01", end="2023-06-30", max_cloud=30, **kw)


@pytest.fixture(scope="module")
def sh_fetched(sh_server, tmp_path_factory):
    app, server = sh_server
    out = tmp_path_factory.mktemp("sh")
    with captured_logs() as lines:
        summary = fetch_sentinelhub(sh_source(), out, progress_bar=False)
    return out, summary, lines, list(server.requests)


def assert_secret_nowhere(out: Path, *texts: str) -> None:
    for text in texts:
        assert SECRET not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_sentinelhub_speaks_oauth_catalog_and_process(sh_fetched):
    out, summary, lines, requests = sh_fetched
    token = [r for r in requests if r.path == "/oauth/token"]
    assert len(token) == 1 and b"grant_type=client_credentials" in token[0].body  # one login per fetch
    searches = [json.loads(r.body) for r in requests if r.path.endswith("/catalog/1.0.0/search")]
    s2_searches = [s for s in searches if s["collections"] == ["sentinel-2-l1c"]]
    assert len(s2_searches) == 2 and s2_searches[1]["next"] == 2  # 3 clear items, pages of 2
    assert s2_searches[0]["filter"] == "eo:cloud_cover <= 30"
    assert s2_searches[0]["datetime"] == "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z"
    np.testing.assert_allclose(s2_searches[0]["bbox"], [11.0, 46.0, 11.01, 46.006])
    processes = [r for r in requests if r.path == "/api/v1/process"]
    assert len(processes) == 4 and all(r.headers["Authorization"] == "Bearer token-1" for r in processes)
    body = json.loads(processes[0].body)
    assert body["input"]["bounds"]["properties"]["crs"].endswith("/EPSG/0/32632")
    assert body["output"]["responses"][0]["format"]["type"] == "image/tiff"
    # the cloudy item is never asked for, the others each once
    assert sorted(summary.written) == sorted([*CLEAR_S2, SH_ITEMS[-1].id]) and summary.skipped == []
    assert not (out / "s2" / f"{SH_ITEMS[1].id}.tif").exists()


def test_sentinelhub_scenes_hold_the_served_pixels(sh_fetched):
    out, summary, _, _ = sh_fetched
    aoi = [float(v) for v in SH_AOI.split(",")]
    seeds = {i.id: i.seed for i in SH_ITEMS}
    for item_id in CLEAR_S2:
        with rasterio.open(out / "s2" / f"{item_id}.tif") as src:
            assert src.crs == UTM32 and src.res == (10.0, 10.0) and src.dtypes[0] == "uint16"
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
            assert src.descriptions == S2.band_names and src.nodata == 0
            left, bottom, right, top = transform_bounds("EPSG:4326", src.crs, *aoi)
            assert src.bounds.left <= left and src.bounds.right >= right
            assert src.bounds.bottom <= bottom and src.bounds.top >= top
            assert src.bounds.right - right < 10 and src.bounds.left > left - 10  # no more than the AOI
            data = src.read()
            tags = src.tags()
            for b, name in enumerate(S2.band_names):  # band order: each band its own values
                expected = world_grid(name, seeds[item_id], src.transform, src.width, src.height, 10.0)
                np.testing.assert_array_equal(data[b], expected, err_msg=f"{item_id} {name}")
        assert tags["GEOGAN_ROLE"] == "s2" and tags["GEOGAN_ITEMS"] == item_id
        assert tags["GEOGAN_SOURCE"].startswith("Sentinel Hub http://127.0.0.1:")
    s1_id = SH_ITEMS[-1].id
    with rasterio.open(out / "s1" / f"{s1_id}.tif") as src:
        assert src.crs == UTM32 and src.descriptions == S1.band_names and src.dtypes[0] == "float32"
        for b, name in enumerate(S1.band_names):  # served as linear power, written in dB
            expected = world_grid(name, seeds[s1_id], src.transform, src.width, src.height, 10.0)
            np.testing.assert_allclose(src.read(b + 1), expected, atol=1e-4)


def test_sentinelhub_sources_pair_s1_with_the_nearest_s2(sh_fetched):
    out, summary, _, _ = sh_fetched
    s2 = {i: str((out / "s2" / f"{i}.tif").resolve()) for i in CLEAR_S2}
    s1 = str((out / "s1" / f"{SH_ITEMS[-1].id}.tif").resolve())
    # 06-05 pairs with the S1 pass of 06-06; 06-15 and 06-20 have none within 6 days
    assert summary.sources == [
        f"s2={s2[CLEAR_S2[0]]}",
        f"s1={s1}",
        f"s2={s2[CLEAR_S2[1]]}",
        f"s2={s2[CLEAR_S2[2]]}",
    ]
    assert (out / "sources.txt").read_text().split() == summary.sources == tile_sources(out)
    assert scene_files(out) == sorted([*(out / "s1").glob("*.tif"), *(out / "s2").glob("*.tif")])
    records = json.loads((out / "scenes.json").read_text())
    assert {r["id"] for r in records} == {*CLEAR_S2, SH_ITEMS[-1].id}
    assert {r["id"]: r["cloud_cover"] for r in records if r["role"] == "s2"} == {
        i.id: i.cloud_cover for i in SH_ITEMS if i.id in CLEAR_S2
    }


def test_sentinelhub_secret_never_logged_or_written(sh_fetched):
    out, summary, lines, _ = sh_fetched
    text = "\n".join(lines)
    assert "api/v1/process" in text  # the DEBUG records were captured...
    assert_secret_nowhere(out, text, repr(summary))  # ...and none holds the secret


def test_sentinelhub_resumes_by_item_id(sh_server, sh_fetched, tmp_path):
    app, server = sh_server
    out = tmp_path / "resumed"
    shutil.copytree(sh_fetched[0], out)
    (out / "s2" / f"{CLEAR_S2[1]}.tif").unlink()  # as if the run had stopped before this scene
    before = len(server.requests)
    summary = fetch_sentinelhub(sh_source(), out, progress_bar=False)
    processes = [r for r in server.requests[before:] if r.path == "/api/v1/process"]
    assert summary.written == [CLEAR_S2[1]] and len(processes) == 1
    assert sorted(summary.skipped) == sorted([CLEAR_S2[0], CLEAR_S2[2], SH_ITEMS[-1].id])
    first = str(sh_fetched[0].resolve())
    assert summary.sources == [s.replace(first, str(out.resolve())) for s in sh_fetched[1].sources]


def test_sentinelhub_large_grids_come_in_pieces(sh_server, sh_fetched, tmp_path, monkeypatch):
    """Over the Process API's size limit (2500 px, here made 32), a scene is asked for in pieces."""
    import geogan.scenes.sentinelhub as sh

    app, server = sh_server
    monkeypatch.setattr(sh, "MAX_PIXELS", 32)
    before = len(server.requests)
    summary = fetch_sentinelhub(sh_source(sensors=("s2",), limit=1), tmp_path, progress_bar=False)
    [item_id] = summary.written
    pieces = [json.loads(r.body) for r in server.requests[before:] if r.path == "/api/v1/process"]
    with (
        rasterio.open(tmp_path / "s2" / f"{item_id}.tif") as src,
        rasterio.open(sh_fetched[0] / "s2" / f"{item_id}.tif") as whole,
    ):
        assert src.transform == whole.transform and src.shape == whole.shape
        np.testing.assert_array_equal(src.read(), whole.read())  # the same pixels as one request
        assert len(pieces) == -(-src.width // 32) * -(-src.height // 32)
    assert (
        max(p["output"]["width"] for p in pieces) == 32 and max(p["output"]["height"] for p in pieces) == 32
    )


def test_sentinelhub_bad_credentials_name_the_service(sh_server, sh_env, tmp_path):
    wrong = "not-the-secret-but-also-private"
    sh_env.setenv("SH_CLIENT_SECRET", wrong)
    try:
        with captured_logs() as lines, pytest.raises(RemoteError) as err:
            fetch_sentinelhub(sh_source(), tmp_path / "out", progress_bar=False)
    finally:
        sh_env.setenv("SH_CLIENT_SECRET", SECRET)
    message = str(err.value)
    assert message.startswith("Sentinel Hub: the token service http://127.0.0.1:")
    assert "invalid_client" in message and "SH_CLIENT_SECRET" in message
    for text in (message, "\n".join(lines)):
        assert wrong not in text and SECRET not in text


def test_sentinelhub_without_credentials(sh_env, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SH_CLIENT_ID")
        mp.delenv("SH_CLIENT_SECRET")
        with pytest.raises(
            RemoteError, match="Sentinel Hub: no credentials; set SH_CLIENT_ID and SH_CLIENT_SECRET"
        ):
            fetch_sentinelhub(sh_source(), tmp_path, progress_bar=False)


def test_sentinelhub_process_error_names_the_item(sh_env, tmp_path):
    app = SentinelHubApp(CLIENT_ID, SECRET, SH_ITEMS[:1])
    app.process_error = (
        400,
        {
            "error": {
                "status": 400,
                "reason": "Bad Request",
                "code": "RENDERER_EXCEPTION",
                "message": "Output default requested but missing from function setup()",
            }
        },
    )
    with serve(app), pytest.MonkeyPatch.context() as mp:
        mp.setenv("SH_BASE_URL", app.url)
        mp.setenv("SH_TOKEN_URL", f"{app.url}/oauth/token")
        with pytest.raises(RemoteError) as err:
            fetch_sentinelhub(sh_source(sensors=("s2",)), tmp_path / "out", progress_bar=False)
    message = str(err.value)
    assert message.startswith(f"Sentinel Hub: process API, item {SH_ITEMS[0].id}: HTTP 400 from {app.url}")
    assert "Output default requested but missing" in message and SECRET not in message
    assert not list((tmp_path / "out").rglob("*.tif"))


def test_sentinelhub_server_error_after_retries(sh_env, tmp_path):
    app = SentinelHubApp(CLIENT_ID, SECRET, SH_ITEMS[:1])
    app.process_error = (503, {"error": {"status": 503, "reason": "Service Unavailable", "message": "busy"}})
    with serve(app) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("SH_BASE_URL", app.url)
        mp.setenv("SH_TOKEN_URL", f"{app.url}/oauth/token")
        with pytest.raises(RemoteError, match=f"process API, item {SH_ITEMS[0].id}: HTTP 503 .*busy"):
            fetch_sentinelhub(sh_source(sensors=("s2",), attempts=1), tmp_path, progress_bar=False)
    assert len([r for r in server.requests if r.path == "/api/v1/process"]) == 1


def test_aoi_from_a_vector_file_and_too_large_aois(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geogan.geo import aoi_bounds

    frame = gpd.GeoDataFrame(geometry=[box(655000, 5096000, 655500, 5096400)], crs=UTM32)
    frame.to_file(tmp_path / "aoi.gpkg")
    west, south, east, north = aoi_bounds(str(tmp_path / "aoi.gpkg"))
    np.testing.assert_allclose(
        (west, south, east, north), transform_bounds(UTM32, "EPSG:4326", 655000, 5096000, 655500, 5096400)
    )
    with pytest.raises(ValueError, match="is more than 100,000,000 px a scene"):
        fetch_sentinelhub(
            SentinelHubSource(aoi="10,45,12,47", start="2023-06-01", end="2023-06-02"), tmp_path / "o"
        )
    with pytest.raises(ValueError, match="neither a vector file that exists nor 'W,S,E,N'"):
        aoi_bounds("somewhere.gpkg")


def test_cloudy_items_are_dropped_even_if_the_api_returns_them():
    features = [
        {"id": i.id, "properties": {"datetime": i.datetime, "eo:cloud_cover": i.cloud_cover}}
        for i in SH_ITEMS[:4]
    ]
    dropped: dict[str, str] = {}
    scenes = acquisitions(features, "s2", 30.0, dropped)
    assert [s["id"] for s in scenes] == CLEAR_S2[::-1]  # newest first
    assert dropped == {SH_ITEMS[1].id: "cloud cover 85 % > 30 %"}


def test_one_pass_over_two_tiles_is_one_scene():
    features = [
        {"id": "S2A_B_T32TPT", "properties": {"datetime": "2023-06-05T10:30:35Z", "eo:cloud_cover": 1.0}},
        {"id": "S2A_A_T32TPS", "properties": {"datetime": "2023-06-05T10:30:31Z", "eo:cloud_cover": 4.0}},
    ]
    [scene] = acquisitions(features, "s2", 30.0, {})
    assert scene["id"] == "S2A_A_T32TPS" and scene["items"] == ["S2A_A_T32TPS", "S2A_B_T32TPT"]
    assert scene["cloud_cover"] == 4.0 and scene["datetime"] == "2023-06-05T10:30:31Z"


def test_options_refuse_credentials_in_urls():
    with pytest.raises(ValueError, match="credentials through the environment") as err:
        sh_source(base_url="https://user:hunter2@services.sentinel-hub.com")
    assert "hunter2" not in str(err.value)
    with pytest.raises(ValueError, match="aoi"):
        fetch_sentinelhub(
            SentinelHubSource(aoi="11,46,10,47", start="2023-06-01", end="2023-06-02"), Path("x")
        )


# --- STAC --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stac_server():
    app = StacApp(STAC_ITEMS)
    with serve(app) as server:
        yield app, server


def stac_source(url: str, **kw) -> StacSource:
    aoi = ",".join(f"{v:.7f}" for v in STAC_AOI)
    return StacSource(url=url, aoi=aoi, start="2023-06-01", end="2023-06-30", max_cloud=30, **kw)


@pytest.fixture(scope="module")
def stac_fetched(stac_server, tmp_path_factory):
    app, server = stac_server
    out = tmp_path_factory.mktemp("stac")
    summary = fetch_stac(stac_source(app.url), out, progress_bar=False)
    return out, summary, list(server.requests)


def test_stac_search_pages_and_cloud_filter(stac_fetched):
    out, summary, requests = stac_fetched
    searches = [json.loads(r.body) for r in requests if r.path.startswith("/search")]
    assert len(searches) == 2 and searches[1]["token"] == "1"  # pages of one item, next link followed
    assert searches[0]["query"] == {"eo:cloud_cover": {"lte": 30.0}}
    assert searches[0]["collections"] == ["sentinel-2-l1c"]
    assert sorted(summary.written) == [STAC_ITEMS[0].id, STAC_ITEMS[2].id]
    assert not any(STAC_ITEMS[1].id in r.path for r in requests)  # the cloudy item: not a byte read


def test_stac_scenes_hold_the_cog_pixels_in_band_order(stac_fetched):
    out, summary, _ = stac_fetched
    for item in (STAC_ITEMS[0], STAC_ITEMS[2]):
        with rasterio.open(out / "s2" / f"{item.id}.tif") as src:
            assert src.crs == UTM32 and src.res == (10.0, 10.0) and src.count == 13
            assert src.descriptions == S2.band_names and src.dtypes[0] == "uint16"
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0  # whole pixels of the 0,0 grid
            # the AOI rectangle (given in degrees, so a little larger back in UTM) and not much more
            left, bottom, right, top = src.bounds
            assert 602010 - 40 < left <= 602010 and 602830 <= right < 602830 + 40
            assert 4994020 - 40 < bottom <= 4994020 and 4994730 <= top < 4994730 + 40
            data = src.read()
            offset = 1000 if item.baseline >= "04.00" else 0
            for b, name in enumerate(S2.band_names):  # 20 m and 60 m bands: nearest, values kept
                expected = world_grid(
                    name, item.seed, src.transform, src.width, src.height, S2_RESOLUTION[name]
                )
                expected = np.clip(expected.astype(int) - offset, 1, None)  # served values are all >= 1
                np.testing.assert_array_equal(data[b], expected, err_msg=f"{item.id} {name}")
            tags = src.tags()
            assert tags["GEOGAN_CLOUD_COVER"] == str(item.cloud_cover)
            assert tags.get("GEOGAN_DN_OFFSET_REMOVED") == ("1000" if offset else None)


def test_stac_reads_only_the_aoi_with_range_requests(stac_server, stac_fetched):
    app, _ = stac_server
    _, _, requests = stac_fetched
    reads = [r for r in requests if r.path.startswith("/data/") and r.method == "GET"]
    assert reads and all(r.headers.get("Range", "").startswith("bytes=") for r in reads)
    assert all(r.status == 206 for r in reads)
    for item in (STAC_ITEMS[0], STAC_ITEMS[2]):
        served = sum(len(app.files[app.asset_path(item, b)]) for b in S2_RESOLUTION)
        sent = sum(r.sent for r in reads if f"/{item.id}/" in r.path)
        assert 0 < sent < 0.25 * served, (sent, served)  # the AOI is ~1 % of the tile's area


def test_stac_resumes_by_item_id(stac_server, stac_fetched, tmp_path):
    app, server = stac_server
    out = tmp_path / "resumed"
    shutil.copytree(stac_fetched[0], out)
    before = len(server.requests)
    summary = fetch_stac(stac_source(app.url), out, progress_bar=False)
    assert summary.written == [] and sorted(summary.skipped) == sorted(stac_fetched[1].written)
    assert not [r for r in server.requests[before:] if r.path.startswith("/data/")]


def test_stac_errors_name_the_service_and_item(tmp_path):
    app = StacApp(STAC_ITEMS[:1])
    app.missing_asset = app.asset_path(STAC_ITEMS[0], "B8A")
    app.href_query = "?se=2030-01-01&sig=SIGNED-URL-TOKEN"  # signed asset URLs: the token is a secret
    with serve(app):
        with pytest.raises(RemoteError) as err:
            fetch_stac(stac_source(app.url), tmp_path / "a", progress_bar=False)
        url = f"{app.url}{app.missing_asset}"
        assert str(err.value).startswith(f"STAC: item {STAC_ITEMS[0].id}: asset nir08 (B8A) at {url}: ")
        assert "404" in str(err.value) and "SIGNED-URL-TOKEN" not in str(err.value)
        app.missing_asset = None
        with pytest.raises(RemoteError, match=f"STAC: item {STAC_ITEMS[0].id} has no asset for B10"):
            fetch_stac(_without_cirrus(app), tmp_path / "b", progress_bar=False)
        with pytest.raises(RemoteError, match=f"STAC API {app.url}/nothing-here"):
            fetch_stac(stac_source(f"{app.url}/nothing-here"), tmp_path / "c", progress_bar=False)
    assert not list(tmp_path.rglob("*.tif"))


def _without_cirrus(app: StacApp) -> StacSource:
    """The source of ``app`` after its items lose their B10 (cirrus) asset."""
    original = app._item

    def item_without_cirrus(item):
        record = original(item)
        record["assets"].pop("cirrus")
        return record

    app._item = item_without_cirrus
    return stac_source(app.url)


# --- the fetched scenes are tile-stage input ---------------------------------------------------


def test_fetched_scenes_tile(sh_fetched, stac_fetched, tmp_path):
    sources = [*sh_fetched[1].sources, *stac_fetched[1].sources]
    out = tmp_path / "tiles"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            summary = tile(TileOptions(sources=sources, out=out, size=32), client=client, progress=False)
    assert summary.ok and summary.failures == []
    assert summary.written == 5 * 4  # 5 S2 scenes of ~80 x 70 px: 2 x 2 chips each
    chips = sorted(out.glob("geogan_scenes/s2_*/*.tif"))
    assert len(chips) == 20 and len(list(out.glob("geogan_scenes/s1_*/*.tif"))) == 4  # one S2 had S1
    chip = next(c for c in chips if CLEAR_S2[0].replace("_", "-") in c.name and c.stem.endswith("r32-c32"))
    scene = sh_fetched[0] / "s2" / f"{CLEAR_S2[0]}.tif"
    with rasterio.open(chip) as c, rasterio.open(scene) as s:
        np.testing.assert_array_equal(c.read(), s.read(window=Window(32, 32, 32, 32)))
        assert c.crs == s.crs and c.transform == s.window_transform(Window(32, 32, 32, 32))


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_fetch_sentinelhub(sh_server, tmp_path):
    out = tmp_path / "cli"
    args = ["fetch", "sentinelhub", "--aoi", SH_AOI, "--start", "2023-06-01", "--end", "2023-06-30"]
    result = CliRunner().invoke(
        cli_app, ["-v", *args, "--sensor", "s2", "--max-cloud", "30", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "3 written" in result.output and "sources.txt" in result.output
    assert SECRET not in result.output
    assert len(list((out / "s2").glob("*.tif"))) == 3
    bad = CliRunner().invoke(cli_app, [*args, "--out", str(out), "--max-cloud", "130"])
    assert bad.exit_code == 2 and "--max-cloud: Input should be less than or equal to 100" in bad.output


def test_cli_fetch_stac(stac_server, tmp_path):
    app, _ = stac_server
    aoi = ",".join(f"{v:.7f}" for v in STAC_AOI)
    args = ["fetch", "stac", "--url", app.url, "--aoi", aoi, "--start", "2023-06-01", "--end", "2023-06-30"]
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli_app,
        [
            *args,
            "--max-cloud",
            "30",
            "--limit",
            "1",
            "--no-harmonize",
            "--asset",
            "B8A=nir08",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 written" in result.output
    [scene] = (out / "s2").glob("*.tif")
    assert scene.stem == STAC_ITEMS[2].id  # the newest clear item
    with rasterio.open(scene) as src:  # --no-harmonize: the served DN as they are
        expected = world_grid("B04", STAC_ITEMS[2].seed, src.transform, src.width, src.height, 10)
        np.testing.assert_array_equal(src.read(4), expected)
    bad = CliRunner().invoke(cli_app, [*args, "--out", str(out), "--asset", "B8A"])
    assert bad.exit_code == 2 and "--asset: give KEY=VALUE, e.g. --asset B8A=nir08" in bad.output
