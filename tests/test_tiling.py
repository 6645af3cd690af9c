"""The tile stage on real GeoTIFFs and a real Dask cluster: chips, alignment, index, stats, re-runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from distributed import Client, LocalCluster
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform, transform_bounds
from rasterio.windows import Window
from typer.testing import CliRunner

from geogan.bands import LC, S1, S2
from geogan.cli import app
from geogan.config import TileOptions
from geogan.files import is_temporary
from geogan.geo import write_raster
from geogan.sample import CRS_DEMO
from geogan.tiles import read_tile_index
from geogan.tiling import MAX_CHIPS, MIN_CHIPS, QS, TaskStats, _batches, tile


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def sources(files: dict[str, Path]) -> list[str]:
    return [f"s2={files['s2']}", f"s1={files['s1']}", f"labels={files['lc']}"]


@pytest.fixture(scope="module")
def tiled(tmp_path_factory, scene_files, sen12ms_root, client):
    """The 512 px scene and the SEN12MS folder, tiled once into 128 px chips."""
    out = tmp_path_factory.mktemp("tiles")
    options = TileOptions(sources=[*sources(scene_files), str(sen12ms_root)], out=out, size=128)
    return out, tile(options, client=client, progress=False)


def test_chips_are_pixel_exact_and_georeferenced(tiled, scene_files):
    out, summary = tiled
    assert summary.ok and summary.written == 16 + 8 and summary.dropped == {}
    rng = np.random.default_rng(0)
    for role in ("s2", "s1", "lc"):
        chips = sorted((out / "geogan_scenes" / f"{role}_s2").glob("*.tif"))
        assert len(chips) == 16
        with rasterio.open(scene_files[role]) as src:
            for path in rng.choice(chips, 4, replace=False):
                row, col = (int(t[1:]) for t in path.stem.split("_")[-1].split("-"))
                window = Window(col, row, 128, 128)
                with rasterio.open(path) as chip:
                    np.testing.assert_array_equal(chip.read(), src.read(window=window))
                    assert chip.dtypes == src.dtypes and chip.crs == src.crs
                    assert chip.transform == src.window_transform(window)
                    assert chip.descriptions == src.descriptions
                    assert chip.profile["compress"] == "zstd" and chip.block_shapes[0] == (128, 128)
                    assert (chip.nodata == src.nodata) or (np.isnan(chip.nodata) and np.isnan(src.nodata))


def test_torchgeo_loads_the_chips(tiled):
    from torchgeo.datasets import SEN12MS

    out, summary = tiled
    train, test = SEN12MS(root=out, split="train"), SEN12MS(root=out, split="test")
    counts = json.loads((out / "split.json").read_text())["counts"]
    assert summary.chips == 24 == sum(counts.values())
    assert (len(train), len(test)) == (counts["train"], counts["test"])  # val and gap chips are not listed
    assert len(test) >= 1
    sample = train[0]
    assert sample["image"].shape == (15, 128, 128) and sample["mask"].shape == (128, 128)
    assert int(sample["mask"].min()) >= 1  # IGBP classes; the procedural scenes have no nodata


def test_index_describes_every_chip(tiled):
    out, _ = tiled
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    assert len(index) == 24 * 3 and index["chip"].nunique() == 24
    assert index.crs == CRS.from_epsg(32630)
    for column in ("path", "role", "scene", "split", "row_off", "col_off", "width", "height", "crs"):
        assert index[column].notna().all()
    assert (index.groupby("chip")["split"].nunique() == 1).all()  # one split a chip, on each of its rows
    assert set(index["split"]) == {"train", "val", "test", "gap"}  # overlapping scenes: split by blocks
    classes = [c for c in index.columns if c.startswith("class_")]
    assert classes and (index[classes].sum(axis=1) == 128 * 128).all()  # no nodata in these labels
    for _, row in index.sample(5, random_state=1).iterrows():
        with rasterio.open(out / row["path"]) as chip:
            assert row["geometry"].bounds == pytest.approx(tuple(chip.bounds))
            assert chip.crs.to_string() == row["crs"]
            if row["role"] == "lc":
                values, counts = np.unique(chip.read(1), return_counts=True)
                for v, n in zip(values, counts, strict=True):
                    assert row[f"class_{v}"] == n


def test_stats_match_numpy_over_the_chips(tiled):
    out, _ = tiled
    stats = json.loads((out / "stats.json").read_text())
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    for role in ("s2", "s1"):
        chips = [rasterio.open(out / p).read() for p in index.loc[index["role"] == role, "path"]]
        data = np.concatenate([c.reshape(len(c), -1) for c in chips], axis=1).astype(np.float64)
        s = stats["roles"][role]
        assert s["bands"] == list((S2 if role == "s2" else S1).band_names)
        np.testing.assert_array_equal(s["count"], np.isfinite(data).sum(1))
        np.testing.assert_allclose(s["mean"], data.mean(1), rtol=1e-9)
        np.testing.assert_allclose(s["std"], data.std(1), rtol=1e-6)
        np.testing.assert_array_equal(s["min"], data.min(1))
        np.testing.assert_array_equal(s["max"], data.max(1))
        spread = data.max(1) - data.min(1)
        for key, q in (("p01", 1), ("p99", 99)):
            assert np.all(np.abs(np.array(s[key]) - np.percentile(data, q, axis=1)) <= 0.02 * spread)
    assert stats["roles"]["s2"]["nodata"] == 0 and "merge_percentiles" in stats["percentile_method"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("n", [1, 2, 7, 65536])
def test_chip_statistics_equal_numpys_on_the_valid_pixels(dtype, n):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else np.finfo(dtype)
    band = np.random.default_rng(n).uniform(info.min / 2, info.max / 2, n).astype(dtype)
    nodata = band[0] if n > 1 else 0  # n > 1: the first value (and its repeats) is nodata
    values = band[band != nodata].astype(np.float64)
    stats = TaskStats()
    stats.add(stats.count(band[None], nodata))  # one chip of one band
    found = {k: v[0] for k, v in stats.result().items()}
    assert found["n"] == values.size
    if values.size:
        np.testing.assert_allclose(
            [found["mean"], found["m2"] / found["n"]], [values.mean(), values.var()], rtol=1e-9
        )
        assert (found["min"], found["max"]) == (values.min(), values.max())
        np.testing.assert_allclose(found["q"], np.percentile(values, QS), rtol=1e-12)
    empty = TaskStats()
    empty.add(empty.count(np.full((1, n), nodata, dtype), nodata))
    assert empty.result()["n"][0] == 0  # all nodata: no values


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_task_statistics_over_chips_equal_numpys_over_their_valid_pixels(dtype):
    """A task's histogram (integers) or merged chip partials (floats) against NumPy on all its chips.

    The chips' value ranges rise and fall, so the task's histogram both grows and takes shorter ones."""
    rng = np.random.default_rng(1)
    chips = [rng.normal(1000 * (i + 1), 200, (2, 32, 32)).astype(dtype) for i in (2, 0, 4, 1, 3)]
    chips[2][:, :8] = 7  # nodata
    stats = TaskStats()
    for chip in chips:
        counted = stats.count(chip, 7)
        # nodata pixels over the bands, which let a chip skip its validity mask: integers only
        assert counted.nodata_pixels == (None if dtype is np.float32 else int((chip == 7).sum()))
        stats.add(counted)
    found = stats.result()
    for b in range(2):
        values = np.concatenate([c[b].ravel() for c in chips]).astype(np.float64)
        values = values[values != 7]
        assert found["n"][b] == values.size
        np.testing.assert_allclose(found["mean"][b], values.mean(), rtol=1e-9)
        np.testing.assert_allclose(found["m2"][b] / found["n"][b], values.var(), rtol=1e-9)
        assert (found["min"][b], found["max"][b]) == (values.min(), values.max())
        if dtype is np.float32:  # chips' percentiles merged: within a few values of the exact ones
            np.testing.assert_allclose(found["q"][b], np.percentile(values, QS), atol=30)
        else:
            np.testing.assert_allclose(found["q"][b], np.percentile(values, QS), rtol=1e-12)
    assert TaskStats().result() is None  # a task whose chips were all dropped


@pytest.mark.parametrize(
    ("block", "per_task"),
    [((512, 512), [8]), ((1024, 1024), [16]), ((128, 128), [8]), ((1, 4096), [16]), ((1, 20000), [64, 14])],
)
def test_tasks_hold_the_chips_of_whole_source_blocks(block, per_task):
    """Each source block is decompressed by one task; tasks hold MIN_CHIPS to MAX_CHIPS chips."""
    width = block[1] if block[1] > 4096 else 4096
    rows, cols = list(range(0, 4096 - 255, 256)), list(range(0, width - 255, 256))
    batches = _batches(rows, cols, block)
    assert sorted(w for b in batches for w in b) == [(r, c) for r in rows for c in cols]  # each chip once
    assert sorted({len(b) for b in batches}, reverse=True) == per_task
    assert all(MIN_CHIPS <= len(b) <= MAX_CHIPS for b in batches)
    if block[0] >= 256:  # chips no taller than a block: no block is read by two tasks
        blocks = [{(r // block[0], c // block[1]) for r, c in b} for b in batches]
        assert sum(map(len, blocks)) == len(set().union(*blocks))


def test_tasks_never_exceed_max_chips():
    """A strip row of 66 chips: 64 in one task, and the 2 left over go alone rather than overfill."""
    cols = list(range(0, 66 * 256, 256))
    batches = _batches([0, 256], cols, (1, 66 * 256))
    assert [len(b) for b in batches] == [64, 2, 64, 2]
    assert sorted(w for b in batches for w in b) == [(r, c) for r in (0, 256) for c in cols]


def test_rerun_skips_what_is_done(tiled, scene_files, sen12ms_root, client):
    out, first = tiled
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    options = TileOptions(sources=[*sources(scene_files), str(sen12ms_root)], out=out, size=128)
    again = tile(options, client=client, progress=False)
    assert again.written == 0 and again.skipped == first.written and again.chips == first.chips
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == mtimes
    assert again.seconds < first.seconds


def test_zstd_level_changes_file_sizes_not_pixels_and_retiles(tmp_path, scene_files, client):
    """--zstd-level: the same pixels in smaller files at a higher level; a changed level re-tiles."""
    sizes, pixels = {}, {}
    for level in (1, 12):
        out = tmp_path / f"level{level}"
        summary = tile(
            TileOptions(sources=[f"s2={scene_files['s2']}"], out=out, size=128, zstd_level=level),
            client=client,
            progress=False,
        )
        assert summary.ok and summary.written == 16
        chips = sorted(out.rglob("*_s2_*.tif"))
        sizes[level] = sum(p.stat().st_size for p in chips)
        pixels[level] = []
        for path in chips:
            with rasterio.open(path) as chip:
                pixels[level].append(chip.read())
    assert sizes[12] < 0.99 * sizes[1], sizes
    for a, b in zip(pixels[1], pixels[12], strict=True):
        np.testing.assert_array_equal(a, b)
    options = TileOptions(
        sources=[f"s2={scene_files['s2']}"], out=tmp_path / "level1", size=128, zstd_level=12
    )
    again = tile(options, client=client, progress=False)
    assert again.written == 16 and again.skipped == 0
    assert sum(p.stat().st_size for p in (tmp_path / "level1").rglob("*_s2_*.tif")) == sizes[12]


def _linear_s1(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth S1 field in dB, so bilinear resampling of it is exact up to rounding."""
    return np.stack([-15 + (x - 440_000) / 2000, -22 + (6_490_000 - y) / 3000]).astype(np.float32)


