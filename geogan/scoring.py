"""Scoring synthetic pairs: does a segmenter trained on real chips see a pair's mask in its image?

``geogan generate --best-of K`` makes K candidate images of every pair (the same mask, K style
noises) and keeps the one whose image a segmenter, trained on the real training chips of the run's
tile folder, labels most like its mask. The score, **agreement**, is the mean over the mask's
classes (those of at least ``MIN_SHARE`` of its labelled pixels) of the share of the class's pixels
the segmenter labels as that class, so a rare class weighs as much as a common one. Candidates are
ranked only against candidates of the same mask: the segmenter's weakness on a class (a rare one
it seldom predicts) lowers every candidate of that mask alike and does not decide which masks stay.

The segmenter is the usefulness benchmark's U-Net (:func:`geogan.evaluate.usefulness.unet`, random
initial weights), trained with flips and rotations. Its weights are kept in the output folder
(``.geogan/scorer.pt``, with the fingerprint of its chips and settings), so a resumed run scores
with the same network. Every pair records that fingerprint, known before the scorer is trained
(:func:`recipe`), so a run resumed with another scorer is refused before it trains or saves
anything; the scorer's mIoU on the real held-out chips goes into the pairs' provenance, so the
analyst can judge the judge.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geogan.datasets import Normalizer
from geogan.evaluate.data import fingerprint, split_chips
from geogan.evaluate.usefulness import UsefulnessSetup, confusion, iou, train_unet, unet
from geogan.files import replacing, write_text
from geogan.labels import ClassScheme
from geogan.progress import Progress

log = logging.getLogger(__name__)

MIN_SHARE = 0.01  # classes under this share of a mask's labelled pixels do not count in its score


@dataclass
class Scorer:
    """A segmenter of real chips and what it is; :meth:`agreement` scores images against masks."""

    model: torch.nn.Module
    bands: int
    description: str  # what it is and how well it does on real held-out chips
    fingerprint: str  # of its training chips and settings (Recipe.fingerprint)

    @torch.no_grad()
    def agreement(self, images: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        """(B,) agreement of (B, bands, H, W) normalised images with (B, H, W) class indices
        (-1 = nodata); NaN for a mask without labelled pixels."""
        device = next(self.model.parameters()).device
        scores = []
        for i in range(0, len(images), 64):
            x = images[i : i + 64, : self.bands].float().to(device)
            pred = self.model(x).argmax(1).cpu()
            scores += [agreement(p, m) for p, m in zip(pred, masks[i : i + 64].cpu(), strict=True)]
        return np.array(scores, dtype=np.float64)


def agreement(pred: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over ``mask``'s classes (>= MIN_SHARE of its labelled pixels) of the share of the
    class's pixels that ``pred`` gives that class."""
    labelled = mask >= 0
    total = int(labelled.sum())
    if total == 0:
        return float("nan")
    true = mask[labelled]
    counts = torch.bincount(true)
    hits = torch.bincount(true[pred[labelled] == true], minlength=len(counts))
    kept = counts >= max(1, MIN_SHARE * total)
    return float((hits[kept].double() / counts[kept]).mean())


@dataclass
class Recipe:
    """What a scorer is trained on and how: its real training chips, settings and their fingerprint,
    known before it is trained, so a resumed ``generate`` can refuse pairs another scorer chose."""

    tiles: Path
    classes: ClassScheme
    mask_role: str | None
    normalizer: Normalizer  # the image run's
    x: np.ndarray  # normalised training images
    y: np.ndarray  # their class indices, -1 = nodata
    setup: UsefulnessSetup
    seed: int
    fingerprint: str


def recipe(
    tiles: Path,
    classes: ClassScheme,
    mask_role: str | None,
    normalizer: Normalizer,
    steps: int,
    device: str = "cpu",
    seed: int = 0,
) -> Recipe:
    """The scorer of ``tiles``' real training chips (``normalizer``: the image run's), ``steps`` long."""
    train = split_chips(tiles, "real train", {"train"}, classes, mask_role, normalizer)
    if train is None or train.mask is None or not (train.mask >= 0).any():
        raise ValueError(
            f"{tiles}: --best-of trains its scorer on labelled real chips; its train split has no mask chips "
            "with labels"
        )
    setup = UsefulnessSetup(steps=steps, device=device)
    k = len(classes)
    settings = [steps, seed, setup.encoder, setup.batch_size, setup.lr, setup.lr_schedule, k]
    key = fingerprint(settings, train.x, train.mask)
    return Recipe(tiles, classes, mask_role, normalizer, train.x, train.mask, setup, seed, key)


def scorer(plan: Recipe, folder: Path) -> Scorer:
    """The segmenter ``plan`` makes: the one saved in ``folder`` when its fingerprint is ``plan``'s,
    else a newly trained one, saved there. Its mIoU is measured on the tiles' val and test chips, if
    any."""
    x, y, k, setup, device = plan.x, plan.y, len(plan.classes), plan.setup, plan.setup.device
    weights, saved = folder / "scorer.pt", folder / "scorer.json"
    try:
        meta = json.loads(saved.read_text())
        if meta["fingerprint"] == plan.fingerprint:
            model = unet(x.shape[1], k, x.shape[-1], setup.encoder).to(device)
            model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
            log.info("scorer taken from %s (same chips and settings)", weights)
            return Scorer(model.eval(), x.shape[1], meta["description"], plan.fingerprint)
    except (OSError, ValueError, KeyError, RuntimeError):
        pass  # none saved, or not loadable: train one
    steps = setup.steps
    log.info(
        "training the scorer: a U-Net of %d steps on %d real training chips of %s", steps, len(x), plan.tiles
    )
    with Progress() as bar:
        task = bar.add_task("training the scorer", total=steps)
        model = train_unet(x, y, k, setup, plan.seed, augment=True, on_step=lambda: bar.advance(task))
    held = split_chips(
        plan.tiles, "real held-out", {"val", "test"}, plan.classes, plan.mask_role, plan.normalizer
    )
    present = [] if held is None or held.mask is None else [c for c in range(k) if (held.mask == c).any()]
    skill = "no held-out chips to measure it on"
    if held is not None and held.mask is not None and present:
        per_class = iou(confusion(model, held.x, held.mask, k, device))
        skill = f"mIoU on its {len(held)} held-out chips {float(np.nanmean(per_class[present])):.3f}"
    description = (
        f"U-Net ({setup.encoder}, {steps} steps, {setup.lr_schedule} lr), {len(x)} real training chips "
        f"of {plan.tiles}; {skill}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    write_text(saved, json.dumps({"fingerprint": plan.fingerprint, "description": description}))
    log.info("scorer: %s", description)
    return Scorer(model.eval(), x.shape[1], description, plan.fingerprint)


def best_of(
    images: torch.Tensor, masks: torch.Tensor, k: int, judge: Scorer
) -> tuple[torch.Tensor, list[float | None], list[int]]:
    """The best of ``k`` candidate images of each of B masks by ``judge``'s agreement: ``images``
    (k * B, bands, H, W) and ``masks`` (k * B, H, W) hold candidate j of mask i at row ``j * B + i``.
    Returns the kept images (B, ...), their agreement and which candidate each is."""
    n = len(masks) // k
    scores = judge.agreement(images, masks).reshape(k, n)
    best = np.nan_to_num(scores, nan=-1.0).argmax(0)
    kept = images.reshape(k, n, *images.shape[1:])[torch.from_numpy(best), torch.arange(n)]
    return kept, [float(scores[b, i]) for i, b in enumerate(best)], [int(b) for b in best]
