"""The evaluate stage on real files: tiles from `geogan tile`, synthetic pairs written by geogan.export.

The synthetic folder is made without a GAN: pairs cut from procedural scenes that are not in the
tile folder (as novel as real chips from elsewhere), plus one planted copy of a training chip
(rotated by 90 degrees), all written with geogan.export's own writers, index, VRTs and STAC.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from distributed import Client, LocalCluster
from rasterio.transform import Affine
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from geogan import export, sample
from geogan.bands import S2
from geogan.cli import app
from geogan.config import EvaluateOptions, TileOptions
from geogan.datasets import Normalizer
from geogan.evaluate import fidelity, novelty, usefulness
from geogan.evaluate.data import ChipSet, real_splits, synthetic_set
from geogan.labels import DFC2020, IGBP
from geogan.tiling import tile

SIZE = 32


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """Five procedural scenes of 128 px tiled into 32 px chips: 80 chips, split 3/1/1 scenes."""
    scenes = tmp_path_factory.mktemp("scenes")
    sample.write_sen12ms(scenes, scenes=5, patches_per_side=2, patch_size=64, seed=11)
    out = tmp_path_factory.mktemp("tiles")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            tile(TileOptions(sources=[str(scenes)], out=out, size=SIZE), client=client, progress=False)
    return out


@pytest.fixture(scope="module")
def chips(tiles):
    normalizer = Normalizer.from_stats(tiles, "s2")
    train, held, _ = real_splits(tiles, IGBP, "lc", normalizer, None, 0, progress=False)
    return normalizer, train, held


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, chips) -> tuple[Path, str, str]:
    """12 pairs from three unseen procedural scenes + a planted copy of a training chip; (dir, id, chip)."""
    _, train, _ = chips
    out = tmp_path_factory.mktemp("synthetic")
    provenance = export.Provenance(
        model="test: unseen procedural scenes", checkpoint_sha256="0" * 64, scheme=IGBP
    )
    pairs = []
    for seed in (901, 902, 903):
        scene = sample.make_scene(64, seed=seed)
        for r in range(2):
            for c in range(2):
                win = (slice(r * SIZE, (r + 1) * SIZE), slice(c * SIZE, (c + 1) * SIZE))
                pairs.append((scene.s2[:, win[0], win[1]], scene.lc[0][win]))
    planted = 5
    copy_chip = train.ids[planted]
    copy_image = np.rot90(train.dn[planted], 1, axes=(1, 2))
    copy_mask = np.rot90(IGBP.to_value(train.mask[planted]), 1)
    pairs.insert(3, (copy_image, copy_mask))
    for i, (image, mask) in enumerate(pairs):
        transform = Affine(10.0, 0, 600_000 + i * SIZE * 10.0, 0, -10.0, 6_490_000)
        pair = export.Pair(
            f"syn_{i:06d}",
            np.ascontiguousarray(image),
            np.ascontiguousarray(mask),
            sample.CRS_DEMO,
            transform,
            seed=i,
        )
        export.write_pair(out, pair, provenance)
    export.write_collections(out, provenance)
    return out, "syn_000003", copy_chip


# -- fidelity distances ---------------------------------------------------------------------------------

SWAP = list(range(13))
for _a, _b in (("B04", "B08"), ("B03", "B11"), ("B02", "B8A")):
    SWAP[S2.index(_a)], SWAP[S2.index(_b)] = S2.index(_b), S2.index(_a)


def noise(dn: np.ndarray, level: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.clip(dn + rng.normal(0, 300.0 * level, dn.shape), 1, 65535).astype(np.uint16)


def band_swap(dn: np.ndarray, level: int) -> np.ndarray:
    """Blend each band with its swapped partner (B04<->B08, B03<->B11, B02<->B8A), level/3 of the way."""
    t = level / 3
    return np.rint((1 - t) * dn + t * dn[:, SWAP]).astype(np.uint16)


def blur(dn: np.ndarray, level: int) -> np.ndarray:
    if level == 0:
        return dn
    return (
        np.stack([gaussian_filter(c.astype(np.float64), (0, 2 * level, 2 * level)) for c in dn])
        .round()
        .astype(np.uint16)
    )


def _as_set(name, dn, normalizer):
    return ChipSet(
        name, [str(i) for i in range(len(dn))], dn, np.stack([normalizer.encode(d) for d in dn]), None
    )


@pytest.fixture(scope="module")
def halves(chips):
    """Two random halves of all real chips, an encoder trained on the reference half, its features."""
    normalizer, train, held = chips
    dn = np.concatenate([train.dn, held.dn])
    order = np.random.default_rng(0).permutation(len(dn))
    a, b = dn[order[: len(dn) // 2]], dn[order[len(dn) // 2 :]]
    ref = _as_set("reference", b, normalizer)
    encoder, record = fidelity.train_encoder(ref.x, steps=60, batch_size=16, width=16, progress=False)
    assert record.loss_end < record.loss_start and record.chips == len(b) and len(record.curve) > 2
    return normalizer, a, ref, encoder, fidelity.encoder_features(encoder, ref.x)


def _distances(halves, corrupt, level) -> dict[str, float]:
    normalizer, a, ref, encoder, ref_features = halves
    s = _as_set("corrupted", corrupt(a, level), normalizer)
    r = fidelity.compare(
        s.x,
        s.dn,
        ref.x,
        ref.dn,
        fidelity.encoder_features(encoder, s.x),
        ref_features,
        pixels=20_000,
        patches=16,
        seed=0,
    )
    out = {
        "band W1": r["band_wasserstein_mean"],
        "correlation": r["correlation_difference"],
        "SWD": r["swd"]["mean"],
        "SWD finest level": r["swd"]["levels"][0],
        "Frechet": r["frechet_distance"],
        "1 - recall": 1 - r["recall"],
        "1 - precision": 1 - r["precision"],
    }
    out.update({f"{k} W1": v["wasserstein"] for k, v in r["indices"].items()})
    return out


@pytest.mark.parametrize(
    "corrupt, measures",
    [
        (noise, ["band W1", "NDVI W1", "NDWI W1", "NDBI W1", "correlation", "SWD", "Frechet", "1 - recall"]),
        (band_swap, ["band W1", "NDVI W1", "NDWI W1", "NDBI W1", "correlation", "SWD", "Frechet"]),
        (blur, ["SWD finest level"]),  # blur only removes fine texture
    ],
)
def test_distances_near_zero_for_halves_and_grow_with_corruption(halves, corrupt, measures):
    levels = [_distances(halves, corrupt, level) for level in range(4)]
    for m in measures:
        values = [d[m] for d in levels]
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), (corrupt.__name__, m, values)
        assert values[0] < 0.35 * values[-1], (corrupt.__name__, m, values)  # halves: near 0 on this scale
    clean = levels[0]
    assert clean["band W1"] < 0.1 and clean["correlation"] < 0.1 and clean["1 - recall"] < 0.25


def test_frechet_and_knn_are_exact_on_known_sets():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 4))
    assert fidelity.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = fidelity.frechet_distance(a + np.array([3.0, 0, 0, 0]), a)
    assert shifted == pytest.approx(9.0, rel=1e-6)  # same covariance: |mu1 - mu2|^2
    pr = fidelity.precision_recall(a + 100.0, a, k=3)
    assert pr == {"precision": 0.0, "recall": 0.0}
    assert fidelity.precision_recall(a, a, k=3) == {"precision": 1.0, "recall": 1.0}


def test_laplacian_pyramid_sums_back_to_the_image():
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 13, 32, 32)).astype(np.float32))
    levels = fidelity.laplacian_pyramid(x, min_size=8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + fidelity._blur(
            torch.nn.functional.interpolate(rebuilt, scale_factor=2, mode="nearest")
        )
    torch.testing.assert_close(rebuilt, x, atol=1e-5, rtol=0)


# -- novelty ----------------------------------------------------------------------------------------------


def test_planted_copy_is_flagged(chips, synthetic):
    normalizer, train, held = chips
    folder, copy_id, copy_chip = synthetic
    syn = synthetic_set(folder, IGBP, normalizer, None, 0, progress=False)
    assert len(syn) == 13 and syn.mask is not None and syn.dn.dtype == np.uint16
    result = novelty.novelty(syn.x, syn.ids, train.x, train.ids, held.x, progress=False)
    assert result.copies[0]["id"] == copy_id and result.copies[0]["nearest"] == copy_chip
    assert result.copies[0]["distance"] < 1e-6  # a rotated copy is found through the 8 symmetries
    assert result.threshold == pytest.approx(min(result.held_out)) and result.threshold > 0.01
    assert len(result.copies) <= 3  # chips of unseen scenes are mostly as far as held-out real chips
    flagged = {c["id"] for c in result.copies}
    assert all(
        (d < result.threshold) == (i in flagged) for i, d in zip(syn.ids, result.synthetic, strict=True)
    )
    without = novelty.nearest(syn.x[[3]], train.x, symmetries=False)[0][0]
    assert without > 0.05  # unrotated, the copy is not the same picture


# -- usefulness -------------------------------------------------------------------------------------------


def test_iou_and_intervals():
    counts = np.array([[8, 2, 0], [1, 4, 0], [0, 0, 0]])
    np.testing.assert_allclose(usefulness.iou(counts)[:2], [8 / 11, 4 / 7])
    assert np.isnan(usefulness.iou(counts)[2])
    ci = usefulness.interval([0.1, 0.2, 0.3])
    assert ci["mean"] == pytest.approx(0.2) and ci["ci_low"] == pytest.approx(0.2 - 4.302653 * 0.1 / 3**0.5)
    assert usefulness.verdict([0.1, 0.12, 0.11])["answer"] == "yes"
    assert usefulness.verdict([-0.1, 0.12, 0.01])["answer"] == "no"
    assert "does not clearly beat" in usefulness.verdict([-0.1, 0.12, 0.01])["sentence"]


def scores(result: dict) -> dict:
    """Each configuration's per-seed scores (not the seconds they took)."""
    return {
        key: [(r["seed"], r["miou"], r["minority_iou"], r["per_class"]) for r in table["runs"]]
        for key, table in result["configs"].items()
    }


