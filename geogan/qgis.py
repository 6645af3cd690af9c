"""geogan in the QGIS Processing Toolbox: the plugin's algorithms, made from the commands' option models.

``geogan qgis install`` copies the plugin (the ``geogan_processing`` package, installed beside
``geogan`` and never imported by it) into a QGIS profile and enables it; ``geogan qgis package``
zips it for QGIS's plugin manager.
Both write ``algorithms.json`` beside the plugin: one entry per stage command, each parameter a
field of the command's options model (:mod:`geogan.flags` makes the same command's flags), with
its QGIS type (raster and vector layers, folders, files, CRS, enums, numbers), its default and its
help. The plugin runs in QGIS's own Python, which need not have geogan: it runs the ``geogan``
command of this environment (recorded as ``executable``; a provider setting overrides it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo

import geogan
from geogan.errors import InputError
from geogan.files import write_text
from geogan.flags import flag, strip_none

PLUGIN = "geogan_processing"  # the plugin's package, and its folder name in a QGIS profile


def plugin_source() -> Path:
    """The plugin's folder, found without importing it (it imports qgis, which geogan's Python lacks)."""
    found = importlib.util.find_spec(PLUGIN)
    if found is None or not found.submodule_search_locations:
        raise InputError(f"the QGIS plugin package {PLUGIN} is not installed beside geogan; reinstall geogan")
    return Path(next(iter(found.submodule_search_locations)))


# (command, algorithm id, name shown, group, parameters shown in the dialog's main part; the rest
# go under "Advanced parameters")
ALGORITHMS: list[tuple[tuple[str, ...], str, str, str, set[str]]] = [
    (
        ("tile",),
        "tile",
        "Tile scenes into chips",
        "1 Tile and label",
        {"s2", "s1", "labels", "sources", "out", "size", "min_valid", "min_labelled", "split"},
    ),
    (
        ("labels", "rasterize"),
        "rasterize",
        "Rasterize polygon labels",
        "1 Tile and label",
        {"polygons", "tiles", "like", "out", "column", "scheme", "scheme_file", "background"},
    ),
    (
        ("train", "mask-gan"),
        "train_mask_gan",
        "Train the mask GAN (dual GAN stage I)",
        "2 Train",
        {"tiles", "out", "steps", "batch_size", "scheme", "scheme_file", "mask_role", "resume", "config"},
    ),
    (
        ("train", "spade"),
        "train_spade",
        "Train SPADE (dual GAN stage II)",
        "2 Train",
        {"tiles", "out", "steps", "batch_size", "scheme", "scheme_file", "mask_role", "resume", "config"},
    ),
    (
        ("train", "msg-stylegan"),
        "train_msg_stylegan",
        "Train MSG-StyleGAN",
        "2 Train",
        {"tiles", "out", "steps", "batch_size", "resolution", "resume", "config"},
    ),
    (
        ("generate",),
        "generate",
        "Generate synthetic pairs",
        "3 Generate and evaluate",
        {
            "run",
            "n",
            "out",
            "grid",
            "grid_extent",
            "crs",
            "like",
            "mask_run",
            "masks",
            "layout",
            "balance",
            "best_of",
            "seed",
        },
    ),
    (
        ("evaluate",),
        "evaluate",
        "Evaluate synthetic pairs",
        "3 Generate and evaluate",
        {"real", "synthetic", "out", "scheme", "scheme_file", "mask_role", "usefulness"},
    ),
]

# The QGIS type of a path field, by field name (and by command where it differs).
PATHS = {
    "out": "folder_out",
    "tiles": "folder",
    "run": "folder",
    "real": "folder",
    "synthetic": "folder",
    "mask_run": "folder",
    "masks": "folder",
    "like": "folder",
    "polygons": "vector",
    "grid": "vector",
    "checkpoint": "file",
    "config": "file",
}
COMMAND_PATHS: dict[tuple[str, ...], dict[str, str]] = {
    ("labels", "rasterize"): {"like": "raster", "out": "raster_out"}
}
SCHEMES = ["igbp", "dfc2020"]

# What each algorithm gives back: (output, kind, path from the parameters, description); QGIS
# opens the layers when the run ends (the VRTs with the .qml styles geogan writes beside them).
OUTPUTS = {
    "tile": [
        ("INDEX", "vector", "{OUT}/index.gpkg|layername=tiles", "Tile index (index.gpkg)"),
        ("OUT", "folder", "{OUT}", "Tile folder"),
    ],
    "rasterize": [
        ("OUTPUT", "raster", "{OUT}", "Label raster"),
        ("INDEX", "vector", "{TILES}/index.gpkg|layername=tiles", "Tile index with the mask chips"),
    ],
    "generate": [
        ("IMAGES", "layers", "{OUT}/images_*.vrt", "Generated images (a VRT mosaic per grid)"),
        ("MASKS", "layers", "{OUT}/masks_*.vrt", "Generated masks (a VRT mosaic per grid)"),
        ("INDEX", "vector", "{OUT}/index.gpkg|layername=pairs", "Index of the pairs"),
    ],
    "evaluate": [("REPORT", "file", "{OUT}/report.html", "Evaluation report (report.html)")],
    "run": [("OUT", "folder", "{OUT}", "Pipeline output folder")],
    **{
        ident: [("OUT", "folder", "{OUT}", "Run folder (checkpoints, samples, logs)")]
        for ident in ("train_mask_gan", "train_spade", "train_msg_stylegan")
    },
}


def executable() -> str | None:
    """This environment's ``geogan`` command (the one the plugin runs)."""
    beside = Path(sys.executable).with_name("geogan")
    return str(beside) if beside.is_file() else shutil.which("geogan")


