"""SPADE, stage II of the dual GAN: real GeoTIFF tiles, real torch training steps on CPU, tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from geogan.cli import app
from geogan.datasets import ChipDataset
from geogan.labels import IGBP
from geogan.models.options import SpadeOptions
from geogan.models.spade import (
    MultiscalePatchDiscriminator,
    OasisDiscriminator,
    SpadeGenerator,
    class_balanced_ce,
    one_hot,
)
from geogan.training import DataInfo, checkpoints, load_checkpoint, load_generator, task_class, train

K = len(IGBP)
TINY = dict(
    preset="tiny",
    num_up=3,
    batch_size=8,
    split=None,
    log_every=5,
    ema_images=200,
    lr_g=1e-3,
    lr_d=2e-3,
)
WATER, FOREST, GRASS = (IGBP.values.index(v) for v in (17, 1, 10))
B8, B4 = 7, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiles(dual_gan_tiles) -> Path:
    return dual_gan_tiles


def options(tiles: Path, out: Path, **changes) -> SpadeOptions:
    return SpadeOptions(**{**TINY, "tiles": tiles, "out": out, **changes})


def test_one_hot_takes_class_indices_and_nodata():
    mask = torch.tensor([[[0, 2], [-1, 1]]])
    onehot = one_hot(mask, 3)
    assert onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0] and onehot[0, :, 0, 1].tolist() == [0, 0, 1]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0]  # nodata: no class
    with pytest.raises(ValueError, match="class indices 0..2 or -1"):
        one_hot(torch.tensor([[[3]]]), 3)


def test_generator_makes_every_band_pixel_aligned_with_the_mask():
    torch.manual_seed(0)
    g = SpadeGenerator(K, bands=13, channels=8, z_dim=8, num_up=3, spade_hidden=16)
    mask = torch.full((2, 32, 32), WATER)
    z = torch.randn(2, 8)
    image = g(mask, z)
    assert image.shape == (2, 13, 32, 32) and image.abs().max() <= 1
    # Fully convolutional: a 64 x 48 mask gives a 64 x 48 image.
    assert g(torch.zeros(1, 64, 48, dtype=torch.long), z[:1]).shape == (1, 13, 64, 48)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        g(torch.zeros(1, 36, 32, dtype=torch.long), z[:1])
    with pytest.raises(ValueError, match=r"style vectors must be \(2, 8\)"):
        g(mask, torch.randn(2, 4))


def test_discriminators_score_patches_and_pixels():
    x = torch.randn(2, 13 + K, 32, 32)
    outs = MultiscalePatchDiscriminator(13 + K, channels=16, layers=3, num_d=2)(x)
    assert len(outs) == 2 and outs[0][-1].shape[:2] == (2, 1)
    assert outs[1][-1].shape[-1] < outs[0][-1].shape[-1]  # the second scale sees a halved image
    logits = OasisDiscriminator(13, K, channels=16, depth=3)(torch.randn(2, 13, 32, 32))
    assert logits.shape == (2, K + 1, 32, 32)  # "fake" + K classes, every pixel


def test_class_balanced_cross_entropy_ignores_nodata_and_balances_classes():
    mask = torch.tensor([[[0, 0, 0, 1], [-1, -1, -1, -1]]])
    logits = torch.zeros(1, 3, 2, 4, requires_grad=True)
    loss = class_balanced_ce(logits, mask)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(3), rel=1e-5)  # uniform logits over 3 outputs
    assert logits.grad[..., 1, :].abs().sum() == 0  # nodata pixels get no gradient
    # The lone class-1 pixel weighs as much as the three class-0 pixels together.
    g = logits.grad[0]
    assert float(g[2, 0, 3].abs()) == pytest.approx(3 * float(g[1, 0, 0].abs()), rel=1e-5)


@pytest.mark.parametrize("unknown", ["learn", "ignore"])
def test_oasis_judges_unlabelled_pixels_only_when_it_learns_them(tmp_path, unknown):
    # Sparse polygons leave most pixels unlabelled: there, an OASIS discriminator that ignores them
    # gives the generator no gradient at all; with unknown: learn they are one more class to it.
    data = DataInfo(13, tuple(f"B{i}" for i in range(13)), K, 32)
    task = task_class("spade")(
        options(tmp_path, tmp_path / "o", discriminator="oasis", unknown=unknown), data
    )
    modules, _ = task.build()
    g, d = modules["generator"], modules["discriminator"]
    assert d(torch.zeros(1, 13, 32, 32)).shape[1] == 1 + K + (unknown == "learn")
    mask = torch.full((2, 32, 32), -1)
    mask[:, :8] = WATER
    labels = task._d_labels(one_hot(mask, K))
    assert labels[:, :8].eq(WATER).all()
    assert labels[:, 8:].eq(K if unknown == "learn" else -1).all()
    # A chip with no polygon on it: the generator's adversarial gradient there.
    blank = torch.full((2, 32, 32), -1)
    fake = g(blank, torch.randn(2, task.options.z_dim)).detach().requires_grad_(True)
    class_balanced_ce(d(fake), task._d_labels(one_hot(blank, K))).backward()
    assert fake.grad is not None
    moved = fake.grad.abs().sum(1).gt(0).float().mean().item()
    assert moved > 0.99 if unknown == "learn" else moved == 0


def test_class_mean_loss_compares_each_class_of_a_batch_with_the_real_chips_mean():
    g = SpadeGenerator(3, bands=2, channels=8, z_dim=8, num_up=3, spade_hidden=16)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[:, :4] = 1
    mask[:, 6:] = -1  # unknown pixels: one more class
    real = torch.zeros(1, 2, 8, 8)
    real[:, 0] = torch.where(mask == 1, 0.5, -0.5)[0]
    g.remember(real, mask)
    assert g.mean_error(real, mask).item() == pytest.approx(0, abs=1e-6)
    fake = real.clone()
    fake[:, 1][mask == 0] += 0.3  # class 0 too bright in band 2 only
    # Classes 0, 1 and unknown are in the batch, 2 bands each: 0.3 off in one of the 6 means.
    assert g.mean_error(fake, mask).item() == pytest.approx(0.3 / 6, rel=1e-5)
    fake.requires_grad_(True)
    g.mean_error(fake, mask).backward()
    assert fake.grad[:, 1][mask == 0].gt(0).all() and fake.grad[:, 0].abs().sum() == 0
    assert g.mean_error(fake, torch.full_like(mask, 2)).item() > 0  # class 2 never seen: mean 0


def test_spade_trains_on_cpu_and_its_images_follow_the_mask_like_the_real_data(tiles, tmp_path):
    run = tmp_path / "run"
    newest = train("spade", options(tiles, run, steps=150, sample_every=75, checkpoint_every=75))
    assert newest == run / "checkpoints" / "step-00000150.pt"

    data = ChipDataset(tiles, split=None)
    items = [data[i] for i in range(0, len(data), 2)]
    masks = torch.stack([x["mask"] for x in items])
    real = torch.stack([x["image"] for x in items])
    trained = load_generator(run)
    assert trained.task.conditional and trained.step == 150
    torch.manual_seed(0)
    out = trained.sample({"mask": masks})
    assert out["image"].shape == real.shape and torch.equal(out["mask"], masks)

    def class_means(images: torch.Tensor, band: int) -> dict[int, float]:
        return {k: float(images[:, band][masks == k].mean()) for k in (WATER, FOREST, GRASS)}

    fake8, real8 = class_means(out["image"], B8), class_means(real, B8)
    # Water is far darker than vegetation in B8 (NIR) in the real tiles and in the generated ones.
    assert real8[WATER] < real8[FOREST] - 1 and real8[WATER] < real8[GRASS] - 1
    assert fake8[WATER] < fake8[FOREST] - 0.8 and fake8[WATER] < fake8[GRASS] - 0.8, fake8
    # Across every class present and the bands B4 and B8, generated class means track the real ones.
    present = [k for k in range(K) if (masks == k).sum() > 500]
    assert len(present) >= 5
    pairs = [
        (float(real[:, b][masks == k].mean()), float(out["image"][:, b][masks == k].mean()))
        for k in present
        for b in (B4, B8)
    ]
    r, f = np.array(pairs).T
    assert np.corrcoef(r, f)[0, 1] > 0.8, pairs
    assert np.abs(r - f).mean() < 0.3, pairs

    # Pixel-aligned: making the top-left quarter of all-water masks forest brightens B8 there,
    # and far less in the opposite corner.
    water = torch.full((16, 32, 32), WATER)
    forest = water.clone()
    forest[:, :16, :16] = FOREST
    z = torch.randn(16, trained.options.z_dim)
    diff = (
        trained.sample({"mask": forest, "style": z})["image"]
        - trained.sample({"mask": water, "style": z})["image"]
    )
    near, far = diff[:, B8, :12, :12].mean(), diff[:, B8, 20:, 20:].abs().mean()
    assert near > 0.8 and near > 4 * far, (near, far)

    # The untrained generator knows nothing of the classes: its class means barely differ.
    torch.manual_seed(0)
    task = task_class("spade")(trained.options, trained.data)
    untrained = task.build()[0]["generator"].eval()
    with torch.no_grad():
        first = class_means(task.sample(untrained, {"mask": masks})["image"], B8)
    assert abs(first[WATER] - first[FOREST]) < 0.5 * abs(fake8[WATER] - fake8[FOREST])

    # Sample grids: each tile's mask in class colours beside its true and false colour.
    for step in (75, 150):
        for kind in ("pairs", "mask", "true", "false"):
            png = run / "samples" / f"step-{step:08d}-{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    import matplotlib.image

    pairs_png = matplotlib.image.imread(run / "samples" / "step-00000150-pairs.png")
    mask_png = matplotlib.image.imread(run / "samples" / "step-00000150-mask.png")
    assert pairs_png.shape[1] > 2.5 * mask_png.shape[1]


@pytest.mark.parametrize(
    "changes",
    [dict(discriminator="oasis", labelmix=True), dict(encoder=True, augment=("translation", "flip"))],
    ids=["oasis-labelmix", "patchgan-encoder-augment"],
)
def test_resume_continues_exactly_as_if_uninterrupted(tiles, tmp_path, changes):
    common = dict(checkpoint_every=2, sample_every=100, log_every=1, **changes)
    whole = train("spade", options(tiles, tmp_path / "a", steps=4, **common))
    train("spade", options(tiles, tmp_path / "b", steps=2, **common))
    resumed = train("spade", options(tiles, tmp_path / "b", steps=4, **common), resume=True)
    a, b = load_checkpoint(whole), load_checkpoint(resumed)
    assert (
        set(a["modules"])
        == set(b["modules"])
        == (
            {"generator", "discriminator", "encoder"}
            if changes.get("encoder")
            else {"generator", "discriminator"}
        )
    )
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), (name, key)
    for key, value in a["ema"].items():
        assert torch.equal(value, b["ema"][key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows = (tmp_path / "b" / "logs" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert "g_kl" in rows[0] if changes.get("encoder") else "d_labelmix" in rows[0]


def test_sample_needs_a_mask_and_tiles_need_a_fitting_size(tiles, tmp_path):
    run = tmp_path / "run"
    train("spade", options(tiles, run, steps=1, sample_every=100))
    trained = load_generator(run)
    with pytest.raises(ValueError, match="the batch needs 'mask'"):
        trained.sample({"image": torch.zeros(2, 13, 32, 32)})
    with pytest.raises(ValueError, match=r"num_up: 6 levels would start the generator at 0.5 px on 32 px"):
        train("spade", options(tiles, tmp_path / "deep", steps=1, num_up=6))
    with pytest.raises(ValueError, match=r"num_up: 5 .* at 1 px .* \(num_up at most 4, or leave it out"):
        train("spade", options(tiles, tmp_path / "deep", steps=1, num_up=5))  # the old default at 32 px
    # left out, the levels fit the tiles: 32 px tiles start at 4 px (3 levels)
    fitted = tmp_path / "fitted"
    train("spade", options(tiles, fitted, steps=1, sample_every=100, num_up=None))
    assert yaml.safe_load((fitted / "config.yaml").read_text())["options"]["num_up"] == 3
    with pytest.raises(ValueError, match="ada_target"):
        options(tiles, tmp_path, ada_target=0.6)


def test_cli_trains_spade_into_a_run_folder(tiles, tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli-run"
    config = tmp_path / "spade.yaml"
    config.write_text(yaml.safe_dump({**TINY, "sample_every": 2, "checkpoint_every": 2}))
    args = ["train", "spade", "--tiles", str(tiles), "--out", str(run), "--config", str(config)]
    result = runner.invoke(app, [*args, "--steps", "2", "--discriminator", "oasis"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in checkpoints(run)] == ["step-00000002.pt"]
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["task"] == "spade" and doc["options"]["discriminator"] == "oasis"
    assert doc["data"]["num_classes"] == K
    assert (run / "samples" / "step-00000002-pairs.png").is_file()
    assert (run / "logs" / "metrics.csv").is_file() and (run / "stats.json").is_file()
    resumed = runner.invoke(
        app, ["train", "spade", "--tiles", str(tiles), "--out", str(run), "--steps", "3", "--resume"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert load_generator(run).step == 3
    bad = runner.invoke(app, [*args, "--discriminator", "vgg"])
    assert bad.exit_code == 2 and "discriminator" in bad.output