def test_usefulness_resumes_from_its_record_with_the_results_of_an_uninterrupted_call(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (12, 16, 16))
    x = (y[:, None] * 0.8 + rng.normal(0, 0.3, (12, 3, 16, 16))).astype(np.float32)
    data = (x[:6], y[:6], x[6:9], y[6:9], x[9:], y[9:], ["water", "bog"])
    setup = usefulness.UsefulnessSetup(seeds=2, steps=3, batch_size=4, encoder="resnet18")
    record = tmp_path / "runs.json"
    whole = usefulness.usefulness(*data, setup, progress=False)
    first = usefulness.usefulness(*data, setup, progress=False, record=record)
    assert scores(first) == scores(whole)  # recording changes nothing
    saved = json.loads(record.read_text())
    assert len(saved["runs"]) == 8

    # Killed after three runs: the next call trains only the five missing ones.
    record.write_text(json.dumps({**saved, "runs": saved["runs"][:3]}))
    again = usefulness.usefulness(*data, setup, progress=False, record=record)
    assert scores(again) == scores(whole)
    kept = {(r["config"], r["seed"]): r["seconds"] for r in saved["runs"][:3]}
    for key, table in again["configs"].items():
        for r in table["runs"]:
            if (key, r["seed"]) in kept:
                assert r["seconds"] == kept[key, r["seed"]]  # taken from the record, not retrained

    # Another setup does not take the record's runs.
    other = usefulness.usefulness(*data, dataclasses.replace(setup, steps=4), progress=False, record=record)
    assert len(json.loads(record.read_text())["runs"]) == 8 and other["setup"]["steps"] == 4


