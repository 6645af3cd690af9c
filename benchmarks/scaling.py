"""How the stages' cost grows with the work: time and peak memory of tile, train, generate, evaluate.

Every stage runs as a user runs it, the ``geogan`` command in a process of its own; its wall time
and the peak resident memory of the largest process of its tree (the command or one of its Dask
workers, from ``wait4``) are recorded. The work grows:

* **tile**: made 13-band uint16 scenes (``benchmarks/tiling.make_scene``) of 2048, 4096 and 10980 px
  into 256 px chips (64, 256 and 1764 chips), and 64 px chips of scenes that hold 100, 1024 and
  10 000 of them (640, 2048 and 6400 px), 2 local workers;
* **train**: MSG-StyleGAN, ``--preset tiny`` at 64 px, on those 100, 1024 and 10 000 chips: the
  steady seconds a step (two runs' difference, as ``benchmarks/train_loop.py``) and the peak;
* **generate**: 100, 1024 and 10 000 pairs from that run (2 workers);
* **evaluate**: fidelity and novelty of those pairs against the tiles, ``--max-tiles`` as many as
  there are up to :data:`MAX_COMPARED` (everything it compares is in memory);
* **usefulness seeds**: ``evaluate --usefulness`` with 1, 3 and 5 seeds on a procedural SEN12MS
  tile folder and SPADE pairs on its masks (small U-Nets: it is the growth that is measured).

The growth column is time (and memory) at the largest size over the smallest, beside the growth of
the work itself: a stage above the work's growth grows worse than linearly.

    .venv/bin/python benchmarks/scaling.py                    # about 15 min on 2 cores
    .venv/bin/python benchmarks/scaling.py --quick            # the two smaller sizes only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tiling import make_scene

GEOGAN = str(Path(sys.executable).with_name("geogan"))
# evaluate holds the chips it compares in memory (about 3 GB for 1024 of each set): 3000 at most
# here, on a 24 GB machine; its --max-tiles, not the folder's size, sets its cost.
MAX_COMPARED = 3000
TINY_MSG = ["--preset", "tiny", "--batch-size", "8", "--split", "train", "--sample-every", "100000"]


# A small launcher between this process and geogan: a forked child's peak memory (ru_maxrss) starts
# at its parent's, so geogan is started from this near-empty process, never from the benchmark.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(f"\\ngeogan-peak-kb {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}\\n")
"""


def measure(args: list[str]) -> tuple[float, float]:
    """Run ``geogan ARGS``: (wall seconds, peak MB of the largest process of its tree)."""
    env = {**os.environ, "GEOGAN_PROGRESS": "lines", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, GEOGAN, *args], stderr=subprocess.PIPE, env=env, check=False
    )
    seconds = time.perf_counter() - start
    errors = done.stderr.decode()
    last = errors.rstrip().rsplit("\n", 1)[-1].split()
    if last[:1] != ["geogan-peak-kb"] or last[2] != "0":
        raise RuntimeError(f"geogan {' '.join(args)} failed:\n{errors[-2000:]}")
    return seconds, int(last[1]) / 1024


def show(stage: str, work: str, seconds: float, peak: float, rows: list) -> None:
    rows.append((stage, work, seconds, peak))
    print(f"{stage:<22}{work:<26}{seconds:>10.2f}{peak:>10.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smaller sizes of each stage only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="geogan-bench-scaling-"))
    rows: list[tuple[str, str, float, float]] = []
    print(f"load average before: {os.getloadavg()}")
    print(f"{'stage':<22}{'work':<26}{'seconds':>10}{'peak MB':>10}", flush=True)
    try:
        scenes = (2048, 4096) if args.quick else (2048, 4096, 10980)
        for size in scenes:
            scene = make_scene(tmp / f"scene-{size}.tif", size)
            seconds, peak = measure(
                ["tile", f"s2={scene}", "--out", str(tmp / f"t256-{size}"), "--size", "256"]
            )
            show("tile 256 px", f"{size} px, {(size // 256) ** 2} chips", seconds, peak, rows)
            shutil.rmtree(tmp / f"t256-{size}")
            scene.unlink()
        chips = (100, 1024) if args.quick else (100, 1024, 10_000)
        for n in chips:
            side = int(round(n**0.5)) * 64
            scene = make_scene(tmp / f"scene64-{n}.tif", side)
            tiles = tmp / f"t64-{n}"
            seconds, peak = measure(
                ["tile", f"s2={scene}", "--out", str(tiles), "--size", "64", "--split", "blocks"]
            )
            show("tile 64 px", f"{side} px, {n} chips", seconds, peak, rows)
            scene.unlink()
            base = ["train", "msg-stylegan", "--tiles", str(tiles), *TINY_MSG]
            short, _ = measure([*base, "--out", str(tmp / f"run-{n}-a"), "--steps", "10"])
            long_, peak = measure([*base, "--out", str(tmp / f"run-{n}-b"), "--steps", "70"])
            show("train s/step (tiny)", f"{n} chips", (long_ - short) / 60, peak, rows)
            pairs = tmp / f"pairs-{n}"
            seconds, peak = measure(
                ["generate", "--run", str(tmp / f"run-{n}-b"), "-n", str(n), "--out", str(pairs)]
            )
            show("generate", f"{n} pairs", seconds, peak, rows)
            report = tmp / f"report-{n}"
            compared = min(n, MAX_COMPARED)
            seconds, peak = measure(
                ["evaluate", "--real", str(tiles), "--synthetic", str(pairs), "--out", str(report)]
                + ["--max-tiles", str(compared), "--encoder-steps", "50", "--encoder-width", "8"]
            )
            show("evaluate", f"{compared} of {n} chips a set", seconds, peak, rows)
            for folder in (pairs, report, tiles, tmp / f"run-{n}-a", tmp / f"run-{n}-b"):
                shutil.rmtree(folder)
        # Usefulness: SPADE pairs on the masks of a procedural SEN12MS tile folder.
        from geogan import sample

        sample.write_sen12ms(tmp / "sen12ms", scenes=2, patches_per_side=2, patch_size=128, seed=3)
        tiles = tmp / "t-sen12ms"
        measure(["tile", str(tmp / "sen12ms"), "--out", str(tiles), "--size", "32"])
        spade = tmp / "spade"
        measure(
            [
                "train",
                "spade",
                "--tiles",
                str(tiles),
                "--out",
                str(spade),
                "--preset",
                "tiny",
                "--steps",
                "20",
            ]
        )
        pairs = tmp / "spade-pairs"
        measure(["generate", "--run", str(spade), "--like", str(tiles), "-n", "32", "--out", str(pairs)])
        for seeds in (1, 3) if args.quick else (1, 3, 5):
            report = tmp / f"useful-{seeds}"
            seconds, peak = measure(
                ["evaluate", "--real", str(tiles), "--synthetic", str(pairs), "--out", str(report)]
                + ["--usefulness", "--seeds", str(seeds), "--steps", "30", "--batch-size", "8"]
                + ["--encoder-steps", "20", "--encoder-width", "8", "--device", "cpu"]
            )
            show("evaluate --usefulness", f"{seeds} seed(s)", seconds, peak, rows)
        print(f"load average after: {os.getloadavg()}")
        print("\ngrowth, largest over smallest (time, peak memory):")
        for stage in dict.fromkeys(r[0] for r in rows):
            found = [r for r in rows if r[0] == stage]
            first, last = found[0], found[-1]
            print(
                f"  {stage:<22}{first[1]} -> {last[1]}: time x{last[2] / first[2]:.1f}, "
                f"memory x{last[3] / first[3]:.1f}"
            )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
