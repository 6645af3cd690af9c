"""Usefulness: does adding synthetic pairs help a segmentation model on real data?

The same U-Net (segmentation-models-pytorch, encoder weights random: nothing is downloaded) is
trained for the same number of optimiser steps in four configurations and scored on the real
held-out chips (scenes never trained on):

- ``a``: N real training chips;
- ``b``: the same N real chips with random flips and 90 degree rotations (classical augmentation);
- ``c``: ``b`` plus every synthetic pair, batches drawn uniformly from the union (or with a fixed
  ``synthetic_share`` of each batch from the synthetic pairs), or, with ``pretrain_share``, the
  first share of the steps on the synthetic pairs alone and the rest on ``b``'s chips (pre-train,
  then fine-tune: the same steps in all);
- ``d``: the synthetic pairs only, with the same augmentation.

Each configuration runs once per seed; within a seed, all four start from the same weights and
the same N real chips (drawn with that seed), so ``c - b`` is a paired difference. Adam's
learning rate falls from ``lr`` to 0 over the steps (cosine; ``lr_schedule="constant"`` keeps it
as before 2026-12-07, when the same seeds' U-Nets scored lower on Havelland: benchmarks/RESULTS.md).
Scores: mean IoU over the classes present in the held-out masks, IoU per class, and the mean IoU
of the minority classes (those under ``minority_share`` of the real training pixels). Intervals
are 95% Student-t intervals over the seeds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from geogan.evaluate.data import fingerprint
from geogan.files import write_text
from geogan.progress import Progress

log = logging.getLogger(__name__)

CONFIGS = {
    "a": "N real",
    "b": "N real + flips/rot90",
    "c": "N real + flips/rot90 + synthetic",
    "d": "synthetic only (+ flips/rot90)",
}


@dataclass(frozen=True)
class UsefulnessSetup:
    n_real: int | None = None  # real training chips per run (None: all)
    seeds: int = 3
    steps: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    encoder: str = "resnet18"
    minority_share: float = 0.1
    synthetic_share: float | None = None  # share of each (c) batch drawn from synthetic (None: uniform)
    pretrain_share: float | None = None  # (c): this share of the steps on synthetic only, then real
    lr_schedule: str = "cosine"  # from lr down to 0 over the steps; "constant": lr throughout
    device: str = "cpu"


def unet(channels: int, classes: int, size: int, encoder: str = "resnet18") -> torch.nn.Module:
    """A U-Net with a randomly initialised encoder, as deep as ``size`` allows (at most 5 levels)."""
    import segmentation_models_pytorch as smp

    depth = 5
    while depth > 1 and size % 2**depth:
        depth -= 1
    return smp.Unet(
        encoder_name=encoder,
        encoder_weights=None,
        encoder_depth=depth,
        decoder_channels=(256, 128, 64, 32, 16)[:depth],
        in_channels=channels,
        classes=classes,
    )


def _augment(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per chip, one of the 8 flips/rotations, alike for image and mask."""
    xs, ys = [], []
    for i in range(len(x)):
        k = int(torch.randint(4, (), generator=generator))
        a, b = torch.rot90(x[i], k, dims=(-2, -1)), torch.rot90(y[i], k, dims=(-2, -1))
        if bool(torch.randint(2, (), generator=generator)):
            a, b = torch.flip(a, dims=(-1,)), torch.flip(b, dims=(-1,))
        xs.append(a)
        ys.append(b)
    return torch.stack(xs), torch.stack(ys)


def schedule(opt: torch.optim.Optimizer, setup: UsefulnessSetup):
    """The learning-rate scheduler of ``setup.lr_schedule`` (stepped once a step), None if constant."""
    if setup.lr_schedule == "constant":
        return None
    if setup.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, setup.steps)
    raise ValueError(f"lr_schedule must be constant or cosine, not {setup.lr_schedule!r}")


