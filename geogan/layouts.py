"""New mask layouts made from real masks, and choices of masks aimed at a class mix.

``geogan generate --like TILES`` (or ``--masks DIR``) conditions SPADE on real masks. Restyled copies
of the training masks add colour variety but no new layouts; published augmentation studies found
diverse masks, and masks aimed at rare classes, to matter more than the images' realism. Two levers
build on the real masks (an analyst's polygons keep their straight edges, which the mask GAN's
round shapes do not have):

- ``layout``: ``as-is`` (the masks themselves), ``warp`` (each mask flipped, rotated by any angle,
  scaled 0.8-1.25x and sheared up to 10 degrees, then gently bent by an elastic field; nearest
  resampling, so classes stay classes, with the border reflected so no corner is left empty), or
  ``mosaic`` (a canvas cut at a random point into four rectangles, each filled with the same part of
  a different mask, each turned by a random flip / 90 degree rotation first).
- ``balance``: which masks, and how often, chosen greedily so that the labelled pixels of the real
  training masks and of the synthetic ones together come as close as they can to an even share of
  every class the real masks hold (a mask is used at most :data:`MAX_REPEATS` times as often as an
  even draw would use it).

Torch's global generator draws the warps: ``geogan generate`` seeds it per batch, so a run is
repeatable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

MAX_REPEATS = 4  # a mask at most this many times its even share of the picks, under --balance


def warp(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) class indices (-1 unknown) -> the same, each randomly warped (see the module doc)."""
    from kornia.augmentation import RandomAffine, RandomElasticTransform, RandomHorizontalFlip

    size = masks.shape[-1]
    x = (masks + 1).float().unsqueeze(1)  # 0 = unknown; nearest resampling keeps the values
    x = RandomHorizontalFlip(p=0.5)(x)
    x = RandomAffine(
        degrees=180, scale=(0.8, 1.25), shear=10, resample="nearest", padding_mode="reflection", p=1.0
    )(x)
    kernel = 2 * (size // 4) + 1
    x = RandomElasticTransform(
        kernel_size=(kernel, kernel),
        sigma=(size / 8, size / 8),
        alpha=(0.5, 0.5),
        resample="nearest",
        padding_mode="reflection",
        p=1.0,
    )(x)
    return x.squeeze(1).round().long() - 1


def mosaic(parts: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) class indices -> (B, H, W): four rectangles around a random point, one from each."""
    b, four, h, w = parts.shape
    if four != 4:
        raise ValueError(f"a mosaic takes 4 masks each, got {four}")
    out = torch.empty(b, h, w, dtype=parts.dtype)
    for i in range(b):
        turned = [_turn(parts[i, j]) for j in range(4)]
        cy = int(torch.randint(h // 4, h - h // 4 + 1, ()))
        cx = int(torch.randint(w // 4, w - w // 4 + 1, ()))
        out[i, :cy, :cx] = turned[0][:cy, :cx]
        out[i, :cy, cx:] = turned[1][:cy, cx:]
        out[i, cy:, :cx] = turned[2][cy:, :cx]
        out[i, cy:, cx:] = turned[3][cy:, cx:]
    return out


def _turn(mask: torch.Tensor) -> torch.Tensor:
    """One of the 8 flips / 90 degree rotations of a square (H, H) mask, drawn at random."""
    mask = torch.rot90(mask, int(torch.randint(4, ())), dims=(0, 1))
    return torch.flip(mask, dims=(1,)) if bool(torch.randint(2, ())) else mask


def class_counts(masks: Sequence[np.ndarray] | np.ndarray, k: int) -> np.ndarray:
    """N masks of class indices (-1 unknown; any sizes) -> (N, K) labelled pixels of each class."""
    return np.stack([np.bincount(m[m >= 0].ravel(), minlength=k)[:k] for m in masks]).astype(np.float64)


def balanced_picks(counts: np.ndarray, real: np.ndarray, n: int) -> np.ndarray:
    """``n`` row numbers of ``counts`` (N, K), repeats allowed, chosen one at a time so that the class
    shares of ``real`` (K,) plus the picks' pixels come closest (L1) to even over the classes ``real``
    holds. Each row is picked at most ``MAX_REPEATS * ceil(n / N)`` times."""
    present = real > 0
    if not present.any():
        raise ValueError("--balance: the real masks hold no labelled pixels to balance")
    target = np.where(present, 1.0 / present.sum(), 0.0)
    cap = MAX_REPEATS * math.ceil(n / len(counts))
    used = np.zeros(len(counts), dtype=np.int64)
    total = real.astype(np.float64).copy()
    picks = np.empty(n, dtype=np.int64)
    for i in range(n):
        union = total[None, :] + counts
        shares = union / np.maximum(union.sum(1, keepdims=True), 1.0)
        distance = np.abs(shares - target).sum(1)
        distance[used >= cap] = np.inf
        best = int(np.argmin(distance))  # the first of equals: repeatable
        picks[i] = best
        used[best] += 1
        total += counts[best]
    return picks
