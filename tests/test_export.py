"""geogan.export: COG pairs, styles, index, VRT mosaics and STAC, written for real and read back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from distributed import Client, LocalCluster, get_task_stream
from pystac.extensions.projection import ProjectionExtension
from qgis_tools import needs_qgis, run_algorithm, unique_values
from rasterio.crs import CRS
from rasterio.transform import Affine, array_bounds
from rasterio.windows import from_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box
from torchgeo.datasets import RasterDataset

import geogan
from geogan import export, geo
from geogan.bands import S2
from geogan.files import temporary_name
from geogan.labels import IGBP

SIZE = 64
UTM30 = CRS.from_epsg(32630)
UTM29 = CRS.from_epsg(32629)
REAL_BOUNDS = (440_000.0, 6_480_000.0, 450_240.0, 6_490_000.0)
PROVENANCE = export.Provenance("spade", "0123456789abcdef" * 4, IGBP)


def make_pair(i: int, crs: CRS, transform: Affine, source_chip: str | None = None) -> export.Pair:
    rng = np.random.default_rng(i)
    image = rng.integers(0, 6000, (S2.count, SIZE, SIZE)).astype(np.uint16)
    mask = rng.choice([1, 10, 11, 17], (SIZE, SIZE)).astype(np.uint8)
    mask[:4, :4] = 0  # a corner of nodata
    return export.Pair(f"syn_{i:06d}", image, mask, crs, transform, seed=100 + i, source_chip=source_chip)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def exported(tmp_path_factory, client):
    """Four pairs on the default synthetic grid (UTM 30N) and one conditional pair in UTM 29N."""
    out = tmp_path_factory.mktemp("export")
    grid = geo.chips_beside(4, SIZE, 10.0, UTM30, REAL_BOUNDS)
    pairs = [make_pair(i, grid.crs, t) for i, t in enumerate(grid.transforms)]
    pairs.append(
        make_pair(4, UTM29, Affine(10.0, 0, 500_000.0, 0, -10.0, 6_400_000.0), "ROIs1158_spring_lc_1_p1")
    )
    written = export.write_pairs(out, [pairs[:3], pairs[3:]], PROVENANCE, client, total=len(pairs))
    collections = export.write_collections(out, PROVENANCE)
    return out, pairs, written, collections


def expected_image(pair: export.Pair) -> np.ndarray:
    """The image as written: whole (under the mask's nodata corner too), 0 (nodata) raised to 1."""
    return np.maximum(pair.image, 1)


def test_pairs_are_valid_cogs_that_read_back(exported):
    out, pairs, written, _ = exported
    assert written == len(pairs)
    for pair in pairs:
        image_path, mask_path = export.pair_paths(out, pair.id)
        for path in (image_path, mask_path):
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, errors
        with rasterio.open(image_path) as src:
            assert src.crs == pair.crs and src.transform == pair.transform
            assert src.descriptions == S2.band_names
            assert src.dtypes[0] == "uint16" and src.nodata == 0
            assert src.overviews(1) == [2]
            np.testing.assert_array_equal(src.read(), expected_image(pair))
            assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"  # every reader decodes it
            tags = src.tags()
        assert tags["OVERVIEW_RESAMPLING"] == "AVERAGE"
        assert tags["GEOGAN_SYNTHETIC"] == "true"
        assert tags["GEOGAN_VERSION"] == geogan.__version__
        assert tags["GEOGAN_MODEL"] == "spade"
        assert tags["GEOGAN_CHECKPOINT_SHA256"] == PROVENANCE.checkpoint_sha256
        assert tags["GEOGAN_SEED"] == str(pair.seed)
        assert tags.get("GEOGAN_SOURCE_CHIP") == pair.source_chip
        with rasterio.open(mask_path) as src:
            assert src.crs == pair.crs and src.transform == pair.transform
            assert src.dtypes[0] == "uint8" and src.nodata == 0
            np.testing.assert_array_equal(src.read(1), pair.mask)
            overview = src.read(1, out_shape=(SIZE // 2, SIZE // 2))
            assert set(np.unique(overview)) <= set(np.unique(pair.mask))  # MODE: classes, never blends
            cmap = src.colormap(1)
            assert src.tags()["GEOGAN_SCHEME"] == "igbp"
            assert src.tags()["OVERVIEW_RESAMPLING"] == "MODE"
        for value, rgba in IGBP.colormap().items():
            assert cmap[value] == rgba


def test_mask_side_cars_name_the_classes(exported):
    out, pairs, _, _ = exported
    _, mask_path = export.pair_paths(out, pairs[0].id)
    aux = ET.parse(f"{mask_path}.aux.xml").getroot()
    categories = [c.text or "" for c in aux.iter("Category")]
    assert categories[17] == "Water Bodies" and categories[0] == ""
    rows = {int(r[0].text): r[1].text for r in ([f for f in row] for row in aux.iter("Row"))}
    assert rows == {c.value: c.name for c in IGBP.classes}
    qml = ET.parse(mask_path.with_suffix(".qml")).getroot()
    renderer = qml.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted"
    entries = {int(e.get("value")): (e.get("label"), e.get("color")) for e in renderer.iter("paletteEntry")}
    assert entries[11] == ("Permanent Wetlands", "#27ff87") and len(entries) == len(IGBP)


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) is not installed")
def test_gdal_reads_category_names_and_attribute_table(exported):
    out, pairs, _, _ = exported
    _, mask_path = export.pair_paths(out, pairs[0].id)
    info = json.loads(
        subprocess.run(
            ["gdalinfo", "-json", str(mask_path)], check=True, capture_output=True, text=True
        ).stdout
    )
    band = info["bands"][0]
    assert band["categories"][11] == "Permanent Wetlands"
    assert [f["name"] for f in info["rat"]["fieldDefn"]] == [
        "Value",
        "Class",
        "Red",
        "Green",
        "Blue",
        "Alpha",
    ]


def test_rerun_skips_written_pairs_and_replaces_leftovers(exported, client):
    out, pairs, _, _ = exported
    image_path, _ = export.pair_paths(out, pairs[0].id)
    before = image_path.stat().st_mtime_ns
    assert export.write_pairs(out, [pairs], PROVENANCE, client) == 0
    assert image_path.stat().st_mtime_ns == before
    # A crash mid-write leaves only a temporary file, which does not count as written.
    extra = make_pair(9, UTM30, geo.chips_beside(1, SIZE, 10.0, UTM30, REAL_BOUNDS).transforms[0])
    new_image, _ = export.pair_paths(out / "rerun", extra.id)
    new_image.parent.mkdir(parents=True)
    temporary_name(new_image).write_bytes(b"half a file")
    assert not export.pair_written(out / "rerun", extra.id)
    assert export.write_pair(out / "rerun", extra, PROVENANCE)
    assert cog_validate(str(new_image), quiet=True)[0]


def test_a_batch_larger_than_the_cluster_is_spread_over_its_threads(tmp_path, client):
    """One model batch of 5 pairs on 2 worker threads: two write tasks (3 + 2 pairs), not one, so a
    large batch keeps every worker busy (a GPU batch of 64 once kept 8 of 12 workers so)."""
    grid = geo.chips_beside(5, SIZE, 10.0, UTM30, REAL_BOUNDS)
    pairs = [make_pair(i, grid.crs, t) for i, t in enumerate(grid.transforms)]
    with get_task_stream(client) as stream:
        assert export.write_pairs(tmp_path, [[], pairs, []], PROVENANCE, client) == 5  # empty: none
    tasks = [t for t in stream.data if "write_batch" in str(t["key"])]
    assert len(tasks) == 2
    assert all(export.pair_paths(tmp_path, p.id)[0].is_file() for p in pairs)


def test_bad_mask_values_are_refused_before_anything_is_written(tmp_path):
    mask = np.full((SIZE, SIZE), 99, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"mask\.tif: mask values \[99\] are not classes of scheme 'igbp'"):
        export.write_mask(tmp_path / "mask.tif", mask, UTM30, Affine(10, 0, 0, 0, -10, 0), IGBP)
    assert list(tmp_path.iterdir()) == []


def test_image_only_samples_export_without_masks(tmp_path):
    """MSG-StyleGAN samples have no mask: images, index, mosaic and STAC still come out."""
    grid = geo.chips_beside(2, SIZE, 10.0, UTM30, REAL_BOUNDS)
    for i, t in enumerate(grid.transforms):
        pair = make_pair(i, UTM30, t)
        assert export.write_pair(
            tmp_path, export.Pair(pair.id, pair.image, None, UTM30, t, seed=i), PROVENANCE
        )
    assert not (tmp_path / "masks").exists()
    collections = export.write_collections(tmp_path, PROVENANCE)
    assert [p.name for p in collections["mosaics"]] == ["images_EPSG_32630.vrt"]
    with rasterio.open(tmp_path / "images" / "syn_000000.tif") as src:
        np.testing.assert_array_equal(
            src.read(), np.maximum(make_pair(0, UTM30, grid.transforms[0]).image, 1)
        )
    assert list(gpd.read_file(tmp_path / "index.gpkg")["mask"]) == ["", ""]
    assert export.validate_stac(collections["stac"][0]) == 3
    item = next(pystac.Catalog.from_file(str(collections["stac"][0])).get_items(recursive=True))
    assert set(item.assets) == {"image"}


def test_synthetic_grid_lies_clear_of_the_real_chips():
    grid = geo.chips_beside(5, 256, 10.0, UTM30, REAL_BOUNDS)
    real = box(*REAL_BOUNDS)
    footprints = [box(*array_bounds(256, 256, t)) for t in grid.transforms]
    assert all(not f.intersects(real) for f in footprints)
    assert min(f.bounds[0] for f in footprints) >= REAL_BOUNDS[2] + 4 * 2560
    tops = sorted({t.f for t in grid.transforms}, reverse=True)
    assert len(tops) == 2 and tops[0] - tops[1] == 2560  # rows of 3 then 2, chips edge to edge
    assert [t.c for t in grid.transforms[:3]] == [grid.transforms[0].c + k * 2560 for k in range(3)]


def test_aoi_grid_lays_chips_in_rows_over_the_aoi(tmp_path):
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(-3.5, 58.40, -3.45, 58.42)], crs="EPSG:4326").to_file(aoi)
    grid = geo.aoi_chips(aoi, n=6, size=64, resolution=10.0, crs="EPSG:32630")
    assert grid.crs == UTM30 and len(grid.transforms) == 6
    area = gpd.read_file(aoi).to_crs(32630).union_all()
    for t in grid.transforms:
        assert box(*array_bounds(64, 64, t)).intersects(area)
        assert t.c % 640 == 0 and t.f % 640 == 0
    assert grid.transforms[0].f >= grid.transforms[-1].f
    with pytest.raises(
        ValueError, match="aoi.gpkg: the AOI holds .* chips of 64 px at 10 m; asked for 100000"
    ):
        geo.aoi_chips(aoi, n=100_000, size=64, resolution=10.0, crs="EPSG:32630")
    with pytest.raises(ValueError, match="aoi.gpkg: chips need a projected CRS"):
        geo.aoi_chips(aoi, n=1, size=64, resolution=10.0)
    with pytest.raises(ValueError, match="missing.gpkg: not a vector file GDAL can read"):
        geo.aoi_chips(tmp_path / "missing.gpkg", n=1, size=64, resolution=10.0, crs="EPSG:32630")


