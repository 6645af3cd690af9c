"""``geogan demo``: procedural scenes (or the analyst's own) through every stage, as a pipeline.

The demo writes ``OUT/pipeline.yaml`` (procedural Flow Country scenes, or a SEN12MS folder given
with ``--input``) and runs it with :mod:`geogan.pipeline`: tile -> mask GAN (stage I) -> SPADE
(stage II) -> generate image + mask pairs -> evaluate. Everything is tiny, so it runs on a laptop
CPU in a few minutes; the models are for seeing the pipeline work, not for use. Running the demo
again, or ``geogan run OUT/pipeline.yaml``, only does what changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from rich.console import Console

from geogan.config import DemoOptions
from geogan.files import write_text

log = logging.getLogger(__name__)

Written = tuple[str, Path, str]

PIPELINE_FILE = "pipeline.yaml"
CHIP = 32  # px: small enough for a CPU

# The dual GAN in miniature: the options of each stage, exactly as the stage's command takes them.
_TINY = {"batch_size": 8, "sample_every": 50, "checkpoint_every": 50, "log_every": 10, "ema_images": 200,
         "lr_g": 1e-3, "lr_d": 2e-3}  # fmt: skip
STAGES: dict[str, dict] = {
    "tile": {"size": CHIP, "min_valid": 0.5},
    "masks": {
        "stage": "train",
        "model": "mask-gan",
        "steps": 100,
        "resolution": CHIP,
        "z_dim": 8,
        "num_up": 3,
        "channels": 16,
        "d_channels": 16,
        "d_layers": 3,
        **_TINY,
    },  # fmt: skip
    "images": {
        "stage": "train",
        "model": "spade",
        "steps": 150,
        "channels": 8,
        "z_dim": 8,
        "num_up": 3,
        "spade_hidden": 16,
        "d_channels": 16,
        "d_layers": 3,
        "num_d": 2,
        **_TINY,
    },  # fmt: skip
    "generate": {"n": 16, "batch_size": 8, "seed": 0, "mask_run": "masks"},
    "evaluate": {
        "max_tiles": 64,
        "encoder_steps": 20,
        "encoder_width": 8,
        "pixels": 2000,
        "swd_patches": 8,
        "device": "cpu",
    },  # fmt: skip
}


def _check_sen12ms(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a SEN12MS-layout folder)")
    if not any(root.glob("ROIs*/s2_*/*.tif")):
        raise FileNotFoundError(f"{root}: no SEN12MS-layout S2 patches (ROIs*/s2_*/ROIs*_s2_*_p*.tif) in it")


def pipeline_doc(options: DemoOptions) -> dict:
    """The demo's pipeline file, as a mapping (written to ``OUT/pipeline.yaml``)."""
    if options.input is not None:
        _check_sen12ms(options.input)
        source = {"kind": "sen12ms", "path": str(options.input.resolve())}
    else:
        source = {"kind": "procedural", "scenes": options.scenes, "patches_per_side": 2,
                  "patch_size": 64, "seed": options.seed}  # fmt: skip
    return {
        "name": "demo",
        "out": ".",
        "cluster": {"workers": 2, "threads": 1},
        "sources": {"scenes": source},
        "stages": STAGES,
    }


def run_demo(options: DemoOptions, console: Console) -> list[Written]:
    """Run the demo; return (stage, output, how to open it in QGIS) for each output."""
    from geogan.pipeline import load, run

    out = options.out
    doc = pipeline_doc(options)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PIPELINE_FILE
    write_text(
        path,
        "# Written by `geogan demo`; edit and re-run with `geogan run` (only what changed runs).\n"
        + yaml.safe_dump(doc, sort_keys=False),
    )
    result = run(load(path), console=console)
    if not result.ok:
        raise RuntimeError(f"the demo pipeline failed: {result.error} (run log: {result.log})")
    scenes = options.input or out / "sources" / "scenes"
    return [
        ("scenes", scenes, "Add Raster Layer: ROIs*/s2_*/*.tif (bands 4/3/2), lc_*/*.tif"),
        ("tile", out / "tile" / "index.gpkg", "Add Vector Layer: layer 'tiles' (chip footprints, classes)"),
        ("train", out / "images" / "samples", "PNG sample grids: mask | true colour | false colour"),
        (
            "generate",
            out / "generate",
            "images/*.tif with masks/*.tif (styled by the .qml beside them), the *.vrt mosaics, index.gpkg",
        ),  # fmt: skip
        ("evaluate", out / "evaluate" / "report.html", "open in a web browser; metrics.json for scripts"),
        ("pipeline", path, f"re-run: geogan run {path}"),
    ]
