"""Class schemes and labels from the analyst's polygons, burned onto a real tile folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from procedural import make_tiles
from shapely.geometry import Point, Polygon, box
from typer.testing import CliRunner

from geogan.cli import app
from geogan.datasets import ChipDataset
from geogan.labels import (
    DFC2020,
    IGBP,
    IGBP_TO_DFC2020,
    ClassScheme,
    class_value,
    convert,
    rasterize,
    read_tile_index,
    scheme,
    twin_path,
)

PEAT_YAML = """\
name: peat
classes:
  - {id: 1, name: peat, colour: "#7a4b2a"}
  - {id: 2, name: forest, colour: "#0b6e1f"}
  - {id: 3, name: other, colour: "#d8d8d8"}
"""

# Polygons in UTM 30N metres; the file holds them in WGS84 so they must be reprojected.
A = box(440_100, 6_489_700, 440_300, 6_489_900)  # peat, by name, scene 1
B = box(443_900, 6_489_000, 444_200, 6_489_300)  # forest, by id, scene 2
C = box(440_500, 6_489_100, 440_600, 6_489_200)  # "swamp": not a class of the scheme
D = box(500_000, 6_400_000, 500_100, 6_400_100)  # far away: touches no chip
E = Polygon(
    [(440_700, 6_489_300), (440_900, 6_489_500), (440_900, 6_489_300), (440_700, 6_489_500)]
)  # bow-tie
F = Point(440_050, 6_489_050)  # not a polygon


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tile folder of 2 scenes (32 chips), a polygon GeoPackage in EPSG:4326 and a peat scheme."""
    root = tmp_path_factory.mktemp("labels")
    tiles = make_tiles(root, scenes=2, seed=5)
    polygons = root / "polygons.gpkg"
    frame = gpd.GeoDataFrame(
        {"landcover": ["Peat", "2", "swamp", "peat", "forest", "peat"]},
        geometry=[A, B, C, D, E, F],
        crs=32630,
    )
    frame.to_crs(4326).to_file(polygons, layer="labels")
    peat = root / "peat.yaml"
    peat.write_text(PEAT_YAML)
    return tiles, polygons, peat


@pytest.fixture(scope="module")
def burned(setup):
    tiles, polygons, peat = setup
    gpd.GeoDataFrame({"note": ["kept"]}, geometry=[box(0, 0, 1, 1)], crs=4326).to_file(
        tiles / "index.gpkg", layer="analyst_notes"
    )
    return rasterize(polygons, tiles, "landcover", scheme=peat)


def _value_at(tiles: Path, x: float, y: float, role: str = "mask") -> int:
    index = read_tile_index(tiles)
    s2 = index[(index.role == "s2") & index.contains(Point(x, y))].iloc[0]
    with rasterio.open(tiles / twin_path(s2.path, role)) as src:
        return int(next(src.sample([(x, y)]))[0])


# -- schemes --------------------------------------------------------------------------------------


def test_class_values_from_ids_or_names():
    assert class_value("Croplands", IGBP) == class_value("croplands ", IGBP) == 12
    assert class_value(12, IGBP) == class_value("12", IGBP) == class_value(12.0, IGBP) == 12
    assert class_value(18, IGBP) is None and class_value("swamp", IGBP) is None
    assert class_value(None, IGBP) is None and class_value(float("nan"), IGBP) is None
    assert class_value(3.5, DFC2020) is None


def test_igbp_to_dfc2020_is_the_published_mapping():
    assert set(IGBP_TO_DFC2020) == set(IGBP.values) and set(IGBP_TO_DFC2020.values()) == set(DFC2020.values)
    igbp = np.arange(18, dtype=np.uint8)
    dfc = convert(igbp, IGBP, DFC2020)
    assert dfc.tolist() == [0, 1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 6, 8, 9, 10]
    np.testing.assert_array_equal(convert(igbp, IGBP, IGBP), igbp)
    with pytest.raises(ValueError, match="no mapping from class scheme 'dfc2020' to 'igbp'"):
        convert(igbp, DFC2020, IGBP)


def test_custom_scheme_from_yaml(setup):
    peat = scheme(setup[2])
    assert isinstance(peat, ClassScheme) and peat.name == "peat" and peat.names == ("peat", "forest", "other")
    assert peat.by_name("Forest").rgb == (11, 110, 31)
    np.testing.assert_array_equal(peat.to_index(np.array([0, 1, 2, 3, 9])), [-1, 0, 1, 2, -1])


# -- rasterising polygons -------------------------------------------------------------------------


