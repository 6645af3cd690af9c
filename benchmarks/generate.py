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

Prints pairs/s of both, their ratio, and the share of the baseline's time in the model versus
writing, and writes them to ``benchmarks/RESULTS.md`` (this script's section).

    .venv/bin/python benchmarks/generate.py                # 48 pairs of 256 px, 2 workers
    .venv/bin/python benchmarks/generate.py -n 96 --size 64
"""

from __future__ import annotations

import argparse
import os
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
MARK = marks("generate.py")


def setup(root: Path, size: int) -> tuple[Path, Path]:
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
        SpadeOptions(**SPADE, tiles=tiles, out=run, steps=1, batch_size=4, split=None, sample_every=10),
    )
    return tiles, run


def baseline(options: GenerateOptions) -> dict[str, float]:
    """One process: model, then each pair written in turn, then the collections."""
    trained = load_generator(options.run, device=options.device)
    classes = scheme(trained.options.scheme)
    items = tile_masks(options.like, getattr(trained.options, "mask_role", None))
    provenance = export.Provenance(f"{trained.task.name} step {trained.step}", trained.sha256, classes)
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
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes [2]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the model [1]")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="geogan-bench-generate-") as tmp:
        root = Path(tmp)
        tiles, run = setup(root, args.size)

        def options(out: str) -> GenerateOptions:
            return GenerateOptions(
                run=run,
                n=args.n,
                out=root / out,
                like=tiles,
                seed=0,
                batch_size=args.batch_size,
                workers=args.workers,
            )

        base = baseline(options("baseline"))
        with (
            local_cluster(args.workers) as cluster,
            Client(cluster) as client,
        ):
            client.run(lambda: None)  # workers up before the clock starts
            start = time.perf_counter()
            summary = generate(options("geogan"), client=client)
            ours = time.perf_counter() - start
        assert summary.written == args.n, summary
        for i in (0, args.n - 1):  # the same pixels both ways
            a, b = (export.pair_paths(root / o, f"syn_{i:06d}")[0] for o in ("baseline", "geogan"))
            with rasterio.open(a) as x, rasterio.open(b) as y:
                assert (x.read() == y.read()).all(), f"pair {i} differs"

    model_share = base["model"] / base["wall"]
    write_share = base["write"] / base["wall"]
    coll_share = base["collections"] / base["wall"]
    lines = [
        MARK[0],
        "## Generation speed (`benchmarks/generate.py`)",
        "",
        f"Command: `.venv/bin/python benchmarks/generate.py -n {args.n} --size {args.size} "
        f"--batch-size {args.batch_size} --workers {args.workers} --threads {args.threads}`; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} on CPU, load average at start {load}. {args.n} SPADE image + mask pairs of "
        f"{args.size} px (13-band uint16 COG + uint8 mask COG with colour table, .qml, .aux.xml), "
        f"conditioned on the tile folder's masks; small SPADE configuration "
        + ", ".join(f"{k}={v}" for k, v in SPADE.items())
        + ". Setup (tiling, a one-step training run, cluster start) is not timed.",
        "",
        "| run | wall s | pairs/s | ratio to baseline |",
        "|---|---|---|---|",
        f"| baseline: one process, model then writes | {base['wall']:.1f} | "
        f"{args.n / base['wall']:.2f} | 1.00 |",
        f"| geogan generate, {args.workers} Dask worker processes | {ours:.1f} | {args.n / ours:.2f} | "
        f"{base['wall'] / ours:.2f} |",
        "",
        f"Baseline time: model {model_share:.0%} ({base['model']:.1f} s), writing pairs {write_share:.0%} "
        f"({base['write']:.1f} s), index + VRT + STAC {coll_share:.0%} ({base['collections']:.1f} s).",
        MARK[1],
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section("generate.py", section)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
