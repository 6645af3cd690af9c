"""New layouts from real masks (warp, mosaic) and masks chosen for an even class mix (--balance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geogan.layouts import MAX_REPEATS, balanced_picks, class_counts, mosaic, warp


def fields(n: int = 8, size: int = 32) -> torch.Tensor:
    """Masks of straight-edged fields: three classes in bands at random angles, unknown in a corner."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy) / size
        mask = (np.floor(t * 3) % 3).astype(np.int64)
        mask[: size // 4, : size // 4] = -1
        out.append(mask)
    return torch.from_numpy(np.stack(out))


def test_warp_keeps_classes_and_their_mix_but_makes_new_layouts():
    masks = fields()
    torch.manual_seed(0)
    warped = warp(masks)
    assert warped.shape == masks.shape and warped.dtype == torch.long
    assert set(warped.unique().tolist()) <= set(masks.unique().tolist())  # nearest: no new values
    same = (warped == masks).float().mean((1, 2))
    assert (same < 0.8).all(), same  # every mask moved
    before = class_counts(masks.numpy(), 3).sum(0)
    after = class_counts(warped.numpy(), 3).sum(0)
    assert np.abs(after / after.sum() - before / before.sum()).max() < 0.1  # about the same class mix
    torch.manual_seed(0)
    assert torch.equal(warp(masks), warped)  # seeded: repeatable


def test_a_mosaic_is_four_rectangles_one_from_each_mask():
    parts = torch.stack([torch.full((32, 32), c) for c in range(4)])[None].repeat(3, 1, 1, 1)
    torch.manual_seed(1)
    out = mosaic(parts)
    assert out.shape == (3, 32, 32)
    for m in out:
        assert set(m.unique().tolist()) == {0, 1, 2, 3}
        rows = (m == 0).any(1).sum().item()
        cols = (m == 0).any(0).sum().item()
        assert (m == 0).sum().item() == rows * cols  # class 0 fills one rectangle, in the top left
        assert m[0, 0] == 0 and m[0, -1] == 1 and m[-1, 0] == 2 and m[-1, -1] == 3
        assert 8 <= rows <= 24 and 8 <= cols <= 24  # cut around the middle half
    with pytest.raises(ValueError, match="4 masks each"):
        mosaic(parts[:, :3])


def test_balance_picks_masks_that_even_out_the_class_mix_with_a_cap_on_repeats():
    counts = np.array([[100.0, 0, 0], [0, 100, 0], [0, 0, 100], [50, 50, 0]])
    real = np.array([900.0, 100, 0])  # class 2 absent from the real masks: not aimed at
    picks = balanced_picks(counts, real, 8)
    chosen = np.bincount(picks, minlength=4)
    assert chosen[1] == 8  # the rare class 1, as often as the cap allows
    union = real + counts[picks].sum(0)
    assert union[0] == union[1]  # even
    # One mask of the rare class among 8: greedy would take it 10 times to even out 1000 against 10
    # pixels, the cap (4 x 16 picks / 8 masks) stops it at 8.
    counts = np.array([[0.0, 100, 0]] + [[100.0, 0, 0]] * 7)
    picks = balanced_picks(counts, np.array([1000.0, 10, 0]), 16)
    assert np.bincount(picks, minlength=8)[0] == MAX_REPEATS * 2
    with pytest.raises(ValueError, match="no labelled pixels"):
        balanced_picks(counts, np.zeros(3), 4)
