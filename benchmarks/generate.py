"""Generation speed: pairs written per second by ``geogan generate`` against a single process.

Sets up, untimed: procedural SEN12MS scenes tiled into ``--size`` px chips, a SPADE run (the
dual GAN's stage II, a small configuration) trained for one step on them, and a Dask
LocalCluster of ``--workers`` processes. Then writes the same ``-n`` image + mask pairs
(conditioned on the tile folder's own masks, ``--like``; same seed, so the same pixels) two
ways, in the same run:

- baseline: one process samples each batch, then writes its pairs one after the other with
  ``geogan.export.write_pair``, then the index, VRT mosaics and STAC catalogue. The time in
  the model, in writing pairs and in the collections is measured apart (they do not overlap).
- geogan: ``geogan.generate.generate`` on the cluster: the model samples the next batch while
  the workers write the last ones.

Prints pairs/s of both, their ratio, the share of the baseline's time in the model versus
writing, and geogan's pairs/s against the model's own samples/s (the baseline's model time
alone: writing hides behind the model when the ratio is near 1), and writes them to
``benchmarks/RESULTS.md`` (the section ``--section`` names). ``--workers`` takes several counts,
each a geogan run of its own; ``--config default`` uses SPADE as ``geogan train`` builds it.

    .venv/bin/python benchmarks/generate.py                # 48 pairs of 256 px, 2 workers
    .venv/bin/python benchmarks/generate.py -n 96 --size 64
    python benchmarks/generate.py -n 512 --size 256 --batch-size 64 --device cuda --config default \
        --workers 4 12 15 --section generate.py-gpu        # as benchmarks/gpu.sh runs it
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import rasterio
import torch
from distributed import Client
from results import RESULTS, marks, quiet_logs, write_section

from geogan import export, sample
from geogan.cluster import local_cluster
from geogan.config import GenerateOptions, TileOptions
from geogan.generate import GenerateSummary, conditional_batches, generate, tile_masks
from geogan.labels import scheme
from geogan.models.options import SpadeOptions
from geogan.tiling import tile
from geogan.training import load_generator, train

SPADE = dict(channels=16, z_dim=16, num_up=4, spade_hidden=16, d_channels=16, d_layers=2, num_d=1)


def setup(root: Path, size: int, config: str) -> tuple[Path, Path]:
    sample.write_sen12ms(root / "src", scenes=1, patches_per_side=3, patch_size=256, seed=2)
    tiles = root / "tiles"
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        tile(
            TileOptions(sources=[str(root / "src")], out=tiles, size=size, min_valid=0.0),
            client=client,
            progress=False,
        )
    run = root / "run"
    train(
        "spade",
        SpadeOptions(
            **(SPADE if config == "bench" else {}),
            tiles=tiles,
            out=run,
            steps=1,
            batch_size=4,
            split=None,
            sample_every=10,
        ),
    )
    return tiles, run


def baseline(options: GenerateOptions) -> dict[str, float]:
    """One process: model, then each pair written in turn, then the collections (after one untimed
    batch, so that the model's time is its steady time, not CUDA's start-up)."""
    trained = load_generator(options.run, device=options.device)
    classes = scheme(trained.options.scheme)
    # The masks generate takes: --like's train split (the folder's own masks the GAN saw).
    items = tile_masks(options.like, getattr(trained.options, "mask_role", None), options.like_split)
    provenance = export.Provenance(f"{trained.task.name} step {trained.step}", trained.sha256, classes)
    warm = options.model_copy(update={"n": options.batch_size})
    # One untimed batch first: CUDA's start-up is not the model's steady time.
    next(conditional_batches(trained, items, warm, GenerateSummary(out=options.out)))
    batches = conditional_batches(trained, items, options, GenerateSummary(out=options.out))
    model = write = 0.0
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        pairs = next(batches, None)
        model += time.perf_counter() - t0
        if pairs is None:
            break
        t0 = time.perf_counter()
        for pair in pairs:
            export.write_pair(options.out, pair, provenance)
        write += time.perf_counter() - t0
    t0 = time.perf_counter()
    export.write_collections(options.out, provenance)
    collections = time.perf_counter() - t0
    return {"wall": time.perf_counter() - start, "model": model, "write": write, "collections": collections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=48, help="pairs to write [48]")
    parser.add_argument("--size", type=int, default=256, help="tile size in px [256]")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per model call [8]")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="Dask worker processes [2]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the model [1]")
    parser.add_argument("--device", default="cpu", help="torch device of the model [cpu]")
    parser.add_argument(
        "--config", choices=["bench", "default"], default="bench", help="SPADE's size [bench: small]"
    )
    parser.add_argument("--section", default="generate.py", help="RESULTS.md section [generate.py]")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    ours: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="geogan-bench-generate-") as tmp:
        root = Path(tmp)
        tiles, run = setup(root, args.size, args.config)

        def options(out: str, workers: int = 1) -> GenerateOptions:
            return GenerateOptions(
                run=run,
                n=args.n,
                out=root / out,
                like=tiles,
                seed=0,
                batch_size=args.batch_size,
                workers=workers,
                device=args.device,
            )

        base = baseline(options("baseline"))
        for workers in args.workers:
            with (
                local_cluster(workers) as cluster,
                Client(cluster) as client,
            ):
                client.run(lambda: None)  # workers up before the clock starts
                start = time.perf_counter()
                summary = generate(options(f"geogan-{workers}", workers), client=client)
                ours[workers] = time.perf_counter() - start
            assert summary.written == args.n, summary
            for i in range(args.n):  # the same pixels both ways
                names = ("baseline", f"geogan-{workers}")
                a, b = (export.pair_paths(root / o, f"syn_{i:06d}")[0] for o in names)
                with rasterio.open(a) as x, rasterio.open(b) as y:
                    assert (x.read() == y.read()).all(), f"pair {i} differs"

    model_share = base["model"] / base["wall"]
    write_share = base["write"] / base["wall"]
    coll_share = base["collections"] / base["wall"]
    model_rate = args.n / base["model"]
    config = (
        "small SPADE configuration " + ", ".join(f"{k}={v}" for k, v in SPADE.items())
        if args.config == "bench"
        else "SPADE as `geogan train` builds it by default"
    )
    lines = [
        marks(args.section)[0],
        f"## Generation speed (`benchmarks/generate.py`{', GPU' if 'gpu' in args.section else ''})",
        "",
        "Command: `python benchmarks/generate.py " + " ".join(sys.argv[1:]) + "`; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, model on {device}, load average at start {load}. {args.n} SPADE image + mask "
        f"pairs of {args.size} px (13-band uint16 COG + uint8 mask COG with colour table, .qml, .aux.xml), "
        f"conditioned on the tile folder's masks; {config}. Setup (tiling, a one-step training run, "
        "cluster start) is not timed.",
        "",
        "| run | wall s | pairs/s | ratio to baseline | ratio to the model alone |",
        "|---|---|---|---|---|",
        f"| model alone (the baseline's model time: sampling and decoding to DN) | {base['model']:.1f} | "
        f"{model_rate:.2f} | | 1.00 |",
        f"| baseline: one process, model then writes | {base['wall']:.1f} | "
        f"{args.n / base['wall']:.2f} | 1.00 | {base['model'] / base['wall']:.2f} |",
    ]
    for workers, seconds in ours.items():
        lines.append(
            f"| geogan generate, {workers} Dask worker processes | {seconds:.1f} | {args.n / seconds:.2f} | "
            f"{base['wall'] / seconds:.2f} | {base['model'] / seconds:.2f} |"
        )
    lines += [
        "",
        f"Baseline time: model {model_share:.0%} ({base['model']:.1f} s), writing pairs {write_share:.0%} "
        f"({base['write']:.1f} s), index + VRT + STAC {coll_share:.0%} ({base['collections']:.1f} s).",
        marks(args.section)[1],
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(args.section, section)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
