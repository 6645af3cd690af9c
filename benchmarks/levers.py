"""Which synthetic pairs help? The levers of ``geogan generate`` side by side, on real held-out chips.

From one tile folder and one trained dual GAN (a SPADE run and a mask-GAN run), each variant
generates ``--n`` pairs with its ``geogan generate`` options; then, for every seed, one U-Net is
trained on the real training chips with flips and rotations (b) and one on (b) plus each variant's
pairs (c), all from the same weights and steps, and scored on the real held-out chips; variants that
set `synthetic_share` or `pretrain_share` mix their pairs that way instead of uniformly. The table:
c's mIoU, the paired difference c - b with its 95 % interval over the seeds, the minority classes'
IoU and the rarest class's. Finished runs are kept in ``--out/levers.json``: a re-run resumes.

    GEOGAN_SHARED_DATA=../shared/data .venv/bin/python benchmarks/real_data.py --out /tmp/real ...
    cd benchmarks && ../.venv/bin/python levers.py --tiles /tmp/real/havelland/tiles \
        --spade /tmp/real/havelland/spade --masks /tmp/real/havelland/masks --out /tmp/levers
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from results import quiet_logs, write_section

from geogan import labels
from geogan.config import GenerateOptions
from geogan.datasets import Normalizer
from geogan.evaluate.data import real_splits, synthetic_set
from geogan.evaluate.usefulness import UsefulnessSetup, interval, mixed, scored_classes, train_and_score
from geogan.files import write_text
from geogan.generate import generate

VARIANTS: dict[str, dict] = {
    "mask-GAN masks": {"mask_run": "{masks}"},
    "training masks": {"like": "{tiles}"},
    "training masks, warped": {"like": "{tiles}", "layout": "warp"},
    "training masks, mosaics": {"like": "{tiles}", "layout": "mosaic"},
    "training masks, balanced": {"like": "{tiles}", "balance": True},
    "training masks, balanced and warped": {"like": "{tiles}", "balance": True, "layout": "warp"},
    "training masks, share 0.1": {"like": "{tiles}", "synthetic_share": 0.1},
    "training masks, share 0.25": {"like": "{tiles}", "synthetic_share": 0.25},
    "training masks, pre-train then fine-tune": {"like": "{tiles}", "pretrain_share": 0.5},
    "mask-GAN masks, pre-train then fine-tune": {"mask_run": "{masks}", "pretrain_share": 0.5},
    "training masks, balanced, share 0.25": {"like": "{tiles}", "balance": True, "synthetic_share": 0.25},
    "training masks, best of 4": {"like": "{tiles}", "best_of": 4},
    "mask-GAN masks, best of 4": {"mask_run": "{masks}", "best_of": 4},
    "training masks, balanced, best of 4": {"like": "{tiles}", "balance": True, "best_of": 4},
    "training masks, best of 4, share 0.1": {"like": "{tiles}", "best_of": 4, "synthetic_share": 0.1},
    "training masks, balanced, share 0.1": {"like": "{tiles}", "balance": True, "synthetic_share": 0.1},
    "training masks, balanced, best of 4, share 0.1": {
        "like": "{tiles}",
        "balance": True,
        "best_of": 4,
        "synthetic_share": 0.1,
    },
    "longer-trained SPADE, training masks": {"run": "{longer}", "like": "{tiles}"},
    "OASIS SPADE, training masks": {"run": "{oasis}", "like": "{tiles}"},
    "OASIS SPADE, training masks, share 0.1": {"run": "{oasis}", "like": "{tiles}", "synthetic_share": 0.1},
    "encoder SPADE, training masks": {"run": "{encoder}", "like": "{tiles}"},
    "encoder SPADE, training masks, real chips' styles": {
        "run": "{encoder}",
        "like": "{tiles}",
        "style_from": "{tiles}",
    },
}
RUNS = ("encoder", "longer", "oasis")  # the other SPADE runs some variants name: --encoder RUN ...
MIXING = ("synthetic_share", "pretrain_share")  # usefulness settings; the rest are generate's options


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path, required=True)
    parser.add_argument("--spade", type=Path, required=True, help="SPADE run folder")
    parser.add_argument("--masks", type=Path, required=True, help="mask-GAN run folder")
    parser.add_argument(
        "--encoder", type=Path, help="SPADE run trained with --encoder (the styles' variants)"
    )
    parser.add_argument("--longer", type=Path, help="the --spade run trained for more steps")
    parser.add_argument(
        "--oasis", type=Path, help="SPADE run trained with --discriminator oasis (its variants)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scheme", default="dfc2020")
    parser.add_argument("--n", type=int, default=256, help="pairs a variant")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds FIRST .. FIRST+SEEDS-1 (split a run over processes)"
    )
    parser.add_argument("--unet-steps", type=int, default=200)
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default=UsefulnessSetup.lr_schedule,
        help=f"the U-Nets' learning rate [{UsefulnessSetup.lr_schedule}]; constant: as before 2026-12-07",
    )
    parser.add_argument(
        "--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="none: (b) alone"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    quiet_logs()
    args.out.mkdir(parents=True, exist_ok=True)
    scheme = labels.scheme(args.scheme)
    names = list(scheme.names)
    normalizer = Normalizer.from_stats(args.tiles, "s2")
    train, held, _ = real_splits(args.tiles, scheme, "lc", normalizer, None, 0, False)
    assert train.mask is not None and held.mask is not None
    setup = UsefulnessSetup(
        seeds=args.seeds, steps=args.unet_steps, lr_schedule=args.lr_schedule, device="cpu"
    )
    present, minority, shares = scored_classes(train.mask, held.mask, len(names), setup.minority_share)
    rarest = min(present, key=lambda c: shares[c])

    runs = {"tiles": args.tiles, "masks": args.masks, **{flag: getattr(args, flag) for flag in RUNS}}
    pairs, folders = {}, {}
    for name in args.variants:
        for flag in RUNS:
            if f"{{{flag}}}" in VARIANTS[name].values() and getattr(args, flag) is None:
                parser.error(f"{name!r} needs --{flag} RUN")
        options = {
            "run": args.spade,
            **{
                k: (v.format(**runs) if isinstance(v, str) else v)
                for k, v in VARIANTS[name].items()
                if k not in MIXING
            },
        }
        key = json.dumps(options, sort_keys=True, default=str)  # variants mixing the same pairs: one folder
        if key not in folders:
            folders[key] = args.out / slug(name)
            started = time.perf_counter()
            generate(GenerateOptions(n=args.n, out=folders[key], seed=0, **options))
            print(f"{name}: {args.n} pairs in {time.perf_counter() - started:.1f} s", flush=True)
        syn = synthetic_set(folders[key], scheme, normalizer, None, 0, False)
        assert syn.mask is not None
        mixing = {k: v for k, v in VARIANTS[name].items() if k in MIXING}
        pairs[name] = mixed(train.x, train.mask, syn.x, syn.mask, dataclasses.replace(setup, **mixing))

    record = args.out / "levers.json"
    saved = json.loads(record.read_text()) if record.is_file() else {}
    runs: dict[str, list[dict]] = {"b": [], **{name: [] for name in args.variants}}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        jobs = {"b": (train.x, train.mask, None, None), **pairs}
        for key, (x, y, weights, pretrain) in jobs.items():
            done = saved.get(f"{seed}/{key}")
            if done is None:
                done = train_and_score(
                    x,
                    y,
                    held.x,
                    held.mask,
                    names,
                    present,
                    minority,
                    setup,
                    seed,
                    True,
                    None,
                    weights,
                    pretrain,
                )
                saved[f"{seed}/{key}"] = done
                write_text(record, json.dumps(saved))
            runs[key].append(done)
            print(f"seed {seed} {key}: mIoU {done['miou']:.3f}", flush=True)

    rows = []
    base = runs["b"]
    for key, rs in runs.items():
        m = interval([r["miou"] for r in rs])
        diff = (
            interval([r["miou"] - b["miou"] for r, b in zip(rs, base, strict=True)]) if key != "b" else None
        )
        minority_iou = interval([r["minority_iou"] for r in rs])["mean"]
        rare = interval([r["per_class"][names[rarest]] or 0.0 for r in rs])["mean"]
        label = "(b) real + flips/rotations" if key == "b" else f"(b) + {args.n} pairs: {key}"
        c_b = (
            "-"
            if diff is None
            else f"**{diff['mean']:+.3f}** ({diff['ci_low']:+.3f} .. {diff['ci_high']:+.3f})"
        )
        rows.append(f"| {label} | {m['mean']:.3f} | {c_b} | {minority_iou:.3f} | {rare:.3f} |")
    lines = [
        "<!-- benchmarks/levers.py: begin -->",
        "## Which pairs help: the levers of `geogan generate` (`benchmarks/levers.py`)",
        "",
        f"    cd benchmarks && ../.venv/bin/python levers.py --tiles {args.tiles} --spade {args.spade} \\",
        f"        --masks {args.masks} --out {args.out} --seeds {args.seeds} --unet-steps {args.unet_steps}"
        + (f" --first-seed {args.first_seed}" if args.first_seed else "")
        + "".join(f" --{f} {getattr(args, f)}" for f in RUNS if getattr(args, f)),
        "",
        f"{len(train.x)} real training chips, {len(held.x)} real held-out chips, {args.seeds} seeds, "
        f"U-Nets of {args.unet_steps} steps (resnet18, random init); c - b paired over the seeds, 95 % "
        f"interval; minority = {', '.join(names[c] for c in minority)}; rarest = {names[rarest]}.",
        "",
        f"| U-Net trained on | mIoU | c - b | minority IoU | {names[rarest]} IoU |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "<!-- benchmarks/levers.py: end -->",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("levers.py", text)


if __name__ == "__main__":
    main()
