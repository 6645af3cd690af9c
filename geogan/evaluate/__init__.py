"""The evaluate stage: is the synthetic data faithful, novel and useful?

``evaluate(options)`` reads a real tile folder (``geogan tile``) and a synthetic pairs folder
(``geogan generate``) and writes ``REPORT_DIR/report.html`` with PNG figures beside it,
``metrics.json`` and the feature encoder's weights (``encoder.pt``). The parts:

- :mod:`geogan.evaluate.data`: real chips split by scene as training split them; synthetic pairs.
- :mod:`geogan.evaluate.fidelity`: distribution distances and encoder-feature metrics.
- :mod:`geogan.evaluate.novelty`: nearest-training-chip distances, flagged copies, ``--drop-copies``.
- :mod:`geogan.evaluate.usefulness`: U-Nets trained four ways, scored on real held-out chips.
- :mod:`geogan.evaluate.report`: the HTML page, figures and metrics.json.

Order: fidelity and novelty look at every synthetic chip read; with ``drop_copies`` the flagged
pairs are then moved out of the synthetic folder, and the usefulness runs use the pairs left.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geogan import labels
from geogan.config import EvaluateOptions
from geogan.datasets import Normalizer
from geogan.evaluate import fidelity, novelty, pairs, report, usefulness
from geogan.evaluate.data import fingerprint, real_splits, synthetic_set
from geogan.files import replacing, write_text
from geogan.tiles import read_split
from geogan.training import check_device, load_error

log = logging.getLogger(__name__)
ENCODER_BATCH = 32  # chips per step of the feature encoder


@dataclass
class EvaluateSummary:
    out: Path
    report: Path
    metrics: Path
    copies: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    verdict: str | None = None
    figures: dict[str, str | None] = field(default_factory=dict)


def _encoder(out: Path, train, classes: int, options: EvaluateOptions, device: str, progress: bool):
    """The feature encoder: the one in ``out/encoder.pt`` when it was trained on the same chips with
    the same settings (recorded in ``out/.encoder.json``), else a newly trained one, saved there."""
    settings = [options.encoder_steps, ENCODER_BATCH, options.seed, options.encoder_width, device, classes]
    key = fingerprint(settings, train.x, train.mask)
    weights, saved = out / "encoder.pt", out / ".encoder.json"
    try:
        meta = json.loads(saved.read_text())
        if meta["fingerprint"] == key:
            record = fidelity.EncoderRecord(**meta["record"])
            model = fidelity.Encoder(
                train.x.shape[1], width=options.encoder_width, classes=classes if record.class_head else 0
            )
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            log.info("feature encoder taken from %s (same chips and settings)", weights)
            return model.to(device).eval(), record
    except FileNotFoundError:
        pass
    except Exception as err:  # a corrupt or crafted file: trained again, and written over
        log.warning("%s: not used, trained again (%s)", weights if saved.exists() else saved, load_error(err))
    model, record = fidelity.train_encoder(
        train.x,
        train.mask,
        classes,
        options.encoder_steps,
        batch_size=ENCODER_BATCH,
        seed=options.seed,
        width=options.encoder_width,
        device=device,
        progress=progress,
    )
    with replacing(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    write_text(saved, json.dumps({"fingerprint": key, "record": record.to_dict()}))
    return model, record


def evaluate(options: EvaluateOptions, progress: bool = True) -> EvaluateSummary:
    """Run the evaluate stage; see the module docstring for what it writes."""
    device = check_device(options.device)
    for path, what in ((options.real, "real tile folder"), (options.synthetic, "synthetic pairs folder")):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder (the {what})")
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"{out}: cannot write the report into this folder")
    scheme = labels.scheme(options.scheme)
    normalizer = Normalizer.from_stats(options.real, "s2")
    train, held, scenes = real_splits(
        options.real,
        scheme,
        options.mask_role,
        normalizer,
        options.max_tiles,
        options.seed,
        progress,
    )
    syn = synthetic_set(options.synthetic, scheme, normalizer, options.max_tiles, options.seed, progress)
    log.info("read %d training, %d held-out and %d synthetic chips", len(train), len(held), len(syn))
    if syn.x.shape[-2:] != train.x.shape[-2:]:
        (h, w), (rh, rw) = syn.x.shape[-2:], train.x.shape[-2:]
        raise ValueError(
            f"{options.synthetic}: the pairs are {w} x {h} px, the real chips of {options.real} {rw} x {rh} "
            "px; compare pairs generated at the tiles' size"
        )

    encoder, record = _encoder(out, train, len(scheme), options, device, progress)
    feats = {s.name: fidelity.encoder_features(encoder, s.x) for s in (train, held, syn)}

    def compare(chips):
        return fidelity.compare(
            chips.x,
            chips.dn,
            train.x,
            train.dn,
            feats[chips.name],
            feats[train.name],
            pixels=options.pixels,
            patches=options.swd_patches,
            k=options.knn,
            seed=options.seed,
        )

    metrics: dict[str, Any] = {
        "inputs": {**options.model_dump(mode="json"), "device": device},
        "real": {
            "train_chips": len(train),
            "held_out_chips": len(held),
            "train_scenes": scenes["real train"],
            "held_out_scenes": scenes["real held-out"],
            "split": {k: v for k, v in read_split(options.real).items() if k != "chips"},
        },
        "synthetic": {"chips": len(syn), "masks": syn.mask is not None},
        "encoder": record.to_dict(),
        "fidelity": {"synthetic": compare(syn), "held_out": compare(held)},
    }
    found = novelty.novelty(syn.x, syn.ids, train.x, train.ids, held.x, options.novelty_size, progress)
    metrics["novelty"] = found.to_dict()
    if syn.mask is not None and train.mask is not None:
        metrics["pairs"] = pairs.pairs(train.dn, train.mask, syn.dn, syn.mask, list(scheme.names))
    copies = [c["id"] for c in found.copies]

    figures = _figures(out, train, held, syn, scheme, metrics, options)
    if options.drop_copies:
        metrics["dropped"] = novelty.drop_copies(options.synthetic, copies, options.scheme)
        syn = syn.subset(np.array([i not in set(copies) for i in syn.ids]))

    if options.usefulness:
        if syn.mask is None or train.mask is None:
            raise ValueError(
                f"usefulness needs masks: {options.synthetic} has none"
                if syn.mask is None
                else f"{options.real}: no {options.mask_role} mask chips"
            )
        assert held.mask is not None  # read with the same mask role as train.mask
        setup = usefulness.UsefulnessSetup(
            n_real=options.n_real,
            seeds=options.seeds,
            steps=options.steps,
            batch_size=options.batch_size,
            lr=options.lr,
            encoder=options.unet_encoder,
            minority_share=options.minority_share,
            synthetic_share=options.synthetic_share,
            pretrain_share=options.pretrain_share,
            device=device,
        )
        metrics["usefulness"] = usefulness.usefulness(
            train.x,
            train.mask,
            syn.x,
            syn.mask,
            held.x,
            held.mask,
            list(scheme.names),
            setup,
            progress,
            record=out / ".usefulness-runs.json",
        )
        figures["usefulness"] = report.usefulness_figure(metrics["usefulness"], out / "usefulness.png")

    metrics_path = report.write_json(out / "metrics.json", metrics)
    html_path = report.write_html(out / "report.html", report._clean(metrics), figures)
    log.info("wrote %s and %s", html_path, metrics_path)
    use = metrics.get("usefulness")
    return EvaluateSummary(
        out=out,
        report=html_path,
        metrics=metrics_path,
        copies=copies,
        dropped=metrics.get("dropped", {}).get("dropped", []),
        verdict=use["c_vs_b"]["sentence"] if use else None,
        figures=figures,
    )


def picture(
    tiles: Path, synthetic: Path, scheme_name: str, path: Path, mask_role: str = "lc", n: int = 8
) -> Path:
    """``path``: real training chips of ``tiles`` above synthetic pairs of ``synthetic`` (see
    :func:`report.real_and_synthetic`), for a README or a first look."""
    scheme = labels.scheme(scheme_name)
    normalizer = Normalizer.from_stats(tiles, "s2")
    train, _, _ = real_splits(tiles, scheme, mask_role, normalizer, None, 0, False)
    syn = synthetic_set(synthetic, scheme, normalizer, None, 0, False)
    return report.real_and_synthetic(train, syn, scheme, path, n)


def _figures(out, train, held, syn, scheme, metrics, options) -> dict[str, str | None]:
    """Every figure but the usefulness chart (drawn before --drop-copies moves any file)."""
    figs: dict[str, str | None] = {
        "samples_real": report.sample_grid(train, scheme, out / "samples_real.png"),
        "samples_synthetic": report.sample_grid(syn, scheme, out / "samples_synthetic.png", like=train),
        "bands": report.band_histograms(train, held, syn, out / "band_histograms.png"),
    }
    dists = {
        s.name: fidelity.spectral_indices(s.dn, min(options.pixels, 100_000), options.seed)
        for s in (train, held, syn)
    }
    figs["indices"] = report.index_histograms(dists, out / "indices.png")
    figs["correlation"] = report.correlation_figure(
        fidelity.correlation_matrix(train.x, train.dn, options.pixels, options.seed),
        fidelity.correlation_matrix(syn.x, syn.dn, options.pixels, options.seed),
        out / "correlation.png",
    )
    figs["novelty"] = report.novelty_figure(metrics["novelty"], out / "novelty.png")
    figs["copies"] = report.copies_figure(syn, train, metrics["novelty"]["copies"], out / "copies.png")
    figs["encoder"] = report.encoder_figure(metrics["encoder"], out / "encoder.png")
    return figs


__all__ = ["EvaluateSummary", "evaluate", "picture"]
