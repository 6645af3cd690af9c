"""Does SPADE paint each class in its real colour? Its class-mean loss on and off, on real masks.

Trains the demo's SPADE (the ``images`` stage of a ``geogan demo`` output folder, its options as
recorded there) once for each ``--lambda-class-mean``, then draws an image for every real training
mask and compares, class by class, the mean DN of every band with the real chips' under the same
masks (:func:`geogan.evaluate.pairs.compare_class_means`). Real masks, not the mask GAN's, so the
figure is SPADE's alone. Writes its section of RESULTS.md.

    .venv/bin/geogan demo --out /tmp/demo
    cd benchmarks && ../.venv/bin/python class_means.py --demo /tmp/demo
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from results import quiet_logs, write_section

from geogan.datasets import ChipDataset
from geogan.evaluate.pairs import compare_class_means
from geogan.labels import scheme
from geogan.models.options import SpadeOptions
from geogan.training import load_generator, train


def measure(demo: Path, weight: float, out: Path) -> dict:
    recorded = yaml.safe_load((demo / "images" / "config.yaml").read_text())["options"]
    options = SpadeOptions(**{**recorded, "out": out, "lambda_class_mean": weight, "sample_every": 10**6})
    started = time.perf_counter()
    train("spade", options)
    seconds = time.perf_counter() - started
    trained = load_generator(out)
    data = ChipDataset(options.tiles, split="train", scheme=options.scheme, mask_role=options.mask_role)
    items = [data[i] for i in range(len(data))]
    images = torch.stack([x["image"] for x in items])
    masks = torch.stack([x["mask"] for x in items])
    torch.manual_seed(0)
    fake = torch.cat([trained.sample({"mask": m})["image"] for m in masks.split(64)])
    decode = trained.normalizer.decode
    names = list(scheme(options.scheme).names)
    result = compare_class_means(
        decode(images.numpy()), masks.numpy(), decode(fake.numpy()), masks.numpy(), names
    )
    result["seconds"] = seconds
    return result


def section(demo: Path, runs: dict[float, dict]) -> str:
    names = list(next(iter(runs.values()))["classes"])
    lines = [
        "<!-- benchmarks/class_means.py: begin -->",
        "## SPADE's class means on the real masks (`benchmarks/class_means.py`)",
        "",
        f"    cd benchmarks && ../.venv/bin/python class_means.py --demo {demo}",
        "",
        "The demo's SPADE (its recorded options, 500 steps) trained once per weight of the class-mean",
        "loss; an image drawn for each real training mask, and per class the worst band's (and the",
        "median band's) relative difference of the mean DN from the real chips' under the same masks:",
        "",
        "| `lambda_class_mean` | " + " | ".join(names) + " | training |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for weight, result in runs.items():
        cells = []
        for name in names:
            entry = result["classes"][name]
            found = "worst" in entry
            cells.append(
                f"{entry['worst']:.1%} {entry['worst_band']} ({entry['median']:.1%})" if found else "-"
            )
        lines.append(f"| {weight:g} | " + " | ".join(cells) + f" | {result['seconds']:.0f} s |")
    lines += ["", "<!-- benchmarks/class_means.py: end -->", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a `geogan demo` output folder")
    parser.add_argument("--lambda-class-mean", type=float, nargs="+", default=[0.0, 10.0])
    args = parser.parse_args()
    quiet_logs()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for weight in args.lambda_class_mean:
            runs[weight] = measure(args.demo.resolve(), weight, Path(tmp) / f"spade-{weight:g}")
            worst = {n: e.get("worst") for n, e in runs[weight]["classes"].items()}
            print(f"lambda_class_mean {weight:g}: worst band per class {worst}", flush=True)
    text = section(args.demo, runs)
    print(text)
    write_section("class_means.py", text)


if __name__ == "__main__":
    main()