def test_pretraining_trains_on_the_synthetic_pairs_first_then_on_the_real_chips():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (12, 16, 16))
    x = (y[:, None] * 0.8 + rng.normal(0, 0.3, (12, 3, 16, 16))).astype(np.float32)
    real, syn = (x[:6], y[:6]), (x[6:], y[6:])
    setup = usefulness.UsefulnessSetup(steps=4, batch_size=4)

    def weights(model):
        return [t.detach().clone() for t in model.state_dict().values()]

    def same(a, b):
        return all(torch.equal(s, t) for s, t in zip(weights(a), weights(b), strict=True))

    plain_real = usefulness.train_unet(*real, 2, setup, seed=0, augment=True)
    plain_syn = usefulness.train_unet(*syn, 2, setup, seed=0, augment=True)
    # No pre-training steps: the real run; every step pre-training: the synthetic run.
    assert same(usefulness.train_unet(*real, 2, setup, 0, True, pretrain=(*syn, 0)), plain_real)
    assert same(usefulness.train_unet(*real, 2, setup, 0, True, pretrain=(*syn, 4)), plain_syn)
    half = usefulness.train_unet(*real, 2, setup, 0, True, pretrain=(*syn, 2))
    assert not same(half, plain_real) and not same(half, plain_syn)

    table = usefulness.usefulness(
        *real,
        *syn,
        x[:4],
        y[:4],
        ["water", "bog"],
        usefulness.UsefulnessSetup(seeds=1, steps=4, batch_size=4, pretrain_share=0.5),
        progress=False,
    )
    c = table["configs"]["c"]
    assert c["label"].startswith("synthetic for 50% of the steps") and c["train_chips"] == 6
    assert table["setup"]["pretrain_share"] == 0.5


