"""Datasets over a real tile folder (procedural scenes cut by `geogan.tiling.tile`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import lightning
import numpy as np
import pytest
import rasterio
import torch
from procedural import make_tiles
from shapely.geometry import box

from geogan.bands import S1, S2
from geogan.datasets import (
    ChipDataset,
    FlipRotate,
    LabelTiles,
    Normalizer,
    S2Tiles,
    TileDataModule,
    geo_dataset,
    geo_loader,
)
from geogan.labels import DFC2020, IGBP, igbp_to_dfc2020
from geogan.tiles import read_tile_index, split_scenes


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """A tile folder of 4 scenes, 64 chips with s2, s1 and lc (read-only)."""
    return make_tiles(
        tmp_path_factory.mktemp("datasets"),
        scenes=4,
        split="scene",
        split_fractions=(0.5, 0.25, 0.25),
        split_seed=3,
    )


def _read(path: Path, band: int | None = None) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


# -- normalisation --------------------------------------------------------------------------------


def test_normaliser_maps_percentiles_to_plus_minus_one_and_clips(tmp_path):
    stats = {"roles": {"s2": {"bands": ["B02", "B03"], "p01": [100, 1000], "p99": [300, 5000]}}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    norm = Normalizer.from_stats(tmp_path)  # the folder or the file
    dn = np.array([[100, 200, 300, 0, 60000]] * 2, dtype=np.uint16)[:, None, :]  # (2, 1, 5)
    dn[1, 0, :3] = [1000, 3000, 5000]
    x = norm.encode(dn)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, :3], [[-1, 0, 1], [-1, 0, 1]], atol=1e-6)
    np.testing.assert_array_equal(x[:, 0, 3:], [[-1, 1], [-1, 1]])  # outside [p01, p99]: clipped
    back = norm.decode(x)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, 0, :3], dn[:, 0, :3])
    np.testing.assert_array_equal(back[:, 0, 3:], [[100, 300], [1000, 5000]])  # clipped values: p01, p99
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        norm.encode(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="no statistics for role 's1'"):
        Normalizer.from_stats(tmp_path, role="s1")


def test_normaliser_round_trip_on_real_chips_numpy_and_torch(tiles):
    norm = Normalizer.from_stats(tiles / "stats.json", role="s2")
    index = read_tile_index(tiles)
    paths = index[index.role == "s2"].path.iloc[:8]
    dn = np.stack([_read(tiles / p) for p in paths])  # (8, 13, 32, 32) uint16
    x = norm.encode(dn)
    assert x.shape == dn.shape and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    inside = (dn >= norm.lo[:, None, None]) & (dn <= norm.hi[:, None, None])
    assert inside.mean() > 0.9
    error = np.abs(norm.decode(x).astype(np.int64) - dn)
    assert error[inside].max() <= 1
    # torch, batched and single, gives the same numbers as numpy
    xt = norm.encode(torch.from_numpy(dn.astype(np.int32)))
    assert xt.dtype == torch.float32
    np.testing.assert_allclose(xt.numpy(), x, atol=1e-6)
    back = norm.decode(xt[0])
    assert back.dtype == torch.uint16
    np.testing.assert_array_equal(back.numpy(), norm.decode(x[0]))
    # S1 in dB: float32 back, exact within float precision inside the percentiles
    s1 = Normalizer.from_stats(tiles, role="s1")
    db = _read(tiles / index[index.role == "s1"].path.iloc[0])
    inside = (db >= s1.lo[:, None, None]) & (db <= s1.hi[:, None, None])
    np.testing.assert_allclose(s1.decode(s1.encode(db))[inside], db[inside], atol=1e-3)


# -- chip dataset ---------------------------------------------------------------------------------


def test_chip_dataset_samples_are_the_normalised_chips_and_their_classes(tiles):
    ds = ChipDataset(tiles, roles=("s2", "s1"))
    index = read_tile_index(tiles)
    assert len(ds) == index.chip.nunique() == 64
    assert ds.band_names == S2.band_names + S1.band_names
    assert ds.num_classes == 17 and ds.scheme is IGBP
    item = ds[5]
    assert set(item) == {"image", "mask", "chip"}
    assert item["image"].shape == (15, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    rows = index[index.chip == item["chip"]].set_index("role").path
    raw = np.concatenate([_read(tiles / rows["s2"]), _read(tiles / rows["s1"])])
    np.testing.assert_array_equal(item["image"].numpy(), ds.normalizer.encode(raw))
    igbp = _read(tiles / rows["lc"], 1)
    np.testing.assert_array_equal(item["mask"].numpy(), IGBP.to_index(igbp))
    assert item["mask"].min() >= 0 and item["mask"].max() < 17

    dfc = ChipDataset(tiles, scheme="dfc2020")
    assert dfc.num_classes == 10 and dfc[5]["chip"] == item["chip"]
    np.testing.assert_array_equal(dfc[5]["mask"].numpy(), DFC2020.to_index(igbp_to_dfc2020(igbp)))

    assert "mask" not in ChipDataset(tiles, mask_role=None)[0]
    assert "mask" not in ChipDataset(tiles, mask_role="mask")[0]  # no rasterised masks here


def test_chip_dataset_keeps_decoded_samples_in_memory_up_to_its_budget(tiles, tmp_path):
    """After one pass the samples come from memory (the chip files can go), as copies that no
    transform can change; past ``cache_bytes`` they are read from the files each time."""
    folder = tmp_path / "tiles"
    shutil.copytree(tiles, folder)

    def scale_in_place(sample):
        sample["image"].mul_(0)
        return sample

    ds = ChipDataset(folder, transforms=scale_in_place)
    first = ChipDataset(folder)[3]
    assert (ds[3]["image"] == 0).all()  # the transform ran on the copy it got
    rows = read_tile_index(folder)
    for path in rows.path:
        (folder / path).unlink()
    ds.transforms = None  # no file left: from memory, as read before the transform
    np.testing.assert_array_equal(ds[3]["image"].numpy(), first["image"].numpy())
    np.testing.assert_array_equal(ds[3]["mask"].numpy(), first["mask"].numpy())

    shutil.rmtree(folder)
    shutil.copytree(tiles, folder)
    small = ChipDataset(folder, cache_bytes=first["image"].nbytes + first["mask"].nbytes)
    small[3], small[4]  # room for one sample: chip 3 stays, chip 4 is read each time
    for path in rows.path:
        (folder / path).unlink()
    np.testing.assert_array_equal(small[3]["image"].numpy(), first["image"].numpy())
    with pytest.raises(rasterio.RasterioIOError):
        small[4]


def test_splits_are_by_scene_disjoint_complete_and_seeded(tiles):
    parts = {s: ChipDataset(tiles, split=s) for s in ("train", "val", "test")}
    scenes = {s: set(d.scenes) for s, d in parts.items()}
    chips = {s: set(d.chips) for s, d in parts.items()}
    assert all(scenes.values())
    assert not (
        scenes["train"] & scenes["val"] or scenes["train"] & scenes["test"] or scenes["val"] & scenes["test"]
    )
    assert sum(len(c) for c in chips.values()) == 64 and len(set.union(*chips.values())) == 64
    assert ChipDataset(tiles, split="val").chips == parts["val"].chips
    # footprints of different splits do not overlap
    index = read_tile_index(tiles).drop_duplicates("chip").set_index("chip")
    areas = {s: index.loc[sorted(c)].union_all() for s, c in chips.items()}
    assert areas["train"].intersection(areas["test"]).area == 0


def test_overlapping_scenes_always_share_a_split():
    # a, b overlap; c touches b only along an edge; d, e stand alone
    boxes = {
        "a": box(0, 0, 10, 10),
        "b": box(5, 5, 15, 15),
        "c": box(15, 0, 25, 5),
        "d": box(50, 50, 60, 60),
        "e": box(80, 80, 90, 90),
        "f": box(100, 0, 110, 10),
    }
    index = gpd.GeoDataFrame(
        {"scene": list(boxes), "chip": list(boxes), "path": [f"{s}.tif" for s in boxes]},
        geometry=list(boxes.values()),
        crs=32630,
    )
    for seed in range(10):
        split = split_scenes(index, (0.5, 0.25, 0.25), seed=seed)
        assert split["a"] == split["b"]
        assert set(split.values()) == {"train", "val", "test"}
    assert len({tuple(split_scenes(index, seed=s).items()) for s in range(10)}) > 1  # the seed matters
    with pytest.raises(ValueError, match="sum to 1"):
        split_scenes(index, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="2 separate scene"):
        split_scenes(index.iloc[:3], (0.5, 0.25, 0.25))  # a+b and c: two groups for three splits
    assert set(split_scenes(index.iloc[:3], (0.5, 0.5, 0.0)).values()) == {"train", "val"}


# -- torchgeo geo datasets ------------------------------------------------------------------------


def test_geo_datasets_read_chips_at_their_bounds_and_sample_with_torchgeo(tiles):
    index = read_tile_index(tiles)
    s2 = S2Tiles(tiles)
    labels = LabelTiles(tiles, role="lc", scheme="dfc2020")
    row = index[index.role == "s2"].iloc[9]
    xmin, ymin, xmax, ymax = row.geometry.bounds
    query = (slice(xmin, xmax, 10.0), slice(ymin, ymax, 10.0))
    image = s2[query]["image"]
    assert image.shape == (13, 32, 32) and image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy(), s2.normalizer.encode(_read(tiles / row.path)), atol=1e-6)
    mask = labels[query]["mask"]
    lc = _read(tiles / row.path.replace("s2_", "lc_").replace("_s2_", "_lc_"), 1)
    np.testing.assert_array_equal(mask.numpy(), DFC2020.to_index(igbp_to_dfc2020(lc)))

    both = geo_dataset(tiles, roles=("s2", "s1"), mask_role="lc")
    batch = next(iter(geo_loader(both, size=24, batch_size=4, length=8, seed=1)))
    assert batch["image"].shape == (4, 15, 24, 24) and batch["mask"].shape == (4, 24, 24)
    assert batch["mask"].dtype == torch.int64 and -1 <= batch["mask"].min() and batch["mask"].max() < 17
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1 and len(batch["bounds"]) == 4
    grid = geo_loader(geo_dataset(tiles, mask_role=None), size=32, batch_size=16, sampler="grid")
    assert len(grid.sampler) == 64  # one window per 32 px chip

    test_only = S2Tiles(tiles, split="test")
    expected = ChipDataset(tiles, split="test")
    assert len(test_only) == len(expected)


# -- augmentation and data module -----------------------------------------------------------------


def test_flip_rotate_moves_image_and_mask_alike():
    torch.manual_seed(0)
    mask = torch.arange(16).reshape(4, 4)
    sample = {"image": torch.stack([mask.float(), -mask.float()]), "mask": mask, "chip": "c"}
    seen = set()
    for _ in range(64):
        out = FlipRotate()(sample)
        assert torch.equal(out["image"][0], out["mask"].float()) and torch.equal(
            out["image"][1], -out["mask"].float()
        )
        assert sorted(out["mask"].flatten().tolist()) == list(range(16)) and out["chip"] == "c"
        seen.add(tuple(out["mask"].flatten().tolist()))
    assert len(seen) == 8  # all symmetries of the square


class TinySegmenter(lightning.LightningModule):
    def __init__(self, bands: int, classes: int):
        super().__init__()
        self.net = torch.nn.Conv2d(bands, classes, 1)
        self.losses: list[float] = []
        self.val_batches = 0

    def training_step(self, batch, _):
        assert batch["image"].shape[1:] == (13, 32, 32) and batch["mask"].dtype == torch.int64
        loss = torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["mask"], ignore_index=-1)
        self.losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch, _):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def test_data_module_feeds_a_real_training_run(tiles):
    dm = TileDataModule(tiles, batch_size=8, seed=3)
    dm.setup("fit")
    assert set(dm.datasets["train"].scenes).isdisjoint(dm.datasets["val"].scenes)
    assert dm.datasets["train"].transforms is not None and dm.datasets["val"].transforms is None
    lightning.seed_everything(0, verbose=False)
    model = TinySegmenter(13, dm.datasets["train"].num_classes)
    before = model.net.weight.detach().clone()
    trainer = lightning.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert len(model.losses) == 8 and model.val_batches >= 1
    assert not torch.equal(before, model.net.weight.detach())
    assert np.mean(model.losses[-3:]) < model.losses[0]  # it learns the classes from the bands


def test_missing_stats_or_index_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="stats.json: not a geogan stats.json"):
        ChipDataset(tmp_path)
    (tmp_path / "stats.json").write_text(
        json.dumps({"roles": {"s2": {"bands": ["B01"], "p01": [0], "p99": [1]}}})
    )
    with pytest.raises(FileNotFoundError, match="index.gpkg: no tile index"):
        ChipDataset(tmp_path)