def test_s1_and_labels_are_aligned_onto_the_s2_grid(tmp_path, scene_files, client):
    with rasterio.open(scene_files["s2"]) as s2:
        s2_transform, crs = s2.transform, s2.crs
    # S1 at 20 m in UTM 31N over a larger area; labels at 30 m, shifted, in UTM 30N.
    utm31 = CRS.from_epsg(32631)
    left, bottom, right, top = transform_bounds(crs, utm31, 439_000, 6_483_000, 446_500, 6_491_000)
    t31 = Affine(20, 0, left, 0, -20, top)
    w, h = int((right - left) / 20), int((top - bottom) / 20)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x31, y31 = t31 * (cols, rows)
    x30, y30 = transform(utm31, crs, x31.ravel(), y31.ravel())
    s1 = _linear_s1(np.reshape(x30, (h, w)), np.reshape(y30, (h, w)))
    write_raster(tmp_path / "s1_utm31.tif", s1, S1, t31, crs=utm31)
    t_lc = Affine(30, 0, 439_993, 0, -30, 6_490_013)  # no S2 pixel centre on a cell edge
    lc_cells = (np.arange(300)[:, None] * 7 + np.arange(300)[None, :]) % 17 + 1
    write_raster(tmp_path / "lc30.tif", np.repeat(lc_cells[None].astype(np.uint8), 4, 0), LC, t_lc, CRS_DEMO)
    out = tmp_path / "out"
    srcs = [f"s2={scene_files['s2']}", f"s1={tmp_path / 's1_utm31.tif'}", f"labels={tmp_path / 'lc30.tif'}"]
    summary = tile(TileOptions(sources=srcs, out=out, size=256, min_valid=0.0), client=client, progress=False)
    assert summary.ok and summary.written == 4
    for role, band_count in (("s1", 2), ("lc", 4)):
        path = out / f"geogan_scenes/{role}_s2/geogan_scenes_{role}_s2_r256-c0.tif"
        with rasterio.open(path) as chip:
            assert chip.crs == crs and chip.transform == s2_transform * Affine.translation(0, 256)
            data = chip.read()
            assert data.shape == (band_count, 256, 256)
            cols, rows = np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5)
            x, y = chip.transform * (cols, rows)
            if role == "s1":
                inner = (slice(None), slice(2, -2), slice(2, -2))
                np.testing.assert_allclose(data[inner], _linear_s1(x, y)[inner], atol=0.02)
            else:
                c, r = ~t_lc * (x, y)
                np.testing.assert_array_equal(data[0], lc_cells[r.astype(int), c.astype(int)])