def test_the_cosine_schedule_takes_the_learning_rate_from_lr_down_to_zero_over_the_steps():
    setup = usefulness.UsefulnessSetup(steps=4, lr=1e-3, lr_schedule="cosine")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=setup.lr)
    cosine = usefulness.schedule(opt, setup)
    rates = []
    for _ in range(setup.steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    np.testing.assert_allclose(
        rates, [1e-3, 1e-3 * (1 + np.cos(np.pi / 4)) / 2, 5e-4, 1e-3 * (1 - np.cos(np.pi / 4)) / 2]
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(0, abs=1e-12)  # after the last step
    assert usefulness.schedule(opt, usefulness.UsefulnessSetup(lr_schedule="constant")) is None
    with pytest.raises(ValueError, match="lr_schedule must be constant or cosine, not 'step'"):
        usefulness.schedule(opt, usefulness.UsefulnessSetup(lr_schedule="step"))


def test_one_way_of_mixing_at_a_time(tmp_path):
    with pytest.raises(ValueError, match="give one of --synthetic-share and --pretrain-share"):
        EvaluateOptions(
            real=tmp_path, synthetic=tmp_path, out=tmp_path, synthetic_share=0.5, pretrain_share=0.5
        )


# -- the stage, through the CLI -----------------------------------------------------------------------------


def test_a_rerun_takes_the_trained_feature_encoder_and_gives_the_same_metrics(tiles, synthetic, tmp_path):
    out = tmp_path / "report"
    args = [
        "evaluate",
        "--real",
        str(tiles),
        "--synthetic",
        str(synthetic[0]),
        "--out",
        str(out),
        "--encoder-steps",
        "20",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    before = json.loads((out / "metrics.json").read_text())
    weights = (out / "encoder.pt").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["-v", *args])
    assert again.exit_code == 0, again.output
    after = json.loads((out / "metrics.json").read_text())
    assert "feature encoder taken from" in " ".join(again.output.split())
    assert (out / "encoder.pt").stat().st_mtime_ns == weights
    assert after["encoder"] == before["encoder"] and after["fidelity"] == before["fidelity"]
    changed = CliRunner().invoke(app, [*args[:-1], "21"])  # other settings: trained again
    assert changed.exit_code == 0 and json.loads((out / "metrics.json").read_text())["encoder"]["steps"] == 21


def test_cli_writes_report_flags_and_drops_copy_and_runs_usefulness(tiles, synthetic, tmp_path):
    source, copy_id, copy_chip = synthetic
    folder = tmp_path / "synthetic"
    shutil.copytree(source, folder)
    out = tmp_path / "report"
    paths = ["--real", str(tiles), "--synthetic", str(folder), "--out", str(out)]
    tiny = [
        "--encoder-steps",
        "30",
        "--seeds",
        "2",
        "--steps",
        "8",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--synthetic-share",
        "0.5",
    ]
    result = CliRunner().invoke(app, ["evaluate", *paths, *tiny, "--drop-copies", "--usefulness"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["real"] == {**metrics["real"], "train_chips": 48, "held_out_chips": 32}
    assert not set(metrics["real"]["train_scenes"]) & set(metrics["real"]["held_out_scenes"])
    assert metrics["encoder"]["steps"] == 30 and metrics["encoder"]["class_head"] is True
    fid = metrics["fidelity"]
    assert set(fid["synthetic"]["band_wasserstein"]) == set(S2.band_names)
    assert 0 <= fid["synthetic"]["precision"] <= 1 and fid["synthetic"]["frechet_distance"] >= 0

    copies = [c["id"] for c in metrics["novelty"]["copies"]]
    assert copies[0] == copy_id and metrics["novelty"]["copies"][0]["nearest"] == copy_chip
    assert sorted(metrics["dropped"]["dropped"]) == sorted(copies)
    # the copy's files moved, nothing deleted; the index lists only what is left
    assert not (folder / "images" / f"{copy_id}.tif").exists()
    assert (folder / "dropped" / "images" / f"{copy_id}.tif").exists()
    assert (folder / "dropped" / "masks" / f"{copy_id}.tif").exists()
    assert (folder / "dropped" / "masks" / f"{copy_id}.tif.aux.xml").exists()
    index = gpd.read_file(folder / "index.gpkg", layer="pairs")
    assert copy_id not in set(index["id"]) and len(index) == 13 - len(copies)
    assert json.loads((folder / "dropped" / "copies.json").read_text())["dropped"] == sorted(copies)
    for vrt in folder.glob("*.vrt"):
        assert copy_id not in vrt.read_text()
    with rasterio.open(next(folder.glob("images_*.vrt"))) as src:
        assert src.count == 13

    use = metrics["usefulness"]
    assert set(use["configs"]) == {"a", "b", "c", "d"}
    assert use["setup"]["synthetic_pairs"] == 13 - len(copies) and use["setup"]["n_real"] == 48
    assert use["setup"]["synthetic_share"] == 0.5
    assert use["configs"]["c"]["train_chips"] == 48 + 13 - len(copies)
    for config in use["configs"].values():
        assert len(config["runs"]) == 2 and 0 <= config["miou"]["mean"] <= 1
        assert config["miou"]["ci_low"] <= config["miou"]["mean"] <= config["miou"]["ci_high"]
        assert set(config["per_class"]) == set(use["setup"]["classes_scored"])
    diffs = [
        c["miou"] - b["miou"]
        for b, c in zip(use["configs"]["b"]["runs"], use["configs"]["c"]["runs"], strict=True)
    ]
    assert use["c_vs_b"]["difference"]["mean"] == pytest.approx(np.mean(diffs))
    assert use["c_vs_b"]["sentence"].split(":")[0] in {"Yes", "No"}

    page = (out / "report.html").read_text()
    assert use["c_vs_b"]["sentence"].split(" (")[0].replace("(c)", "") in page.replace("(c)", "")
    assert copy_id in page and "Fréchet distance" in page and "<script" not in page
    assert f"Adam lr {use['setup']['lr']} (cosine)" in page  # the U-Nets' schedule, as they were trained
    for png in (
        "samples_real",
        "samples_synthetic",
        "band_histograms",
        "indices",
        "correlation",
        "novelty",
        "copies",
        "encoder",
        "usefulness",
    ):
        assert f'src="{png}.png"' in page and (out / f"{png}.png").stat().st_size > 1000


def test_synthetic_masks_are_read_in_the_asked_scheme(chips, tmp_path):
    normalizer, train, _ = chips
    provenance = export.Provenance(model="test", checkpoint_sha256="0" * 64, scheme=DFC2020)
    mask = np.where(IGBP.to_value(train.mask[0]) == 17, 10, 1).astype(np.uint8)  # DFC water / forest
    pair = export.Pair(
        "syn_000000", train.dn[0], mask, sample.CRS_DEMO, Affine(10.0, 0, 0, 0, -10.0, 0), seed=0
    )
    export.write_pair(tmp_path, pair, provenance)
    export.write_collections(tmp_path, provenance)
    syn = synthetic_set(tmp_path, DFC2020, normalizer, None, 0, progress=False)
    np.testing.assert_array_equal(syn.mask[0], DFC2020.to_index(mask))
    with pytest.raises(ValueError, match=r"syn_000000.tif: holds dfc2020 classes"):
        synthetic_set(tmp_path, IGBP, normalizer, None, 0, progress=False)


def test_bad_inputs_fail_by_name(tiles, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--real",
            str(tiles),
            "--synthetic",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    said = "".join(result.output.split())  # rich wraps long lines, anywhere
    assert result.exit_code == 2 and "nope:nosuchfolder(thesyntheticpairsfolder)" in said
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(
        app, ["evaluate", "--real", str(tiles), "--synthetic", str(empty), "--out", str(tmp_path / "r")]
    )
    said = "".join(result.output.split())
    assert result.exit_code == 2 and "empty/index.gpkg:nosuchfile" in said
    with pytest.raises(ValueError, match="seeds"):
        EvaluateOptions(real=tiles, synthetic=empty, out=tmp_path, seeds=0)