def test_index_lists_every_pair_with_its_footprint(exported):
    out, pairs, _, collections = exported
    assert collections["index"] == [out / "index.gpkg"]
    index = gpd.read_file(out / "index.gpkg", layer="pairs")
    assert index.crs.to_epsg() == 4326  # the pairs lie in two CRSs
    assert list(index["id"]) == [p.id for p in pairs]
    assert index["synthetic"].all() and set(index["model"]) == {"spade"}
    assert list(index["seed"]) == [p.seed for p in pairs]
    assert index.loc[4, "source_chip"] == "ROIs1158_spring_lc_1_p1" and index.loc[0, "source_chip"] == ""
    assert (out / index.loc[0, "image"]).exists() and (out / index.loc[0, "mask"]).exists()
    footprint = gpd.GeoSeries([box(*array_bounds(SIZE, SIZE, pairs[0].transform))], crs=32630).to_crs(4326)
    assert index.geometry[0].equals_exact(footprint[0], tolerance=1e-9)


def test_vrt_mosaics_per_crs_open_and_hold_the_chips(exported):
    out, pairs, _, collections = exported
    names = sorted(p.name for p in collections["mosaics"])
    assert names == [
        "images_EPSG_32629.vrt",
        "images_EPSG_32630.vrt",
        "masks_EPSG_32629.vrt",
        "masks_EPSG_32630.vrt",
    ]
    with (
        rasterio.open(out / "images_EPSG_32630.vrt") as img,
        rasterio.open(out / "masks_EPSG_32630.vrt") as msk,
    ):
        assert img.crs == UTM30 and img.count == 13 and img.descriptions == S2.band_names
        assert (img.width, img.height) == (2 * SIZE, 2 * SIZE)
        assert msk.colormap(1)[17] == IGBP.colormap()[17]
        for pair in pairs[:4]:
            window = from_bounds(*array_bounds(SIZE, SIZE, pair.transform), img.transform)
            np.testing.assert_array_equal(img.read(window=window), expected_image(pair))
            np.testing.assert_array_equal(msk.read(1, window=window), pair.mask)
    assert (out / "masks_EPSG_32630.qml").exists()