def test_pixels_under_a_polygon_carry_its_class_and_others_background(setup, burned):
    tiles = setup[0]
    assert _value_at(tiles, 440_200, 6_489_800) == 1  # inside A (peat, given by name)
    assert _value_at(tiles, 444_050, 6_489_150) == 2  # inside B (forest, given as "2")
    assert _value_at(tiles, 440_730, 6_489_400) == 2  # inside the repaired bow-tie E
    assert _value_at(tiles, 440_050, 6_489_950) == 0  # outside every polygon: unlabelled
    assert _value_at(tiles, 440_550, 6_489_150) == 0  # under C, whose class is unknown: not burned
    # A covers 20 x 20 pixels of 10 m; every one of them is peat, whatever chips it spans
    total = 0
    index = read_tile_index(tiles)
    for path in index[index.role == "mask"].path:
        with rasterio.open(tiles / path) as src:
            total += int((src.read(1) == 1).sum())
    assert total == 400


def test_problems_are_reported_not_dropped_silently(setup, burned):
    tiles = setup[0]
    assert burned.burned == 3 and burned.written == 32 and burned.up_to_date == 0
    assert burned.outside == [4]
    assert burned.unknown == [(3, "swamp")]
    assert [fid for fid, _ in burned.invalid] == [5, 6]
    assert "Self-intersection" in burned.invalid[0][1] and "repaired" in burned.invalid[0][1]
    assert "not a polygon (Point): skipped" in burned.invalid[1][1]
    assert (tiles / "rasterize_report.json").read_text() == burned.to_json()


def test_mask_chips_sit_on_their_image_grid_with_colours_and_join_the_index(setup, burned):
    tiles, _, peat = setup
    index = read_tile_index(tiles)
    masks = index[index.role == "mask"]
    assert len(masks) == index[index.role == "s2"].chip.nunique() == 32
    assert set(masks.chip) == set(index[index.role == "s2"].chip)
    assert len(index[index.role == "lc"]) == 32  # the tile stage's rows are untouched
    assert "analyst_notes" in pyogrio.list_layers(tiles / "index.gpkg")[:, 0]  # other layers kept
    row = masks[masks.class_1 > 0].iloc[0]
    s2_path = index[(index.chip == row.chip) & (index.role == "s2")].path.iloc[0]
    with rasterio.open(tiles / row.path) as mask, rasterio.open(tiles / s2_path) as image:
        assert mask.crs == image.crs and mask.transform == image.transform and mask.shape == image.shape
        assert mask.dtypes[0] == "uint8" and mask.nodata == 0 and mask.tags()["GEOGAN_SCHEME"] == "peat"
        assert mask.colormap(1)[1] == (122, 75, 42, 255)
        data = mask.read(1)
    assert row.class_1 == (data == 1).sum() and row.labelled_fraction == (data != 0).mean()
    assert row.split in {"train", "val", "test", "gap"}  # the chip's split, as on its image rows
    assert row.geometry.equals(index[(index.chip == row.chip) & (index.role == "s2")].geometry.iloc[0])

    ds = ChipDataset(tiles, scheme=peat, mask_role="mask")
    item = ds[ds.chips.index(row.chip)]
    assert ds.num_classes == 3
    np.testing.assert_array_equal(item["mask"].numpy(), data.astype(np.int64) - 1)  # peat ids 1..3 -> 0..2
    with pytest.raises(ValueError, match="holds peat classes"):
        ChipDataset(tiles, scheme="igbp", mask_role="mask")


def test_rerun_skips_burned_chips_and_new_options_rewrite_them(setup, burned, tmp_path):
    tiles = shutil.copytree(setup[0], tmp_path / "tiles")
    again = rasterize(setup[1], tiles, "landcover", scheme=setup[2])
    assert again.written == 0 and again.up_to_date == 32
    index = read_tile_index(tiles)
    assert (index.role == "mask").sum() == 32  # no duplicated rows
    other = rasterize(setup[1], tiles, "landcover", scheme=setup[2], background="other")
    assert other.written == 32
    assert _value_at(tiles, 440_050, 6_489_950) == 3 and _value_at(tiles, 440_200, 6_489_800) == 1


