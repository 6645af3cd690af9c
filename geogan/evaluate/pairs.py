"""Do the synthetic pairs agree with their masks, and do their masks look like the real ones?

Three plain measures, each beside the real chips' own figure, in ``metrics.json["pairs"]``:

* ``class_means``: for every class with enough pixels in both sets, the mean DN of each band under
  that class in the synthetic images against the real training chips', as a relative difference
  ``|synthetic - real| / real``. An image that ignores its mask has every class's means pulled
  towards the scene's mean; one that follows it has each class's own.
* ``class_mix``: the masks' class fractions (unknown / unlabelled pixels included as their own
  share), the number of classes a mask holds (classes with at least 1 % of its pixels) and the
  share of masks of one class only; the total variation distance between the two sets' fractions.
* ``mask_novelty``: for every synthetic mask, the share of its pixels that differ from the most alike
  real training mask (unknown pixels count as one more class), beside the same figure for each
  real mask against the other real ones: near 0, a mask is a training mask restyled; the real
  figure is how far apart the land's own layouts lie.
* ``border``: per band, the mean of the outer ``frame`` pixels of every chip against the mean of its
  interior, relative to the interior's. Real land has no edge, so its figure is the noise floor;
  a generator that paints a frame (zero padding, a bright rim) shows a larger one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geogan.bands import S2
from geogan.layouts import class_counts

MIN_PIXELS = 2000  # a class needs this many pixels in both sets for its means to be compared
PRESENT = 0.01  # a class counts as in a mask from this share of its pixels on


def class_means(dn: np.ndarray, mask: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, bands) mean DN under each class and (K,) pixel counts; ``mask`` -1 (unknown) is left out."""
    flat = mask.reshape(-1)
    pixels = dn.transpose(1, 0, 2, 3).reshape(dn.shape[1], -1).astype(np.float64)
    valid = (flat >= 0) & (pixels > 0).all(0)
    counts = np.bincount(flat[valid], minlength=classes)[:classes]
    sums = np.stack(
        [np.bincount(flat[valid], weights=band[valid], minlength=classes)[:classes] for band in pixels], 1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts


def compare_class_means(
    real_dn, real_mask, syn_dn, syn_mask, names: list[str], min_pixels: int = MIN_PIXELS
) -> dict:
    """Per class: real and synthetic band means, their relative differences, the worst band."""
    k = len(names)
    real, real_n = class_means(real_dn, real_mask, k)
    syn, syn_n = class_means(syn_dn, syn_mask, k)
    out: dict = {"min_pixels": min_pixels, "classes": {}}
    worst = []
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"real_pixels": int(real_n[i]), "synthetic_pixels": int(syn_n[i])}
        if real_n[i] >= min_pixels and syn_n[i] >= min_pixels:
            rel = np.abs(syn[i] - real[i]) / np.maximum(real[i], 1.0)
            band = int(np.argmax(rel))
            entry.update(
                real_mean=dict(zip(S2.band_names, np.round(real[i], 1).tolist(), strict=True)),
                synthetic_mean=dict(zip(S2.band_names, np.round(syn[i], 1).tolist(), strict=True)),
                relative_difference=dict(zip(S2.band_names, np.round(rel, 4).tolist(), strict=True)),
                worst_band=S2.band_names[band],
                worst=round(float(rel[band]), 4),
                median=round(float(np.median(rel)), 4),
            )
            worst.append(float(rel[band]))
        out["classes"][name] = entry
    out["compared"] = len(worst)
    out["worst"] = round(max(worst), 4) if worst else None
    out["median_of_worst"] = round(float(np.median(worst)), 4) if worst else None
    return out