def test_stac_catalogue_validates_offline_and_links_the_files(exported):
    out, pairs, _, collections = exported
    catalog_path = collections["stac"][0]
    assert export.validate_stac(catalog_path) == 1 + len(pairs)
    catalog = pystac.Catalog.from_file(str(catalog_path))
    items = sorted(catalog.get_items(recursive=True), key=lambda i: i.id)
    assert [i.id for i in items] == [p.id for p in pairs]
    item = items[0]
    assert ProjectionExtension.ext(item).code == "EPSG:32630"
    assert ProjectionExtension.ext(item).transform == list(pairs[0].transform)[:6]
    assert item.properties["geogan:synthetic"] is True
    image, mask = item.assets["image"], item.assets["mask"]
    assert image.roles == ["data"] and "labels" in mask.roles
    assert image.media_type == pystac.MediaType.COG
    assert [b["name"] for b in image.extra_fields["eo:bands"]] == list(S2.band_names)
    assert {c["value"] for c in mask.extra_fields["classification:classes"]} == set(IGBP.values)
    assert Path(image.get_absolute_href()) == (out / "images" / f"{item.id}.tif").resolve()
    assert Path(mask.get_absolute_href()).exists()
    assert not os.path.isabs(json.loads(Path(item.get_self_href()).read_text())["assets"]["image"]["href"])


