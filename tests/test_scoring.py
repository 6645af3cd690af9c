"""geogan.scoring: the agreement score of --best-of and its segmenter, trained on real GeoTIFF chips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geogan import sample, scoring
from geogan.config import TileOptions
from geogan.datasets import Normalizer
from geogan.evaluate import usefulness
from geogan.evaluate.data import split_chips
from geogan.labels import IGBP
from geogan.tiling import tile


def test_agreement_is_the_mean_share_of_each_class_found_rare_classes_weighing_alike():
    mask = torch.full((10, 20), -1)
    mask[:, :10] = 0  # 100 px
    mask[:5, 10:12] = 1  # 10 px: as much weight as class 0
    mask[9, 19] = 2  # 1 px of 111 labelled, under MIN_SHARE: left out
    pred = torch.zeros_like(mask)
    pred[:5, 10:11] = 1  # half of class 1 found
    assert scoring.agreement(pred, mask) == pytest.approx((1.0 + 0.5) / 2)
    assert scoring.agreement(torch.ones_like(mask), mask) == pytest.approx((0.0 + 1.0) / 2)
    assert math.isnan(scoring.agreement(pred, torch.full((4, 4), -1)))


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    sample.write_sen12ms(root / "src", scenes=3, patches_per_side=1, patch_size=64, seed=4)
    tile(TileOptions(sources=[str(root / "src")], out=root / "tiles", size=32, min_valid=0.0), progress=False)
    return root / "tiles"


def test_the_scorer_is_kept_for_the_same_chips_and_steps_and_trained_again_for_others(
    tiles, tmp_path, caplog
):
    normalizer = Normalizer.from_stats(tiles, "s2")
    caplog.set_level("INFO", logger="geogan.scoring")
    plan = scoring.recipe(tiles, IGBP, "lc", normalizer, 3)
    assert plan.fingerprint == scoring.recipe(tiles, IGBP, "lc", normalizer, 3).fingerprint
    assert plan.fingerprint != scoring.recipe(tiles, IGBP, "lc", normalizer, 4).fingerprint
    first = scoring.scorer(plan, tmp_path)
    assert first.fingerprint == plan.fingerprint
    assert "training the scorer" in caplog.text and "real training chips of" in first.description
    # Its skill, as the description gives it, is its mIoU on the folder's val + test chips.
    held = split_chips(tiles, "held", {"val", "test"}, IGBP, "lc", normalizer)
    assert held is not None and held.mask is not None
    per_class = usefulness.iou(usefulness.confusion(first.model, held.x, held.mask, len(IGBP), "cpu"))
    present = [c for c in range(len(IGBP)) if (held.mask == c).any()]
    assert f"4 real training chips of {tiles}; mIoU on its {len(held)} held-out chips" in first.description
    assert first.description.endswith(f"{np.nanmean(per_class[present]):.3f}")
    weights = (tmp_path / "scorer.pt").stat().st_mtime_ns
    caplog.clear()
    again = scoring.scorer(scoring.recipe(tiles, IGBP, "lc", normalizer, 3), tmp_path)
    assert "scorer taken from" in caplog.text and (tmp_path / "scorer.pt").stat().st_mtime_ns == weights
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    caplog.clear()
    scoring.scorer(
        scoring.recipe(tiles, IGBP, "lc", normalizer, 4), tmp_path
    )  # other settings: trained again
    assert "training the scorer" in caplog.text
    # A perfect segmenter agrees fully: the real chips' own masks score 1 against themselves.
    train = split_chips(tiles, "train", {"train"}, IGBP, "lc", normalizer)
    assert train is not None and train.mask is not None
    assert all(scoring.agreement(m, m) == 1 for m in torch.from_numpy(train.mask) if (m >= 0).any())