def test_edge_pad_and_min_valid(tmp_path, scene_files, client):
    options = TileOptions(sources=sources(scene_files), out=tmp_path, size=200, edge="pad", min_valid=0.5)
    summary = tile(options, client=client, progress=False)
    # 512 px: origins 0, 200, 400; chips at 400 are 112/200 = 56 % valid in one direction.
    assert summary.written == 4 + 4 and summary.dropped == {"nodata (s2)": 1}
    with rasterio.open(tmp_path / "geogan_scenes/s2_s2/geogan_scenes_s2_s2_r400-c0.tif") as chip:
        data = chip.read()
    assert data.shape == (13, 200, 200) and (data[:, 112:] == 0).all() and (data[:, :112] > 0).all()
    index = read_tile_index(tmp_path)
    valid = index[index.role == "s2"].set_index("chip")["valid_fraction"]
    assert valid["geogan_scenes_s2_r400-c0"] == 0.56 and valid["geogan_scenes_s2_r0-c0"] == 1.0
    dropped = tile(
        options.model_copy(update={"edge": "drop", "out": tmp_path / "d"}), client=client, progress=False
    )
    assert dropped.written == 4 and dropped.dropped == {"edge": 5}


def test_killed_run_recovers(tmp_path, scene_files):
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "geogan",
        "tile",
        *sources(scene_files),
        "--out",
        str(out),
        "--size",
        "64",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    records = out / ".geogan" / "tasks"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its Dask worker processes, at once
    proc.wait()
    assert not (out / "index.gpkg").exists(), "the run ended before it was killed"
    result = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    assert len(index) == 64 * 3 and index["path"].is_unique
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.tif"))
    assert files == sorted(index["path"]) and not [p for p in out.rglob("*") if is_temporary(p)]
    with rasterio.open(scene_files["s2"]) as src:
        whole = src.read()
    for path in index.loc[index["role"] == "s2", "path"]:
        with rasterio.open(out / path) as chip:
            r, c = chip.transform.f, chip.transform.c
            row, col = int(round((src.transform.f - r) / 10)), int(round((c - src.transform.c) / 10))
            np.testing.assert_array_equal(chip.read(), whole[:, row : row + 64, col : col + 64])