def algorithms() -> dict[str, Any]:
    """The plugin's algorithms.json: every stage command's parameters, from its options model."""
    from geogan.cli import app

    commands = dict(_commands(app))
    entries = []
    for command, ident, name, group, main in ALGORITHMS:
        function = commands[command]
        params = _params(function, command, main)
        entries.append(
            {
                "id": ident,
                "name": name,
                "group": group,
                "group_id": group.split()[0],
                "command": list(command),
                "help": _help(function.__doc__ or "", params),
                "params": params,
                "outputs": [
                    dict(zip(("name", "kind", "path", "description"), o, strict=True)) for o in OUTPUTS[ident]
                ],
            }
        )
    entries.append(_run_pipeline())
    return {"version": geogan.__version__, "executable": executable(), "algorithms": entries}


def install(config_dir: Path | None = None, profile: str = "default", enable: bool = True) -> Path:
    """Copy the plugin into ``profile`` of the QGIS settings folder ``config_dir`` (default
    $QGIS_CUSTOM_CONFIG_PATH, else ~/.local/share/QGIS/QGIS3) and enable it there."""
    config_dir = config_dir or Path(os.environ.get("QGIS_CUSTOM_CONFIG_PATH") or "~/.local/share/QGIS/QGIS3")
    target = config_dir.expanduser() / "profiles" / profile / "python" / "plugins" / PLUGIN
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(plugin_source(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_text(target / "algorithms.json", json.dumps(algorithms(), indent=1))
    if enable:
        _enable(config_dir.expanduser(), profile)
    return target


def package(out: Path) -> Path:
    """The plugin as a zip QGIS's plugin manager installs (Install from ZIP)."""
    if out.suffix != ".zip":
        raise InputError(f"{out}: the package is a .zip file")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.geogan-tmp")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        source = plugin_source()
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, f"{PLUGIN}/{path.relative_to(source)}")
        archive.writestr(f"{PLUGIN}/algorithms.json", json.dumps(algorithms(), indent=1))
    partial.replace(out)
    return out


def _enable(config_dir: Path, profile: str) -> None:
    """Enable the plugin through QGIS itself (``qgis_process plugins enable``), where QGIS is here."""
    qgis_process = shutil.which("qgis_process.bin") or shutil.which("qgis_process")
    if qgis_process is None or profile != "default":
        return  # qgis_process works on the default profile; other profiles: the Plugin Manager
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(config_dir)}
    done = subprocess.run(
        [qgis_process, "plugins", "enable", PLUGIN], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise InputError(f"{config_dir}: QGIS could not enable the plugin ({done.stderr.strip()[-300:]})")


def _commands(app, prefix: tuple[str, ...] = ()):
    for info in app.registered_commands:
        yield (*prefix, info.name or info.callback.__name__.replace("_", "-")), info.callback
    for group in app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name))


def _params(function, command: tuple[str, ...], main: set[str]) -> list[dict]:
    model, arguments, names = function.options_model, function.arguments, function.names
    kinds = {**PATHS, **COMMAND_PATHS.get(command, {})}
    params: list[dict] = []
    if command == ("tile",):  # the sources: layers of the project, or SEN12MS folders and more
        for role, text, what in (
            ("s2", "Sentinel-2 L1C scene", "13 bands, uint16 digital numbers"),
            ("s1", "Sentinel-1 scene (onto the S2 grid)", "VV, VH in dB, warped onto the S2 grid"),
            ("labels", "Land-cover raster (onto the S2 grid)", "class ids of the scheme, onto the S2 grid"),
        ):
            params.append(
                {
                    "name": role.upper(),
                    "label": text,
                    "kind": "raster",
                    "flag": f"{role}=",
                    "positional": True,
                    "optional": True,
                    "description": f"{what} (geogan tile {role}=PATH)",
                }
            )
    for name, field in model.model_fields.items():
        if name in function.hidden:
            continue
        spec = _param(name, field, kinds, names.get(name, (flag(name),))[0])
        if name in arguments:
            spec.update(positional=True, flag="")
            if command == ("tile",):
                spec.update(
                    label="More sources",
                    optional=True,
                    kind="string",
                    description="more sources, space-separated: SEN12MS folders, s2=PATH s1=PATH "
                    "labels=PATH, @FILE (with or instead of the layers above)",
                )
        params.append(spec)
        if name == "scheme":
            params.append(
                {
                    "name": "SCHEME_FILE",
                    "label": "Class scheme file (YAML)",
                    "kind": "file",
                    "extension": "yaml",
                    "flag": "--scheme",
                    "optional": True,
                    "description": "a YAML class scheme (id, name, colour) instead of the one above",
                }
            )
        if name == "grid":  # the AOI as a map extent, written as a polygon for --grid
            params.append(
                {
                    "name": "GRID_EXTENT",
                    "label": "AOI as an extent (instead of AOI polygons)",
                    "kind": "extent",
                    "flag": "--grid",
                    "optional": True,
                    "description": "the AOI as a map extent in a projected CRS (the chips' CRS unless "
                    "--crs is given); written as one polygon and passed as --grid",
                }
            )
    for name, (_, option) in function.extra.items():
        params.append(
            {
                "name": name.upper(),
                "label": option.help.rstrip("."),
                "kind": "bool",
                "flag": f"--{name}",
                "default": False,
                "optional": True,
                "description": option.help,
            }
        )
    params.append(
        {
            "name": "CONFIG",
            "label": "Options file (YAML)",
            "kind": "file",
            "extension": "yaml",
            "flag": "--config",
            "optional": True,
            "description": "YAML file of options by field name; the parameters set here win",
        }
    )
    for spec in params:
        spec["advanced"] = spec["name"].lower() not in main
    return params


