import subprocess
import sys

import rasterio
from typer.testing import CliRunner

import geogan
from geogan.cli import app

runner = CliRunner()


def test_help_lists_demo_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and geogan.__version__ in result.output


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "geogan", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"geogan {geogan.__version__}"


def test_demo_writes_scenes_and_says_how_to_open_them(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--scenes", "1"])
    assert result.exit_code == 0, result.output
    patches = sorted((tmp_path / "demo" / "scenes").rglob("*_s2_*.tif"))
    assert len(patches) == 4
    with rasterio.open(patches[0]) as ds:
        assert ds.count == 13 and ds.crs.to_epsg() == 32630
    assert "QGIS" in result.output


def test_demo_input_must_be_a_sen12ms_folder(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "o"), "--input", str(tmp_path)])
    assert result.exit_code == 2
    assert "no SEN12MS-layout S2 patches" in " ".join(result.output.split())