def test_bad_inputs_fail_by_name_and_the_rest_goes_on(tmp_path, scene_files):
    with rasterio.open(scene_files["s2"]) as src:
        s2, transform = src.read(), src.transform
    bad = {}
    bad["not_raster"] = tmp_path / "not_raster.tif"
    bad["not_raster"].write_text("this is not a GeoTIFF\n")
    bad["truncated"] = write_raster(tmp_path / "truncated.tif", s2, S2, transform, CRS_DEMO)
    with open(bad["truncated"], "r+b") as f:
        f.truncate(bad["truncated"].stat().st_size // 2)
    bad["no_crs"] = tmp_path / "no_crs.tif"
    with rasterio.open(
        bad["no_crs"], "w", driver="GTiff", width=512, height=512, count=13, dtype="uint16"
    ) as dst:
        dst.write(s2)
    bad["three_bands"] = tmp_path / "three_bands.tif"
    profile = dict(driver="GTiff", width=512, height=512, count=3, dtype="uint16", crs="EPSG:32630")
    with rasterio.open(bad["three_bands"], "w", transform=transform, **profile) as dst:
        dst.write(s2[:3])
    bad["empty"] = write_raster(tmp_path / "empty.tif", np.zeros_like(s2), S2, transform, CRS_DEMO)
    near = write_raster(tmp_path / "near.tif", s2, S2, transform, CRS_DEMO)
    with rasterio.open(scene_files["s1"]) as src:
        bad["far_s1"] = write_raster(
            tmp_path / "far_s1.tif", src.read(), S1, transform * Affine.translation(20_000, 0), CRS_DEMO
        )
    args = [
        "tile",
        *sources(scene_files),
        *[f"s2={bad[k]}" for k in bad if k != "far_s1"],
        f"s2={near}",
        f"s1={bad['far_s1']}",
        "--out",
        str(tmp_path / "out"),
        "--size",
        "128",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    errors = {Path(f["path"]).stem: f["error"] for f in failures}
    assert set(errors) == set(bad)
    assert "not a raster" in errors["not_raster"] and "no CRS" in errors["no_crs"]
    assert "13 bands" in errors["three_bands"] and "has 3" in errors["three_bands"]
    assert "nodata" in errors["empty"] and str(near) in errors["far_s1"] and "overlap" in errors["far_s1"]
    for name, error in errors.items():
        assert str(bad[name]) in error
    index = gpd.read_file(tmp_path / "out" / "index.gpkg", layer="tiles")
    assert set(index["scene"]) == {"s2"} and len(index) == 16 * 3  # the good scene went on


def test_out_of_range_zstd_level_names_the_option(tmp_path, scene_files):
    result = CliRunner().invoke(
        app, ["tile", *sources(scene_files), "--out", str(tmp_path), "--zstd-level", "0"]
    )
    assert result.exit_code == 2
    assert "--zstd-level: Input should be greater than or equal to 1" in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())  # nothing written


def test_unwritable_output_folder_is_a_clear_error(tmp_path, scene_files):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["tile", *sources(scene_files), "--out", str(blocker / "out")])
    assert result.exit_code == 2
    assert f"{blocker / 'out'}: cannot write here (Not a directory)" in " ".join(result.output.split())