def _param(name: str, field: FieldInfo, kinds: dict, flag_name: str) -> dict:
    description = (field.description or name).strip()
    spec: dict[str, Any] = {
        "name": name.upper(),
        "label": _label(name, description),
        "flag": flag_name,
        "description": description,
        "optional": not field.is_required(),
    }
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    kind = strip_none(field.annotation)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if name == "scheme":
        spec.update(kind="enum", options=SCHEMES, default=default)
    elif name == "crs":
        spec.update(kind="crs")
    elif kind is Path:
        spec.update(kind=kinds.get(name, "file"))
    elif origin is Literal:
        spec.update(kind="enum", options=[str(a) for a in args], default=default)
    elif kind is bool:
        spec.update(kind="bool", default=bool(default))
    elif kind in (int, float):
        spec.update(kind=kind.__name__, default=default, **_bounds(field))
    elif origin in (tuple, list, dict):
        several = origin is tuple and args[1:] != (Ellipsis,)
        text = (
            " ".join(f"{k}={v}" for k, v in default.items())
            if isinstance(default, dict)
            else (" ".join(map(str, default)) if default else None)
        )
        spec.update(kind="string", default=text, values="several" if several else "repeat")
    else:
        spec.update(kind="string", default=None if default is None else str(default))
    return spec


def _label(name: str, description: str) -> str:
    """A short label for the dialog: the description's first words where they say it, else the name."""
    short = re.sub(r" \([^)]*\)$", "", description.split(":")[0].split(";")[0]).replace("`", "")
    text = short if len(short) <= 64 else name.replace("_", " ")
    return text[:1].upper() + text[1:]


def _bounds(field: FieldInfo) -> dict:
    bounds: dict[str, float] = {}
    for rule in field.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(rule, attr, None) is not None:
                bounds[key] = getattr(rule, attr)
    return bounds


def _help(doc: str, params: list[dict]) -> str:
    lines = [" ".join(doc.split()), "", "Parameters (as the geogan command's options):"]
    lines += [f"<b>{p['label']}</b> ({p['flag'] or 'argument'}): {p['description']}" for p in params]
    return "<br>".join(lines)


def _run_pipeline() -> dict:
    params = [
        {
            "name": "PIPELINE",
            "label": "Pipeline file (YAML)",
            "kind": "file",
            "extension": "yaml",
            "flag": "",
            "positional": True,
            "optional": False,
            "description": "pipeline file (YAML), e.g. pipeline/demo.yaml",
        },
        {
            "name": "OUT",
            "label": "Output folder",
            "kind": "folder_out",
            "flag": "--out",
            "optional": True,
            "description": "output folder instead of the file's out",
        },
        {
            "name": "FROM",
            "label": "Start at stage",
            "kind": "string",
            "flag": "--from",
            "optional": True,
            "description": "start at this stage (earlier ones are not run)",
        },
        {
            "name": "UNTIL",
            "label": "Stop after stage",
            "kind": "string",
            "flag": "--until",
            "optional": True,
            "description": "stop after this stage",
        },
        {
            "name": "SCHEDULER",
            "label": "Dask scheduler",
            "kind": "string",
            "flag": "--scheduler",
            "optional": True,
            "description": "Dask scheduler address (or scheduler file .json) for tile and generate",
            "advanced": True,
        },
    ]
    for spec in params:
        spec.setdefault("advanced", False)
    doc = "Run a pipeline file's stages that changed since its last run, under a lock, with a run log."
    return {
        "id": "run",
        "name": "Run a pipeline file",
        "group": "4 Pipelines",
        "group_id": "4",
        "command": ["run"],
        "help": _help(doc, params),
        "params": params,
        "outputs": [
            dict(zip(("name", "kind", "path", "description"), o, strict=True)) for o in OUTPUTS["run"]
        ],
    }
