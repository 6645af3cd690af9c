"""Tiling speed: geogan's Dask tile stage against a plain single-process rasterio loop.

Makes a 13-band uint16 scene (4096 x 4096 by default, ``--size 10980`` for a full Sentinel-2
tile) in a temporary folder, then tiles it into 256 px chips with the same compression (ZSTD at
geogan's default level, or ``--zstd-level``; predictor 2, 256 px blocks) three ways, in the same
run: the plain loop (read a window, write a chip), and geogan with a LocalCluster of 1 and of 2
worker processes (started as `geogan tile` starts them, with geogan.tiling imported; cluster start-up
is not timed, as the plain loop's process start and imports are not). Prints MB/s of each (scene
bytes / wall seconds), the ratio to the plain loop, the peak memory (RSS) of the plain loop's
process and of each geogan worker process, and the time of a re-run that finds everything done.

The three runs are made ``--repeat`` times in turn (plain, 2 workers, 1 worker, plain, ...), each
ratio against the plain loop of its own round, and the median ratio is reported: on a shared
machine one run's speed can change by a third from one minute to the next, so the 2-worker run,
the target's, comes right after its plain loop. Written data is flushed to disk (``os.sync``)
before each timed run, so that no run pays for writing back an earlier run's chips.

    .venv/bin/python benchmarks/tiling.py                        # 4096 x 4096, 3 rounds
    .venv/bin/python benchmarks/tiling.py --size 10980 --repeat 1

Target on a 2-core machine: geogan with 2 workers at least 1.7x the plain loop.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geogan.bands import S2
from geogan.config import TileOptions
from geogan.sample import CRS_DEMO, scene_transform
from geogan.tiling import tile

CHIP = 256


def make_scene(path: Path, size: int) -> Path:
    """A textured 13-band uint16 scene, written block row by block row (bounded memory)."""
    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=13,
        dtype="uint16",
        crs=CRS_DEMO,
        transform=scene_transform(1, size),
        nodata=0,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="zstd",
        predictor=2,
        BIGTIFF="IF_SAFER",
    )
    base = np.array([1300, 1050, 950, 800, 1200, 1900, 2200, 2400, 2500, 800, 20, 1800, 1200], np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = S2.band_names
        for row in range(0, size, 512):
            h = min(512, size - row)
            cols = np.arange(size, dtype=np.float32)
            field = 1 + 0.3 * np.sin(cols / 97.0)[None, :] * np.cos((row + np.arange(h)) / 131.0)[:, None]
            noise = rng.normal(1, 0.05, (13, h, size)).astype(np.float32)
            dst.write(
                (base[:, None, None] * field[None] * noise).clip(1, 65535).astype(np.uint16),
                window=Window(0, row, size, h),
            )
    return path


def plain_loop(scene: Path, out: Path, level: int) -> float:
    """The baseline: one process reads each window and writes it as a chip, no Dask."""
    out.mkdir()
    start = time.perf_counter()
    with rasterio.open(scene) as src:
        profile = dict(
            driver="GTiff",
            width=CHIP,
            height=CHIP,
            count=src.count,
            dtype=src.dtypes[0],
            crs=src.crs,
            nodata=src.nodata,
            tiled=True,
            blockxsize=CHIP,
            blockysize=CHIP,
            compress="zstd",
            zstd_level=level,
            predictor=2,
        )
        for row in range(0, src.height - CHIP + 1, CHIP):
            for col in range(0, src.width - CHIP + 1, CHIP):
                window = Window(col, row, CHIP, CHIP)
                data = src.read(window=window)
                with rasterio.open(
                    out / f"r{row}-c{col}.tif", "w", transform=src.window_transform(window), **profile
                ) as dst:
                    dst.write(data)
                    dst.descriptions = src.descriptions
    return time.perf_counter() - start


def peak_mb(dask_worker=None) -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from a parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_loop_alone(scene: Path, out: Path, level: int) -> tuple[float, float]:
    """The plain loop in a fresh process: its seconds and that process's peak memory in MB."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds = pool.submit(plain_loop, scene, out, level).result()
        return seconds, pool.submit(peak_mb).result()


def geogan_run(scene: Path, out: Path, workers: int, level: int) -> tuple[float, float, float]:
    """Seconds of a first run, seconds of a re-run, peak worker RSS in MB (cluster start excluded)."""
    from distributed import Client

    from geogan.cluster import local_cluster

    options = TileOptions(
        sources=[f"s2={scene}"], out=out, size=CHIP, workers=workers, min_valid=0.0, zstd_level=level
    )
    with local_cluster(workers) as cluster:  # as `geogan tile` starts it
        with Client(cluster) as client:
            first = tile(options, client=client, progress=False)
            assert first.ok and first.written > 0, first
            again = tile(options, client=client, progress=False)
            assert again.written == 0 and again.skipped == first.written, again
            peak = max(client.run(peak_mb).values())
    return first.seconds, again.seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="scene width and height in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three runs [3]")
    parser.add_argument(
        "--zstd-level",
        type=int,
        default=TileOptions.model_fields["zstd_level"].default,
        help="ZSTD level of every run's chips [geogan's default]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="geogan-bench-tiling-"))
    try:
        scene = make_scene(tmp / "scene.tif", args.size)
        mb = args.size * args.size * 13 * 2 / 1e6
        print(
            f"scene {args.size} x {args.size} x 13 uint16 = {mb:.0f} MB; "
            f"chips {CHIP} px, ZSTD level {args.zstd_level}"
        )
        print(f"load average before: {os.getloadavg()}")
        print(f"{'round':<6}{'run':<22}{'seconds':>9}{'MB/s':>9}{'ratio':>8}{'peak MB':>9}{'re-run s':>10}")
        ratios: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(1, args.repeat + 1):
            runs = tmp / f"round{round_}"
            runs.mkdir()
            os.sync()
            base, base_peak = plain_loop_alone(scene, runs / "plain", args.zstd_level)
            print(
                f"{round_:<6}{'plain rasterio loop':<22}{base:>9.2f}{mb / base:>9.1f}{1.0:>8.2f}"
                f"{base_peak:>9.0f}{'':>10}"
            )
            for workers in (2, 1):
                os.sync()
                seconds, again, peak = geogan_run(scene, runs / f"geogan{workers}", workers, args.zstd_level)
                name = f"geogan {workers} worker(s)"
                ratios[workers].append(base / seconds)
                print(
                    f"{'':<6}{name:<22}{seconds:>9.2f}{mb / seconds:>9.1f}{base / seconds:>8.2f}"
                    f"{peak:>9.0f}{again:>10.2f}"
                )
            if not args.keep:
                shutil.rmtree(runs)
        for workers, found in ratios.items():
            print(
                f"geogan {workers} worker(s) / plain loop: median {statistics.median(found):.2f}x "
                f"(rounds: {', '.join(f'{r:.2f}' for r in found)})"
            )
        print(f"load after: {os.getloadavg()}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