@pytest.mark.shared_data
def test_real_data_tiles_pixel_exact(shared_data, tmp_path, client):
    """Real Sentinel-2 from GEOGAN_SHARED_DATA: a SEN12MS-layout folder, else 13-band GeoTIFFs."""
    roots = sorted({p.parents[2] for p in shared_data.rglob("ROIs*/s2_*/*.tif")})
    if roots:
        sources_ = [str(roots[0])]
    else:
        scenes = []
        for path in sorted(shared_data.rglob("*.tif"))[:50]:
            with rasterio.open(path) as ds:
                if ds.count == 13 and ds.crs is not None and min(ds.shape) >= 256:
                    scenes.append(path)
        if not scenes:
            pytest.skip(f"no SEN12MS folder or 13-band GeoTIFF of 256 px or more in {shared_data}")
        sources_ = [f"s2={scenes[0]}"]
    summary = tile(
        TileOptions(sources=sources_, out=tmp_path, size=256, min_valid=0.0), client=client, progress=False
    )
    assert summary.ok and summary.written > 0, summary
    index = gpd.read_file(tmp_path / "index.gpkg", layer="tiles")
    for row in index[index.role == "s2"].head(5).itertuples():
        with rasterio.open(tmp_path / row.path) as chip:
            source = chip.tags()["GEOGAN_SOURCE"]
            with rasterio.open(source) as src:
                window = Window(row.col_off, row.row_off, row.width, row.height)
                np.testing.assert_array_equal(chip.read(), src.read(window=window))
                assert chip.transform == src.window_transform(window) and chip.crs == src.crs
