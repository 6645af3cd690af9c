"""The pair measures of `geogan evaluate` (metrics.json "pairs") on arrays whose answer is known."""

from __future__ import annotations

import numpy as np

from geogan.evaluate import pairs

NAMES = ["water", "forest"]


def _chips(n: int = 4, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Left half water (DN 500 in every band), right half forest (DN 2000), a strip unknown."""
    mask = np.zeros((n, size, size), dtype=np.int64)
    mask[:, :, size // 2 :] = 1
    mask[:, :4, :] = -1
    dn = np.where(mask[:, None] == 1, 2000, 500).astype(np.uint16).repeat(13, 1)
    return dn, mask


def test_class_means_are_per_class_and_ignore_unknown():
    dn, mask = _chips()
    means, counts = pairs.class_means(dn, mask, 2)
    assert counts.tolist() == [4 * 28 * 16, 4 * 28 * 16]
    assert np.allclose(means[0], 500) and np.allclose(means[1], 2000)


def test_an_image_that_ignores_its_mask_is_far_from_the_class_means():
    dn, mask = _chips()
    follows = pairs.compare_class_means(dn, mask, dn, mask, NAMES, min_pixels=100)
    assert follows["compared"] == 2 and follows["worst"] == 0.0
    flat = np.full_like(dn, 1250)  # the scene's mean everywhere: no class of its own
    ignores = pairs.compare_class_means(dn, mask, flat, mask, NAMES, min_pixels=100)
    assert ignores["classes"]["water"]["worst"] == 1.5 and ignores["classes"]["forest"]["worst"] == 0.375
    few = pairs.compare_class_means(dn, mask, dn[:1], mask[:1], NAMES, min_pixels=1000)
    assert few["compared"] == 0 and "worst" not in few["classes"]["water"]  # too few pixels to judge


def test_class_mix_counts_classes_a_mask_and_one_class_masks():
    _, mask = _chips()
    mix = pairs.class_mix(mask, NAMES)
    assert mix["classes_per_mask"] == 2.0 and mix["one_class_masks"] == 0.0
    assert mix["fractions"]["unknown"] == 0.125 and mix["labelled_fractions"] == {"water": 0.5, "forest": 0.5}
    one = np.zeros_like(mask)  # every mask all water
    compared = pairs.compare_class_mix(mask, one, NAMES)
    assert compared["synthetic"]["one_class_masks"] == 1.0
    assert compared["total_variation"] == 0.5625  # |0.4375-1| + |0.4375-0| + |0.125-0|, halved


def test_border_finds_a_bright_frame_and_not_an_edge_free_image():
    dn = np.random.default_rng(0).normal(1000, 50, (8, 13, 32, 32)).clip(1).astype(np.uint16)
    assert pairs.border(dn)["worst"] < 0.01
    framed = dn.copy()
    framed[:, :, :2, :] = framed[:, :, -2:, :] = framed[:, :, :, :2] = framed[:, :, :, -2:] = 3000
    found = pairs.border(framed)
    assert found["worst"] > 1.0 and found["frame_px"] == 2


def test_mask_novelty_tells_a_restyled_training_mask_from_a_new_layout():
    rng = np.random.default_rng(0)
    real = rng.integers(-1, 3, size=(6, 16, 16))
    copy = real[:2].copy()
    copy[:, 0, 0] = (copy[:, 0, 0] + 1) % 3  # one pixel changed: still a copy
    new = np.rot90(real[2:4], 1, axes=(1, 2)).copy()  # the same classes, turned
    out = pairs.mask_novelty(real, np.concatenate([copy, new]))
    assert out["synthetic_copies"] == 0.5  # the two restyled ones
    assert pairs.nearest_mask_distance(copy, real).max() == 1 / 256
    assert pairs.nearest_mask_distance(new, real).min() > 0.5
    # The real masks against one another (their own row left out): random masks, far apart.
    assert out["real_copies"] == 0 and out["real_median"] > 0.5