def train_unet(
    x: np.ndarray,
    y: np.ndarray,
    classes: int,
    setup: UsefulnessSetup,
    seed: int,
    augment: bool,
    on_step=None,
    weights: np.ndarray | None = None,
    pretrain: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> torch.nn.Module:
    """Train a fresh U-Net on chips ``x`` (N, C, H, W) and class indices ``y`` (N, H, W; -1 ignored).

    Batches are drawn with replacement, uniformly or with the chips' sampling ``weights``. With
    ``pretrain`` (chips, masks, steps), the first of the ``setup.steps`` steps draw from those.
    """
    torch.manual_seed(seed)
    model = unet(x.shape[1], classes, x.shape[-1], setup.encoder).to(setup.device)
    opt = torch.optim.Adam(model.parameters(), lr=setup.lr)
    cosine = schedule(opt, setup)
    generator = torch.Generator().manual_seed(seed + 1)
    data, target = torch.from_numpy(x), torch.from_numpy(y)
    p = torch.ones(len(data)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    pre_x, pre_y, first = pretrain if pretrain is not None else (x[:1], y[:1], 0)
    phases = [(torch.from_numpy(pre_x), torch.from_numpy(pre_y), torch.ones(len(pre_x))), (data, target, p)]
    model.train()
    for step in range(setup.steps):
        chips, masks, chance = phases[0 if step < first else 1]
        rows = torch.multinomial(chance, setup.batch_size, replacement=True, generator=generator)
        bx, by = chips[rows], masks[rows]
        if augment:
            bx, by = _augment(bx, by, generator)
        logits = model(bx.to(setup.device))
        loss = F.cross_entropy(logits, by.to(setup.device), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cosine is not None:
            cosine.step()
        if on_step is not None:
            on_step()
    model.eval()
    return model


@torch.no_grad()
def confusion(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, classes: int, device: str) -> np.ndarray:
    """(classes, classes) pixel counts, rows true, columns predicted; nodata pixels left out."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    for i in range(0, len(x), 32):
        pred = model(torch.from_numpy(x[i : i + 32]).to(device)).argmax(1).cpu().numpy()
        true = y[i : i + 32]
        keep = true >= 0
        counts += np.bincount(true[keep] * classes + pred[keep], minlength=classes * classes).reshape(
            classes, classes
        )
    return counts


def iou(counts: np.ndarray) -> np.ndarray:
    """IoU per class from a confusion matrix; NaN for classes absent from truth and prediction."""
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def interval(values: list[float]) -> dict[str, float]:
    """Mean and 95% Student-t interval of ``values`` (an interval of NaN for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan"), "n": len(v)}
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": len(v)}


def verdict(diffs: list[float]) -> dict[str, Any]:
    """Whether (c) beats (b): the paired mIoU differences c - b over seeds, in one plain sentence."""
    ci = interval(diffs)
    n = len(diffs)
    if n < 2:
        answer = "unclear"
        sentence = (
            f"With a single seed no interval can be given: (c) scored {ci['mean']:+.3f} mIoU against (b); "
            "run more seeds before deciding."
        )
    elif ci["ci_low"] > 0:
        answer = "yes"
        sentence = (
            f"Yes: adding the synthetic pairs (c) beats real data with classical augmentation (b) by "
            f"{ci['mean']:+.3f} mIoU (95% CI {ci['ci_low']:+.3f} to {ci['ci_high']:+.3f}, {n} seeds)."
        )
    elif ci["ci_high"] < 0:
        answer = "no"
        sentence = (
            f"No: adding the synthetic pairs (c) does worse than real data with classical augmentation (b), "
            f"{ci['mean']:+.3f} mIoU (95% CI {ci['ci_low']:+.3f} to {ci['ci_high']:+.3f}, {n} seeds)."
        )
    else:
        answer = "no"
        sentence = (
            f"No: adding the synthetic pairs (c) does not clearly beat real data with classical augmentation "
            f"(b): {ci['mean']:+.3f} mIoU (95% CI {ci['ci_low']:+.3f} to {ci['ci_high']:+.3f}, {n} seeds; "
            "the interval includes 0)."
        )
    return {"c_beats_b": answer == "yes", "answer": answer, "difference": ci, "sentence": sentence}


def scored_classes(
    real_y: np.ndarray, held_y: np.ndarray, classes: int, minority_share: float
) -> tuple[list[int], list[int], np.ndarray]:
    """The classes present in the held-out masks, the minority ones among them (under
    ``minority_share`` of the real training pixels; else the rarest), and every class's share."""
    present = [c for c in range(classes) if (held_y == c).any()]
    if not present:
        raise ValueError("the real held-out chips have no labelled pixels to score against")
    shares = np.bincount(real_y[real_y >= 0].ravel(), minlength=classes) / max(1, int((real_y >= 0).sum()))
    minority = [c for c in present if shares[c] < minority_share] or [min(present, key=lambda c: shares[c])]
    return present, minority, shares


def train_and_score(
    x: np.ndarray,
    y: np.ndarray,
    held_x: np.ndarray,
    held_y: np.ndarray,
    class_names: list[str],
    present: list[int],
    minority: list[int],
    setup: UsefulnessSetup,
    seed: int,
    augment: bool,
    on_step=None,
    weights: np.ndarray | None = None,
    pretrain: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> dict[str, Any]:
    """One U-Net trained on ``x``, ``y`` (see :func:`train_unet`) and scored on the held-out chips."""
    start = time.perf_counter()
    classes = len(class_names)
    model = train_unet(
        x, y, classes, setup, seed, augment, on_step=on_step, weights=weights, pretrain=pretrain
    )
    per_class = iou(confusion(model, held_x, held_y, classes, setup.device))
    return {
        "seed": seed,
        "miou": float(np.nanmean(per_class[present])),
        "minority_iou": float(np.nanmean(per_class[minority])),
        "per_class": {
            class_names[c]: (None if np.isnan(per_class[c]) else float(per_class[c])) for c in present
        },
        "train_chips": len(x),
        "seconds": round(time.perf_counter() - start, 2),
    }


def mixed(
    rx: np.ndarray, ry: np.ndarray, sx: np.ndarray, sy: np.ndarray, setup: UsefulnessSetup
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray, int] | None]:
    """(c)'s training data as :func:`train_unet` takes it: chips, masks, sampling weights and
    pre-training, from the real (``rx``, ``ry``) and synthetic (``sx``, ``sy``) sets and the
    setup's way of mixing them."""
    if setup.pretrain_share is not None:
        return rx, ry, None, (sx, sy, round(setup.steps * setup.pretrain_share))
    x, y = np.concatenate([rx, sx]), np.concatenate([ry, sy])
    if setup.synthetic_share is None:
        return x, y, None, None
    s = setup.synthetic_share
    return x, y, np.r_[np.full(len(rx), (1 - s) / len(rx)), np.full(len(sx), s / len(sx))], None


def _saved_runs(record: Path | None, fingerprint: str) -> dict[tuple[int, str], dict]:
    """{(seed, configuration): run} saved in ``record`` by a call with the same fingerprint."""
    try:
        saved = json.loads(record.read_text()) if record is not None else {}
    except (OSError, ValueError):
        return {}
    if saved.get("fingerprint") != fingerprint:
        return {}
    out = {}
    for run in saved.get("runs", []):
        run = dict(run)
        out[int(run["seed"]), run.pop("config")] = run
    if out:
        log.info("usefulness: %d finished runs taken from %s", len(out), record)
    return out


def usefulness(
    real_x: np.ndarray,
    real_y: np.ndarray,
    syn_x: np.ndarray,
    syn_y: np.ndarray,
    held_x: np.ndarray,
    held_y: np.ndarray,
    class_names: list[str],
    setup: UsefulnessSetup,
    progress: bool = True,
    record: Path | None = None,
) -> dict[str, Any]:
    """Train and score the four configurations over ``setup.seeds`` seeds; the table as a dict.

    With ``record``, each finished (seed, configuration) run is saved there as it ends, and a new
    call with the same data and setup takes the saved runs instead of training them again (each
    run is seeded on its own, so the results are those of an uninterrupted call).
    """
    classes = len(class_names)
    n_real = len(real_x) if setup.n_real is None else min(setup.n_real, len(real_x))
    if len(syn_x) == 0:
        raise ValueError("usefulness needs synthetic image + mask pairs; the synthetic folder has none")
    present, minority, shares = scored_classes(real_y, held_y, classes, setup.minority_share)
    runs: dict[str, list[dict]] = {k: [] for k in CONFIGS}
    arrays = (real_x, real_y, syn_x, syn_y, held_x, held_y)
    digest = fingerprint([dataclasses.asdict(setup), class_names], *arrays)
    saved = _saved_runs(record, digest)
    total = setup.seeds * len(CONFIGS) * setup.steps
    with Progress(disable=not progress) as bar:
        task = bar.add_task("usefulness: training U-Nets", total=total)
        for seed in range(setup.seeds):
            rows = np.sort(np.random.default_rng(seed).choice(len(real_x), n_real, replace=False))
            rx, ry = real_x[rows], real_y[rows]
            pools = {
                "a": (rx, ry, None, None, False),
                "b": (rx, ry, None, None, True),
                "c": (*mixed(rx, ry, syn_x, syn_y, setup), True),
                "d": (syn_x, syn_y, None, None, True),
            }
            for key, (px, py, weights, pretrain, augment) in pools.items():
                if (seed, key) in saved:
                    runs[key].append(saved[seed, key])
                    bar.advance(task, setup.steps)
                    continue
                runs[key].append(
                    train_and_score(
                        px,
                        py,
                        held_x,
                        held_y,
                        class_names,
                        present,
                        minority,
                        setup,
                        seed,
                        augment,
                        on_step=lambda: bar.advance(task),
                        weights=weights,
                        pretrain=pretrain,
                    )
                )
                log.info("usefulness seed %d config %s: mIoU %.3f", seed, key, runs[key][-1]["miou"])
                if record is not None:
                    finished = [{"config": k, **r} for k, rs in runs.items() for r in rs]
                    write_text(record, json.dumps({"fingerprint": digest, "runs": finished}))
    table = {}
    for key, label in CONFIGS.items():
        r = runs[key]
        if key == "c" and setup.pretrain_share is not None:
            label = f"synthetic for {setup.pretrain_share:.0%} of the steps, then N real + flips/rot90"
        table[key] = {
            "label": label,
            "train_chips": r[0]["train_chips"],
            "miou": interval([x["miou"] for x in r]),
            "minority_iou": interval([x["minority_iou"] for x in r]),
            "per_class": {
                class_names[c]: interval([x["per_class"][class_names[c]] or 0.0 for x in r]) for c in present
            },
            "runs": r,
        }
    diffs = [c["miou"] - b["miou"] for b, c in zip(runs["b"], runs["c"], strict=True)]
    return {
        "setup": {
            **setup.__dict__,
            "n_real": n_real,
            "synthetic_pairs": len(syn_x),
            "held_out_chips": len(held_x),
            "chip_size": int(real_x.shape[-1]),
            "classes_scored": [class_names[c] for c in present],
            "minority_classes": [class_names[c] for c in minority],
            "real_training_share": {class_names[c]: float(shares[c]) for c in range(classes)},
        },
        "configs": table,
        "c_vs_b": verdict(diffs),
    }
