"""The evaluation report: ``report.html`` with PNG figures beside it, and ``metrics.json``.

The HTML page has no scripts, fonts or styles from elsewhere (open it from disk, mail it, archive
it); its pictures are the PNG files in the same folder. ``metrics.json`` holds every number the
page shows (NaN written as null) for scripts and dashboards.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from geogan.bands import FALSE_COLOUR, S2, TRUE_COLOUR, composite, stretch_limits
from geogan.evaluate.data import ChipSet
from geogan.evaluate.fidelity import INDICES, _pixels, valid_pixels
from geogan.files import replacing, write_text
from geogan.labels import ClassScheme

REAL, SYN, HELD = "#1f77b4", "#d62728", "#7f7f7f"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf as None, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, doc: dict) -> Path:
    return write_text(path, json.dumps(_clean(doc), indent=2, allow_nan=False))


def _subplots(*args, figsize: tuple[float, float], squeeze: bool = True):
    """A figure and its axes without pyplot: drawing a report never changes the caller's backend."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, squeeze=squeeze)


def _save(fig, path: Path) -> str:
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
    return path.name


# -- figures --------------------------------------------------------------------------------------------


def _limits(ref: ChipSet) -> dict[tuple[str, str, str], np.ndarray]:
    """One colour stretch for every picture drawn on ``ref``'s chips (as QGIS shows one layer)."""
    return {bands: stretch_limits(ref.dn, bands) for bands in (TRUE_COLOUR, FALSE_COLOUR)}


def _draw_chips(axes, chips: ChipSet, scheme: ClassScheme, limits: dict) -> None:
    """True colour, false colour and (where there are masks) mask of each chip down ``axes``'s columns."""
    for i in range(len(chips)):
        axes[0, i].imshow(composite(chips.dn[i], TRUE_COLOUR, limits=limits[TRUE_COLOUR]))
        axes[1, i].imshow(composite(chips.dn[i], FALSE_COLOUR, limits=limits[FALSE_COLOUR]))
        if chips.mask is not None:
            shown = scheme.colourise(scheme.to_value(chips.mask[i]))
            shown[chips.mask[i] < 0] = 255  # unlabelled: white
            axes[2, i].imshow(shown, interpolation="nearest")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])


def sample_grid(
    chips: ChipSet, scheme: ClassScheme, path: Path, n: int = 8, like: ChipSet | None = None
) -> str:
    """True colour, false colour and mask rows of up to ``n`` chips, unlabelled pixels in white.

    The colours are stretched over ``like``'s chips (default: these), one stretch for all, so
    that grids of real and synthetic chips drawn with the same ``like`` compare as QGIS shows them.
    """
    shown = chips.subset(np.arange(min(n, len(chips))))
    rows = 3 if chips.mask is not None else 2
    fig, axes = _subplots(rows, len(shown), figsize=(1.6 * len(shown), 1.7 * rows), squeeze=False)
    _draw_chips(axes, shown, scheme, _limits(like if like is not None else chips))
    for i, name in enumerate(shown.ids):
        axes[0, i].set_title(name[-18:], fontsize=6)
    for r, label in enumerate(["true colour", "false colour (B08 B04 B03)", "mask"][:rows]):
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(chips.name, fontsize=9)
    return _save(fig, path)


