"""The QGIS plugin, headless, in Debian's QGIS: installed by `geogan qgis install`, enabled, listed by
`qgis_process list`, running `geogan:tile` to the same chips as `geogan tile`, reporting geogan's
own error when a run fails, and stopping the process when the user cancels.

Skipped, with the reason, where QGIS (`qgis_process`, PyQGIS) is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis_tools import needs_qgis, qgis_process

from geogan.config import EvaluateOptions
from geogan.models.options import SpadeOptions
from geogan.qgis import PLUGIN, algorithms

pytestmark = needs_qgis
GEOGAN = str(Path(sys.executable).with_name("geogan"))
ALGORITHMS = {
    "tile",
    "rasterize",
    "train_mask_gan",
    "train_spade",
    "train_msg_stylegan",
    "generate",
    "evaluate",
    "run",
}


def _qgis(config: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(config)}
    return subprocess.run([qgis_process(), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def qgis_config(tmp_path_factory) -> Path:
    """A QGIS settings folder of its own with the plugin installed and enabled by `geogan qgis install`."""
    config = tmp_path_factory.mktemp("qgis-config")
    done = subprocess.run(
        [GEOGAN, "qgis", "install", "--config-dir", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "installed the QGIS plugin geogan_processing" in " ".join(done.stderr.split())
    return config


def test_install_enables_the_plugin_and_qgis_lists_an_algorithm_per_stage(qgis_config):
    plugins = _qgis(qgis_config, "plugins")
    assert plugins.returncode == 0, plugins.stderr
    [line] = [line for line in plugins.stdout.splitlines() if PLUGIN in line]
    assert line.strip().startswith("*"), plugins.stdout  # qgis_process marks enabled plugins with *
    listed = _qgis(qgis_config, "list")
    found = {
        line.split()[0].removeprefix("geogan:")
        for line in listed.stdout.splitlines()
        if line.strip().startswith("geogan:")
    }
    assert found == ALGORITHMS, listed.stdout[-2000:]


def test_help_is_the_commands_own_option_descriptions(qgis_config):
    """Each algorithm's help comes from the options model the CLI's flags come from."""
    for algorithm, model in (("evaluate", EvaluateOptions), ("train_spade", SpadeOptions)):
        shown = _qgis(qgis_config, "help", f"geogan:{algorithm}")
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        for name, field in model.model_fields.items():
            assert name.upper() in text and " ".join(field.description.split()) in text, (algorithm, name)


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.rglob("*.tif")):
        with rasterio.open(path) as src:
            out[str(path.relative_to(folder))] = src.read()
    return out


def test_tile_in_qgis_writes_the_same_chips_as_geogan_tile(qgis_config, scene_files, tmp_path):
    s2, s1, lc = (scene_files[k] for k in ("s2", "s1", "lc"))
    ran = _qgis(
        qgis_config,
        "run",
        "geogan:tile",
        "--json",
        "--",
        f"S2={s2}",
        f"S1={s1}",
        f"LABELS={lc}",
        f"OUT={tmp_path / 'qgis'}",
        "SIZE=128",
        "WORKERS=1",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = json.loads(ran.stdout)["results"]
    assert results["INDEX"] == f"{tmp_path / 'qgis'}/index.gpkg|layername=tiles"
    args = [f"s2={s2}", f"s1={s1}", f"labels={lc}", "--out", str(tmp_path / "cli"), "--size", "128"]
    cli = subprocess.run([GEOGAN, "tile", *args, "--workers", "1"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    by_qgis, by_cli = _pixels(tmp_path / "qgis"), _pixels(tmp_path / "cli")
    assert len(by_qgis) == 3 * 16 and by_qgis.keys() == by_cli.keys()
    assert all(np.array_equal(by_qgis[k], by_cli[k]) for k in by_cli)


def test_a_failing_run_returns_geogans_own_error(qgis_config, scene_files, tmp_path):
    ran = _qgis(
        qgis_config,
        "run",
        "geogan:tile",
        "--",
        f"S2={scene_files['s2']}",
        f"OUT={tmp_path / 't'}",
        "SIZE=4096",
    )
    assert ran.returncode != 0
    text = " ".join((ran.stdout + ran.stderr).split())
    assert "geogan failed (exit status 2): no 4096 px chip fits in the 1 scene(s) given" in text, text[-2000:]


CANCEL = """
import sys, time
sys.path.insert(0, sys.argv[1])
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback
app = QgsApplication([], False)
app.initQgis()
from geogan_processing.algorithm import _run
feedback, seen = QgsProcessingFeedback(), []
feedback.progressChanged.connect(lambda p: (seen.append(p), feedback.cancel()))
start = time.monotonic()
try:
    child = "print('geogan-progress 7 working', flush=True); import time; time.sleep(120)"
    _run([sys.executable, "-c", child], feedback)