def class_mix(mask: np.ndarray, names: list[str]) -> dict:
    """Class fractions (unknown as its own share), classes a mask holds and one-class masks."""
    k = len(names)
    flat = mask.reshape(mask.shape[0], -1)
    counts = class_counts(mask, k)  # (N, K)
    shares = counts / flat.shape[1]
    present = (shares >= PRESENT).sum(1)
    labelled = counts.sum()
    return {
        "fractions": {
            **dict(zip(names, np.round(counts.sum(0) / flat.size, 4).tolist(), strict=True)),
            "unknown": round(float((flat < 0).mean()), 4),
        },
        "labelled_fractions": dict(
            zip(names, np.round(counts.sum(0) / max(labelled, 1), 4).tolist(), strict=True)
        ),
        "classes_per_mask": round(float(present.mean()), 3),
        "one_class_masks": round(float((present <= 1).mean()), 3),
    }


def compare_class_mix(real_mask: np.ndarray, syn_mask: np.ndarray, names: list[str]) -> dict:
    real, syn = class_mix(real_mask, names), class_mix(syn_mask, names)
    keys = [*names, "unknown"]
    tv = 0.5 * sum(abs(real["fractions"][c] - syn["fractions"][c]) for c in keys)
    return {"real": real, "synthetic": syn, "total_variation": round(float(tv), 4)}


def border(dn: np.ndarray, frame: int = 2) -> dict:
    """Per band |mean of the outer ``frame`` px - mean of the interior| / interior mean; the worst band."""
    x = dn.astype(np.float64)
    inner = x[:, :, frame:-frame, frame:-frame]
    ring = x.sum((2, 3)) - inner.sum((2, 3))
    ring_n = x.shape[2] * x.shape[3] - inner.shape[2] * inner.shape[3]
    ring_mean = ring.sum(0) / (ring_n * x.shape[0])
    inner_mean = inner.mean((0, 2, 3))
    rel = np.abs(ring_mean - inner_mean) / np.maximum(inner_mean, 1.0)
    band = int(np.argmax(rel))
    return {
        "frame_px": frame,
        "worst_band": S2.band_names[band],
        "worst": round(float(rel[band]), 4),
        "relative_difference": dict(zip(S2.band_names, np.round(rel, 4).tolist(), strict=True)),
    }


COPY = 0.05  # a mask differing from a training mask in fewer of its pixels than this is a copy


def nearest_mask_distance(masks: np.ndarray, reference: np.ndarray, same: bool = False) -> np.ndarray:
    """For each of ``masks`` (N, H, W), the share of pixels that differ from its nearest of
    ``reference`` (M, H, W); ``same``: the two are one set, and a mask's own row is left out."""
    flat = reference.reshape(len(reference), -1)
    out = np.empty(len(masks))
    for i, mask in enumerate(masks.reshape(len(masks), -1)):
        differ = (flat != mask).mean(1)
        if same:
            differ[i] = np.inf
        out[i] = differ.min()
    return out


def mask_novelty(real_mask: np.ndarray, syn_mask: np.ndarray) -> dict:
    """Median distance of the synthetic and of the real masks to their nearest real mask, and copies."""
    syn = nearest_mask_distance(syn_mask, real_mask)
    real = nearest_mask_distance(real_mask, real_mask, same=True) if len(real_mask) > 1 else np.zeros(1)
    return {
        "synthetic_median": round(float(np.median(syn)), 4),
        "real_median": round(float(np.median(real)), 4),
        "copy_threshold": COPY,
        "synthetic_copies": round(float((syn < COPY).mean()), 4),
        "real_copies": round(float((real < COPY).mean()), 4),
    }


def pairs(real_dn, real_mask, syn_dn, syn_mask, names: list[str]) -> dict:
    """Everything above, for ``metrics.json["pairs"]``."""
    return {
        "class_means": compare_class_means(real_dn, real_mask, syn_dn, syn_mask, names),
        "class_mix": compare_class_mix(real_mask, syn_mask, names),
        "mask_novelty": mask_novelty(real_mask, syn_mask),
        "border": {"real": border(real_dn), "synthetic": border(syn_dn)},
    }
