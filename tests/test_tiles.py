"""The tile folder's split (geogan/tiles.py): decided once by `geogan tile`, read by every stage."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from distributed import Client
from shapely.geometry import box

from geogan.config import TileOptions
from geogan.datasets import ChipDataset
from geogan.tiles import GAP, SPLITS, chips_of, read_split, read_tile_index, split_blocks
from geogan.tiling import tile


def _tile(out: Path, sources: list[str], **options) -> Path:
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        tile(TileOptions(sources=sources, out=out, **options), client=client, progress=False)
    return out


def _grid(rows: int, cols: int, size: float = 10.0) -> gpd.GeoDataFrame:
    chips = [(r, c) for r in range(rows) for c in range(cols)]
    return gpd.GeoDataFrame(
        {"chip": [f"r{r}-c{c}" for r, c in chips], "scene": "one"},
        geometry=[box(c * size, -(r + 1) * size, (c + 1) * size, -r * size) for r, c in chips],
        crs=32633,
    )


def assert_no_chip_touches_another_split(index: gpd.GeoDataFrame, split: dict[str, str]) -> None:
    index = index.drop_duplicates("chip").reset_index(drop=True)
    width = float((index.geometry.bounds["maxx"] - index.geometry.bounds["minx"]).median())
    grown = index.geometry.buffer(width * 1e-3, join_style="mitre")
    left, right = index.sindex.query(grown, predicate="intersects")
    a = np.array([split[c] for c in index["chip"].iloc[left]])
    b = np.array([split[c] for c in index["chip"].iloc[right]])
    touching = (a != b) & (a != GAP) & (b != GAP)
    pairs = zip(index["chip"].iloc[left[touching]], index["chip"].iloc[right[touching]], strict=True)
    assert not touching.any(), list(pairs)


def test_block_split_has_a_gap_between_splits_and_shares_close_to_the_fractions():
    index = _grid(12, 24)  # the Havelland scene at 64 px: 288 chips
    split = split_blocks(index, (0.8, 0.1, 0.1), block=4, seed=0)
    counts = {s: sum(v == s for v in split.values()) for s in (*SPLITS, GAP)}
    assert sum(counts.values()) == 288 and all(counts[s] >= 16 for s in SPLITS)
    assert counts["train"] > counts["val"] + counts["test"]
    assert_no_chip_touches_another_split(index, split)
    # a block is whole in one split, or partly gap: never in two splits
    for r0 in range(0, 12, 4):
        for c0 in range(0, 24, 4):
            inside = {split[f"r{r}-c{c}"] for r in range(r0, r0 + 4) for c in range(c0, c0 + 4)} - {GAP}
            assert len(inside) <= 1
    assert split == split_blocks(index, (0.8, 0.1, 0.1), block=4, seed=0)  # same seed, same split
    assert split != split_blocks(index, (0.8, 0.1, 0.1), block=4, seed=1)
    with pytest.raises(ValueError, match="smaller --split-block"):
        split_blocks(_grid(4, 4), (0.8, 0.1, 0.1), block=4)


def test_one_scene_is_split_by_blocks_and_every_stage_reads_the_folder_split(tmp_path, scene_files):
    sources = [f"s2={scene_files['s2']}", f"labels={scene_files['lc']}"]
    out = _tile(tmp_path / "tiles", sources, size=32, min_valid=0.0)
    split = read_split(out)
    assert split["method"] == "blocks" and split["block"] == 4
    chips = split["chips"]
    assert len(chips) == 256 and set(chips.values()) == {*SPLITS, GAP}
    index = read_tile_index(out)
    assert dict(zip(index["chip"], index["split"], strict=True)) == {c: chips[c] for c in index["chip"]}
    assert_no_chip_touches_another_split(index, chips)
    # the SEN12MS lists are filled for role-tagged scenes: train and test chips by their S2 name
    listed = (out / "train_list.txt").read_text().split()
    assert len(listed) == split["counts"]["train"] and all("_s2_" in n for n in listed)
    assert len((out / "test_list.txt").read_text().split()) == split["counts"]["test"]
    for name in SPLITS:
        assert set(ChipDataset(out, split=name).chips) == chips_of(out, name)
    # the same sources and options: the same split, and the chips are not written again
    before = (out / "split.json").read_bytes()
    _tile(out, sources, size=32, min_valid=0.0)
    assert (out / "split.json").read_bytes() == before
    # by scene, one scene cannot fill three splits: a clear error naming the way out
    with pytest.raises(ValueError, match="--split blocks"):
        _tile(tmp_path / "by-scene", sources, size=32, min_valid=0.0, split="scene")


def test_partial_labels_are_unknown_not_invalid_imagery(tmp_path, scene_files):
    with rasterio.open(scene_files["lc"]) as src:
        profile, lc = src.profile, src.read(1)
    lc[:, 160:] = 0  # unlabelled right of column 160: 31 % of the scene labelled
    sparse = tmp_path / "sparse_labels.tif"
    with rasterio.open(sparse, "w", **{**profile, "count": 1}) as dst:
        dst.write(lc, 1)
    sources = [f"s2={scene_files['s2']}", f"labels={sparse}"]
    out = _tile(tmp_path / "tiles", sources, size=64)  # the default --min-valid 0.9 judges the imagery
    index = read_tile_index(out)
    lcs = index[index.role == "lc"].set_index("chip")
    assert len(lcs) == 64  # every chip kept
    expected = {
        c: float((lc[r : r + 64, k : k + 64] != 0).mean())
        for c, r, k in zip(lcs.index, lcs.row_off, lcs.col_off, strict=True)
    }
    assert lcs["labelled_fraction"].to_dict() == pytest.approx(expected)
    assert (lcs["valid_fraction"] == 1.0).all()  # the S2 chip's, on label rows too
    assert set(np.round(lcs["labelled_fraction"], 3)) == {0.0, 0.5, 1.0}
    # a labelled-fraction threshold of its own
    few = _tile(tmp_path / "labelled", sources, size=64, min_labelled=0.4, split_block=2)
    kept = read_tile_index(few)
    assert (kept[kept.role == "lc"]["labelled_fraction"] >= 0.4).all() and kept.chip.nunique() == 24
    summary = json.loads((few / "split.json").read_text())["counts"]
    assert sum(summary.values()) == 24