class SyntheticImages(RasterDataset):
    filename_glob = "*.tif"
    all_bands = S2.band_names


class SyntheticMasks(RasterDataset):
    filename_glob = "*.tif"
    is_image = False


def test_torchgeo_reads_the_pairs(exported):
    out, pairs, _, _ = exported
    images = SyntheticImages(paths=str(out / "images"), crs=UTM30, res=10.0)
    masks = SyntheticMasks(paths=str(out / "masks"), crs=UTM30, res=10.0)
    data = images & masks
    pair = pairs[1]
    minx, miny, maxx, maxy = array_bounds(SIZE, SIZE, pair.transform)
    sample = data[minx:maxx, miny:maxy]
    np.testing.assert_array_equal(sample["image"].numpy(), expected_image(pair).astype(np.float32))
    np.testing.assert_array_equal(sample["mask"].numpy().squeeze(), pair.mask)


@needs_qgis
def test_qgis_opens_image_and_mask_and_computes_statistics(exported, tmp_path):
    out, pairs, _, _ = exported
    pair = pairs[0]
    image_path, mask_path = export.pair_paths(out, pair.id)
    red = expected_image(pair)[S2.index("B04")]
    stats = run_algorithm("native:rasterlayerstatistics", INPUT=image_path, BAND=4)
    assert stats["MIN"] == red[red > 0].min() and stats["MAX"] == red.max()
    assert stats["MEAN"] == pytest.approx(red[red > 0].mean())
    report, counts = unique_values(mask_path, tmp_path / "classes.csv")
    assert report["CRS_AUTHID"] == "EPSG:32630" and report["NODATA_PIXEL_COUNT"] == 16
    values, expected = np.unique(pair.mask[pair.mask > 0], return_counts=True)
    assert counts == dict(zip(values.tolist(), expected.tolist(), strict=True))


def _pyqgis() -> bool:
    python = Path("/usr/bin/python3")
    return (
        python.exists()
        and subprocess.run([python, "-c", "import qgis.core"], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(
    not _pyqgis(), reason="PyQGIS is missing (Debian package python3-qgis, installed with qgis)"
)
def test_qgis_styles_the_layers_from_their_qml(exported):
    out, pairs, _, _ = exported
    image_path, mask_path = export.pair_paths(out, pairs[0].id)
    script = f"""
from qgis.core import QgsApplication, QgsRasterLayer
app = QgsApplication([], False)
app.initQgis()
mask = QgsRasterLayer({str(mask_path)!r}, "mask")
image = QgsRasterLayer({str(image_path)!r}, "image")
vrt = QgsRasterLayer({str(out / "masks_EPSG_32630.vrt")!r}, "mosaic")
print(mask.isValid(), image.isValid(), vrt.isValid(), mask.crs().authid())
print(mask.renderer().type(), vrt.renderer().type(), image.renderer().type(), image.renderer().redBand())
print("|".join(c.label for c in mask.renderer().classes()))
"""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        ["/usr/bin/python3", "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    valid, renderers, labels = run.stdout.strip().splitlines()[-3:]
    assert valid == "True True True EPSG:32630"
    assert renderers == "paletted paletted multibandcolor 4"
    assert labels.split("|") == list(IGBP.names)