def test_cli_rasterize_prints_a_summary_and_refuses_bad_input(setup, tmp_path):
    tiles = shutil.copytree(setup[0], tmp_path / "tiles")
    runner = CliRunner()
    args = ["labels", "rasterize", str(setup[1]), "--tiles", str(tiles), "--scheme", str(setup[2])]
    result = runner.invoke(app, [*args, "--column", "landcover"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "mask chips written" in text and "3: swamp" in text and "touching no chip (FID): 4" in text
    assert (tiles / "ROIs1158_spring" / "mask_1").is_dir()
    result = runner.invoke(app, [*args, "--column", "nope"])
    assert result.exit_code == 2
    assert "no column 'nope'" in " ".join(result.output.split())
    assert "polygons.gpkg" in " ".join(result.output.split())
    result = runner.invoke(app, [*args, "--column", "landcover", "--background", "bog"])
    assert result.exit_code == 2 and "background 'bog'" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["labels", "rasterize", str(setup[1]), "--tiles", str(tmp_path), "--column", "x"]
    )
    assert result.exit_code == 2 and "no tile index" in " ".join(result.output.split())  # rich wraps lines


def test_custom_scheme_runs_through_train_generate_and_evaluate(setup, tmp_path):
    """The analyst's own scheme (a YAML) from rasterize through train, generate --like and evaluate:
    generated masks carry the scheme's name, and evaluate reads them in the scheme it is given."""
    tiles = shutil.copytree(setup[0], tmp_path / "tiles")
    rasterize(setup[1], tiles, "landcover", scheme=setup[2], background="other")
    runner = CliRunner()
    config = tmp_path / "tiny.yaml"
    config.write_text("channels: 4\nz_dim: 4\nspade_hidden: 4\nd_channels: 4\nsample_every: 100\n")
    run, pairs, report = tmp_path / "run", tmp_path / "pairs", tmp_path / "report"
    steps = [
        [
            "train",
            "spade",
            "--tiles",
            str(tiles),
            "--out",
            str(run),
            "--scheme",
            str(setup[2]),
            "--mask-role",
            "mask",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--config",
            str(config),
        ],
        [
            "generate",
            "--run",
            str(run),
            "-n",
            "4",
            "--out",
            str(pairs),
            "--like",
            str(tiles),
            "--workers",
            "1",
        ],
        [
            "evaluate",
            "--real",
            str(tiles),
            "--synthetic",
            str(pairs),
            "--out",
            str(report),
            "--scheme",
            str(setup[2]),
            "--mask-role",
            "mask",
            "--encoder-steps",
            "2",
        ],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{args[0]}: {result.output}"
    with rasterio.open(next((pairs / "masks").glob("*.tif"))) as src:
        assert src.tags()["GEOGAN_SCHEME"] == "peat"
        assert set(np.unique(src.read(1))) <= {0, 1, 2, 3}
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["synthetic"] == {"chips": 4, "masks": True}
    assert metrics["inputs"]["scheme"] == str(setup[2])


def test_polygons_onto_a_scene_grid_give_a_label_raster_for_tile(setup, tmp_path):
    """``geogan labels rasterize --like SCENE --out LABELS.tif``: the scene's grid, classes under the
    polygons, 0 elsewhere; a re-run leaves it; then ``geogan tile s2=SCENE labels=LABELS.tif``."""
    _, polygons, peat = setup
    scene = tmp_path / "scene.tif"
    transform = rasterio.transform.from_origin(440_000, 6_490_000, 10, 10)
    data = np.full((13, 64, 64), 1000, dtype=np.uint16)
    with rasterio.open(
        scene,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=13,
        dtype="uint16",
        crs="EPSG:32630",
        transform=transform,
        nodata=0,
    ) as dst:
        dst.write(data)
    out = tmp_path / "labels" / "labels.tif"
    runner = CliRunner()
    args = [
        "labels",
        "rasterize",
        str(polygons),
        "--like",
        str(scene),
        "--out",
        str(out),
        "--scheme",
        str(peat),
    ]
    result = runner.invoke(app, [*args, "--column", "landcover"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert (src.crs, src.transform, src.shape) == (rasterio.crs.CRS.from_epsg(32630), transform, (64, 64))
        labels, tags = src.read(1), src.tags()
        assert src.colormap(1)[1][:3] == (0x7A, 0x4B, 0x2A)  # the scheme's colour for peat
    assert (labels[11:29, 11:29] == 1).all()  # under polygon A (peat): rows / cols 10..30
    assert labels[40:, :].max() == 0 and labels[:10, :10].max() == 0  # outside every polygon: unlabelled
    assert set(np.unique(labels)) <= {0, 1, 3}  # C ("swamp") is no class of the scheme: not burned
    assert tags["GEOGAN_ROLE"] == "labels" and tags["GEOGAN_SCHEME"] == "peat"
    stamp = out.stat().st_mtime_ns
    again = runner.invoke(app, [*args, "--column", "landcover"])
    assert again.exit_code == 0 and "up to date" in again.output and out.stat().st_mtime_ns == stamp
    tiles = tmp_path / "tiles"
    result = runner.invoke(app, ["tile", f"s2={scene}", f"labels={out}", "--out", str(tiles), "--size", "32"])
    assert result.exit_code == 0, result.output
    index = read_tile_index(tiles)
    assert set(index["role"]) == {"s2", "lc"} and len(index) == 8
    both = runner.invoke(app, [*args, "--column", "landcover", "--tiles", str(tiles)])
    assert both.exit_code == 2 and "not both" in both.output
    neither = runner.invoke(app, ["labels", "rasterize", str(polygons), "--column", "landcover"])
    assert neither.exit_code == 2 and "--like SCENE.tif with --out" in " ".join(neither.output.split())