def real_and_synthetic(train: ChipSet, syn: ChipSet, scheme: ClassScheme, path: Path, n: int = 8) -> Path:
    """One picture: ``n`` real training chips above ``n`` synthetic pairs (true colour, false colour,
    mask; unlabelled in white), each set's most-labelled chips, all on the real chips' stretch."""
    picked = []
    for chips in (train, syn):
        labelled = (chips.mask >= 0).mean((1, 2)) if chips.mask is not None else np.ones(len(chips))
        picked.append(chips.subset(np.argsort(-labelled, kind="stable")[:n]))
    n = max(len(c) for c in picked)
    fig, axes = _subplots(6, n, figsize=(1.6 * n, 10.4), squeeze=False)
    limits = _limits(train)
    for block, chips in enumerate(picked):
        _draw_chips(axes[3 * block : 3 * block + 3], chips, scheme, limits)
        name = "real" if block == 0 else "synthetic"
        for r, label in enumerate(["true colour", "false colour", "mask"]):
            axes[3 * block + r, 0].set_ylabel(f"{name}\n{label}", fontsize=7)
    for ax in axes.ravel():
        for spine in ax.spines.values():
            spine.set_linewidth(0.3)
    handles = [Rectangle((0, 0), 1, 1, color=np.array(c.rgb) / 255) for c in scheme.classes]
    fig.legend(
        [*handles, Rectangle((0, 0), 1, 1, fc="white", ec="grey")],
        [*(c.name for c in scheme.classes), "unlabelled"],
        loc="lower center",
        ncol=min(len(scheme.classes) + 1, 9),
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(
        f"{train.name} chips (top) and synthetic pairs (bottom), the most-labelled {n} of each; "
        "one colour stretch (the real chips' 2-98 %)",
        fontsize=8,
    )
    fig.subplots_adjust(bottom=0.06, top=0.95, hspace=0.08, wspace=0.05)
    _save(fig, path)
    return path


def band_histograms(train: ChipSet, held: ChipSet, syn: ChipSet, path: Path, pixels: int = 100_000) -> str:
    rng = np.random.default_rng(0)
    sets = [
        (_pixels(s.x, valid_pixels(s.dn), pixels, rng), s.name, c)
        for s, c in ((train, REAL), (held, HELD), (syn, SYN))
    ]
    fig, axes = _subplots(3, 5, figsize=(14, 7.5))
    bins = np.linspace(-1, 1, 41)
    for b, ax in enumerate(axes.ravel()):
        if b >= S2.count:
            ax.axis("off")
            continue
        for values, name, colour in sets:
            ax.hist(values[b], bins=bins, density=True, histtype="step", color=colour, label=name)
        ax.set_title(S2.band_names[b], fontsize=8)
        ax.tick_params(labelsize=6)
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle("normalised values per band (real stats.json p01 -> -1, p99 -> +1)", fontsize=9)
    return _save(fig, path)


def index_histograms(dists: dict[str, dict[str, np.ndarray]], path: Path) -> str:
    fig, axes = _subplots(1, len(INDICES), figsize=(12, 3.2))
    bins = np.linspace(-1, 1, 61)
    colours = {0: REAL, 1: HELD, 2: SYN}
    for ax, name in zip(axes, INDICES, strict=True):
        for i, (label, d) in enumerate(dists.items()):
            ax.hist(d[name], bins=bins, density=True, histtype="step", color=colours[i], label=label)
        a, b = INDICES[name]
        ax.set_title(f"{name} = ({a} - {b}) / ({a} + {b})", fontsize=8)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def correlation_figure(real: np.ndarray, syn: np.ndarray, path: Path) -> str:
    fig, axes = _subplots(1, 3, figsize=(13, 4))
    for ax, m, title, cmap, lim in (
        (axes[0], real, "real training chips", "viridis", (-1, 1)),
        (axes[1], syn, "synthetic chips", "viridis", (-1, 1)),
        (axes[2], syn - real, "synthetic - real", "RdBu_r", (-1, 1)),
    ):
        im = ax.imshow(m, cmap=cmap, vmin=lim[0], vmax=lim[1])
        ax.set_xticks(range(S2.count), S2.band_names, rotation=90, fontsize=6)
        ax.set_yticks(range(S2.count), S2.band_names, fontsize=6)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def novelty_figure(result: dict, path: Path) -> str:
    fig, ax = _subplots(figsize=(7, 3.5))
    syn, held = np.asarray(result["synthetic"]), np.asarray(result["held_out"])
    top = max(syn.max(), held.max())
    bins = np.linspace(0, top * 1.05 + 1e-9, 41)
    ax.hist(held, bins=bins, density=True, alpha=0.5, color=HELD, label="real held-out")
    ax.hist(syn, bins=bins, density=True, alpha=0.5, color=SYN, label="synthetic")
    ax.axvline(result["threshold"], color="k", ls="--", label="copy threshold")
    ax.set_xlabel("distance to the nearest real training chip (RMS, normalised units)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def copies_figure(syn: ChipSet, train: ChipSet, copies: list[dict], path: Path, n: int = 8) -> str | None:
    copies = [c for c in copies if c["id"] in syn.ids][:n]
    if not copies:
        return None
    fig, axes = _subplots(2, len(copies), figsize=(1.8 * len(copies), 4), squeeze=False)
    for i, c in enumerate(copies):
        axes[0, i].imshow(composite(syn.dn[syn.ids.index(c["id"])]))
        axes[0, i].set_title(f"{c['id']}\nd={c['distance']:.3f}", fontsize=6)
        axes[1, i].imshow(composite(train.dn[train.ids.index(c["nearest"])]))
        axes[1, i].set_title(c["nearest"][-18:], fontsize=6)
    axes[0, 0].set_ylabel("synthetic", fontsize=7)
    axes[1, 0].set_ylabel("nearest training", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def encoder_figure(record: dict, path: Path) -> str:
    fig, ax = _subplots(figsize=(5, 3))
    steps, loss = zip(*record["curve"], strict=True) if record["curve"] else ((), ())
    ax.plot(steps, loss)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("feature encoder training", fontsize=9)
    return _save(fig, path)


def usefulness_figure(table: dict, path: Path) -> str:
    fig, ax = _subplots(figsize=(7, 3.5))
    keys = list(table["configs"])
    for i, k in enumerate(keys):
        for j, metric in enumerate(("miou", "minority_iou")):
            m = table["configs"][k][metric]
            err = None
            if m["ci_low"] is not None and math.isfinite(m["ci_low"]):
                err = [[m["mean"] - m["ci_low"]], [m["ci_high"] - m["mean"]]]
            label = ["mIoU", "minority-class IoU"][j] if i == 0 else None
            ax.bar(i + 0.38 * j, m["mean"], 0.36, yerr=err, capsize=3, color=[REAL, SYN][j], label=label)
    names = [f"({k}) {table['configs'][k]['label']}" for k in keys]
    ax.set_xticks([i + 0.19 for i in range(len(keys))], names, fontsize=7, rotation=12)
    ax.set_ylabel("IoU on real held-out chips")
    ax.legend(fontsize=7)
    return _save(fig, path)


# -- HTML -----------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.note{color:#555;font-size:.9em}.answer{font-size:1.1em;font-weight:600;padding:.5em;background:#f6f6e0}
"""


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_f(c)}</td>'
            if isinstance(c, int | float) or c is None
            else f"<td>{html.escape(str(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _ci(m: dict) -> str:
    if m["ci_low"] is None or not math.isfinite(m["ci_low"]):
        return f"{m['mean']:.3f}"
    return f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _img(name: str | None, alt: str) -> str:
    return f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>' if name else ""


def write_html(path: Path, metrics: dict, figures: dict[str, str | None]) -> Path:
    m = metrics
    fid_s, fid_h = m["fidelity"]["synthetic"], m["fidelity"]["held_out"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>geogan evaluation</title>"
        f"<style>{CSS}</style></head><body>",
        "<h1>geogan evaluation</h1>",
        f"<p>Real tiles <code>{html.escape(m['inputs']['real'])}</code>: {m['real']['train_chips']} training "
        f"chips ({len(m['real']['train_scenes'])} scenes), {m['real']['held_out_chips']} held-out chips "
        f"({len(m['real']['held_out_scenes'])} scenes; val + test of the tile folder's split by "
        f"{html.escape(str(m['real']['split']['method']))}, shares {m['real']['split']['fractions']}). "
        "Synthetic pairs "
        f"<code>{html.escape(m['inputs']['synthetic'])}</code>: {m['synthetic']['chips']} chips"
        f"{' with masks' if m['synthetic']['masks'] else ', no masks'}.</p>",
        "<h2>Samples</h2>",
        _img(figures.get("samples_real"), "real chips"),
        _img(figures.get("samples_synthetic"), "synthetic chips"),
        "<h2>Fidelity</h2>",
        "<p class='note'>Every distance compares a set with the real <b>training</b> chips; 0 means the same "
        "distribution. The held-out column is what real chips from other scenes score: synthetic values "
        "near it are as good as can be asked for. Precision and recall are fractions (1 is best).</p>",
        _table(
            ["measure", "synthetic", "real held-out"],
            [
                [
                    "per-band Wasserstein-1 (mean over 13 bands)",
                    fid_s["band_wasserstein_mean"],
                    fid_h["band_wasserstein_mean"],
                ],
                *[
                    [
                        f"{k} Wasserstein-1",
                        fid_s["indices"][k]["wasserstein"],
                        fid_h["indices"][k]["wasserstein"],
                    ]
                    for k in INDICES
                ],
                [
                    "band correlation matrix, mean |difference|",
                    fid_s["correlation_difference"],
                    fid_h["correlation_difference"],
                ],
                [
                    "sliced Wasserstein, Laplacian pyramid (mean of levels)",
                    fid_s["swd"]["mean"],
                    fid_h["swd"]["mean"],
                ],
                [
                    "Fréchet distance (encoder features)",
                    fid_s.get("frechet_distance"),
                    fid_h.get("frechet_distance"),
                ],
                ["k-NN precision", fid_s.get("precision"), fid_h.get("precision")],
                ["k-NN recall", fid_s.get("recall"), fid_h.get("recall")],
            ],
        ),
        "<h3>Per band</h3>",
        _table(
            ["band", "W1 synthetic", "W1 held-out"],
            [[b, fid_s["band_wasserstein"][b], fid_h["band_wasserstein"][b]] for b in S2.band_names],
        ),
        _img(figures.get("bands"), "band histograms"),
        "<h3>Spectral indices</h3>",
        _table(
            ["index", "mean synthetic", "mean held-out", "mean real training"],
            [
                [
                    k,
                    fid_s["indices"][k]["mean"],
                    fid_h["indices"][k]["mean"],
                    fid_s["indices"][k]["reference_mean"],
                ]
                for k in INDICES
            ],
        ),
        _img(figures.get("indices"), "index distributions"),
        "<h3>Band correlation</h3>",
        _img(figures.get("correlation"), "band correlation matrices"),
        "<h3>Sliced Wasserstein distance per pyramid level (finest first)</h3>",
        _table(
            ["level", "synthetic", "real held-out"],
            [
                [i, a, b]
                for i, (a, b) in enumerate(zip(fid_s["swd"]["levels"], fid_h["swd"]["levels"], strict=True))
            ],
        ),
    ]
    enc = m["encoder"]
    parts += [
        "<h3>Feature encoder</h3>",
        f"<p>A convolutional autoencoder ({enc['parameters']:,} parameters, {enc['feature_dim']} "
        "features: mean and std of each code channel) trained here on the "
        f"{enc['chips']} real training chips: {enc['steps']} steps of {enc['batch_size']} chips, "
        f"Adam lr {enc['lr']}, seed {enc['seed']}, on {enc['device']}, "
        f"{enc['seconds']} s; loss {enc['loss_start']:.4f} at the start, {enc['loss_end']:.4f} at the end "
        f"(reconstruction MSE{' + class-share cross-entropy' if enc['class_head'] else ''}). "
        "Weights: <code>encoder.pt</code>. No pretrained network is used.</p>",
        _img(figures.get("encoder"), "encoder loss"),
    ]
    nov = m["novelty"]
    parts += [
        "<h2>Novelty</h2>",
        f"<p>Distance to the nearest real training chip (RMS of normalised values at {nov['size']} px, "
        f"smallest over flips and rotations). The nearest held-out real chip is {nov['threshold']:.4f} away; "
        f"<b>{nov['summary']['copies']} of {len(nov['synthetic'])}</b> synthetic chips are closer than that "
        "and are flagged as copies.</p>",
        _table(
            ["", "median", "min"],
            [
                ["synthetic", nov["summary"]["synthetic_median"], nov["summary"]["synthetic_min"]],
                ["real held-out", nov["summary"]["held_out_median"], nov["summary"]["held_out_min"]],
            ],
        ),
        _img(figures.get("novelty"), "novelty distances"),
    ]
    if nov["copies"]:
        parts.append(
            _table(
                ["flagged synthetic pair", "distance", "nearest training chip"],
                [[c["id"], c["distance"], c["nearest"]] for c in nov["copies"]],
            )
        )
        parts.append(_img(figures.get("copies"), "flagged copies"))
    drop = m.get("dropped")
    if drop is not None:
        parts.append(
            f"<p>--drop-copies: {len(drop['dropped'])} pairs moved to <code>dropped/</code> of the synthetic "
            "folder; its index.gpkg, VRT mosaics and STAC catalogue were rebuilt without them.</p>"
        )
    use = m.get("usefulness")
    parts.append("<h2>Usefulness</h2>")
    if use is None:
        parts.append("<p>Not run (add <code>--usefulness</code>).</p>")
    else:
        s = use["setup"]
        parts += [
            f"<p class='answer'>{html.escape(use['c_vs_b']['sentence'])}</p>",
            f"<p class='note'>U-Net ({html.escape(s['encoder'])} encoder, random weights), "
            f"{s['steps']} steps of {s['batch_size']} chips, Adam lr {s['lr']} ({s['lr_schedule']}), "
            f"{s['seeds']} seeds, "
            f"N = {s['n_real']} real chips, "
            f"{s['synthetic_pairs']} synthetic pairs, scored on {s['held_out_chips']} real held-out chips "
            f"of {s['chip_size']} px. mIoU over the classes in the held-out masks "
            f"({html.escape(', '.join(s['classes_scored']))}); minority classes (under "
            f"{s['minority_share']:.0%} of real training pixels): "
            f"{html.escape(', '.join(s['minority_classes']))}."
            " Values are means with 95% t-intervals over seeds.</p>",
            _table(
                ["config", "training chips", "mIoU", "minority-class IoU"],
                [
                    [f"({k}) {c['label']}", c["train_chips"], _ci(c["miou"]), _ci(c["minority_iou"])]
                    for k, c in use["configs"].items()
                ],
            ),
            "<h3>IoU per class</h3>",
            _table(
                ["class", *[f"({k})" for k in use["configs"]]],
                [
                    [name, *[_ci(c["per_class"][name]) for c in use["configs"].values()]]
                    for name in s["classes_scored"]
                ],
            ),
            _img(figures.get("usefulness"), "usefulness"),
        ]
    parts.append("<p class='note'>All numbers are in metrics.json beside this page.</p></body></html>")
    return write_text(path, "\n".join(p for p in parts if p))