except QgsProcessingException as err:
    print("stopped", round(time.monotonic() - start), seen, err)
"""


def test_cancelling_stops_the_geogan_process(qgis_config):
    """The plugin's runner shows progress lines and ends the process when the user cancels."""
    plugins = qgis_config / "profiles" / "default" / "python" / "plugins"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        ["/usr/bin/python3", "-c", CANCEL, str(plugins)], capture_output=True, text=True, env=env, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    words = done.stdout.split()
    assert words[:3] == ["stopped", words[1], "[7.0]"] and int(words[1]) < 30, done.stdout
    assert "cancelled: the geogan run was stopped" in done.stdout


def test_package_is_a_zip_the_plugin_manager_installs(tmp_path):
    out = tmp_path / "geogan_processing.zip"
    done = subprocess.run([GEOGAN, "qgis", "package", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        spec = json.loads(archive.read(f"{PLUGIN}/algorithms.json"))
    assert {f"{PLUGIN}/{n}" for n in ("__init__.py", "metadata.txt", "provider.py", "algorithm.py")} <= names
    assert spec == json.loads(json.dumps(algorithms()))  # the same algorithms as an install has
    assert {a["id"] for a in spec["algorithms"]} == ALGORITHMS


def test_generate_in_qgis_lays_the_chips_over_an_aoi_given_as_a_map_extent(
    qgis_config, scene_files, tmp_path
):
    tiles, run = tmp_path / "tiles", tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "z_dim: 8\nw_dim: 8\nmapping_layers: 1\nchannel_base: 64\nchannel_max: 8\nsplit: null\n"
    )
    for args in (
        ["tile", f"s2={scene_files['s2']}", "--out", str(tiles), "--size", "32", "--workers", "1"],
        [
            "train",
            "msg-stylegan",
            "--tiles",
            str(tiles),
            "--out",
            str(run),
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--config",
            str(config),
        ],
    ):
        done = subprocess.run([GEOGAN, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    extent = "440000,440960,6480000,6480640 [EPSG:32630]"  # 3 x 2 chips of 32 px at 10 m
    ran = _qgis(
        qgis_config,
        "run",
        "geogan:generate",
        "--json",
        "--",
        f"RUN={run}",
        "N=6",
        f"OUT={tmp_path / 'pairs'}",
        f"GRID_EXTENT={extent}",
        "WORKERS=1",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = json.loads(ran.stdout)["results"]
    assert [Path(p).name for p in results["IMAGES"]] == ["images_EPSG_32630.vrt"], results
    corners = []
    for image in sorted((tmp_path / "pairs" / "images").glob("*.tif")):
        with rasterio.open(image) as src:
            assert src.crs.to_epsg() == 32630 and src.width == 32
            corners.append((src.transform.c, src.transform.f))
    assert sorted(corners) == sorted(
        (440000.0 + 320 * c, 6480640.0 - 320 * r) for r in range(2) for c in range(3)
    )
