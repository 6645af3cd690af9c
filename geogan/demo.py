"""``geogan demo``: procedural scenes (or the analyst's own) through every stage that exists."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from geogan import sample
from geogan.config import DemoOptions

log = logging.getLogger(__name__)

Written = tuple[str, Path, str]


def _check_sen12ms(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a SEN12MS-layout folder)")
    if not any(root.glob("ROIs*/s2_*/*.tif")):
        raise FileNotFoundError(f"{root}: no SEN12MS-layout S2 patches (ROIs*/s2_*/ROIs*_s2_*_p*.tif) in it")


def run_demo(options: DemoOptions, console: Console) -> list[Written]:
    """Run the demo; return (stage, output, how to open it in QGIS) for each output."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    written: list[Written] = []

    if options.input is not None:
        scenes = options.input
        _check_sen12ms(scenes)
        log.info("using the scenes in %s", scenes)
    else:
        scenes = out / "scenes"
        paths = sample.write_sen12ms(scenes, scenes=options.scenes, seed=options.seed, progress=True)
        log.info("procedural scenes: %d S2 patches in %s", len(paths), scenes)
    written.append(("scenes", scenes, "Layer > Add Layer > Add Raster Layer: ROIs*/s2_*/*.tif"))
    return written
