import json
import subprocess
import sys

import pytest
import rasterio
from pydantic import ValidationError
from typer.testing import CliRunner

import geogan
from geogan.cli import app, option_errors
from geogan.config import GenerateOptions, TileOptions

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


def test_demo_runs_every_stage_and_says_how_to_open_them(demo_run):
    out, result = demo_run
    patches = sorted((out / "sources" / "scenes").rglob("*_s2_*.tif"))
    assert len(patches) == 12  # 3 scenes of 2 x 2 patches
    with rasterio.open(patches[0]) as ds:
        assert ds.count == 13 and ds.crs.to_epsg() == 32630
    images = sorted((out / "generate" / "images").glob("*.tif"))
    assert len(images) == 16
    for image in images:
        with rasterio.open(image) as ds, rasterio.open(out / "generate" / "masks" / image.name) as mask:
            assert ds.count == 13 and ds.tags()["GEOGAN_SYNTHETIC"] == "true"
            assert "spade" in ds.tags()["GEOGAN_MODEL"] and "mask-gan" in ds.tags()["GEOGAN_MODEL"]
            assert mask.crs == ds.crs and mask.transform == ds.transform and mask.colormap(1)
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert metrics["synthetic"]["chips"] == 16
    assert (out / "evaluate" / "report.html").is_file()
    text = " ".join(result.output.split())
    assert "QGIS" in text and "index.gpkg" in text and "geogan run" in text


def test_demo_again_does_nothing(demo_run):
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in (out / "generate").rglob("*.tif")}
    result = runner.invoke(app, ["demo", "--procedural", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in (out / "generate").rglob("*.tif")} == before
    log = [json.loads(line) for line in (out / ".geogan-pipeline" / "log.jsonl").read_text().splitlines()]
    last_run = [e for e in log if e["run"] == log[-1]["run"]]
    assert {e["stage"] for e in last_run if e["event"] == "stage-skip"} == {
        "sources", "tile", "masks", "images", "generate", "evaluate"
    }  # fmt: skip


def test_demo_input_must_be_a_sen12ms_folder(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "o"), "--input", str(tmp_path)])
    assert result.exit_code == 2
    assert "no SEN12MS-layout S2 patches" in " ".join(result.output.split())


def test_option_errors_name_the_dashed_option_and_give_errors_of_options_together_as_they_are():
    with pytest.raises(ValidationError) as err:
        TileOptions(sources=["s2=a.tif"], out="out", zstd_level=0, min_valid=2)
    assert str(option_errors(err.value)) == (
        "--min-valid: Input should be less than or equal to 1; "
        "--zstd-level: Input should be greater than or equal to 1"
    )
    with pytest.raises(ValidationError) as err:
        GenerateOptions(run="run", n=1, out="out", crs="EPSG:32630")  # --crs needs --grid
    assert str(option_errors(err.value)) == (
        "Value error, crs: only with grid (--grid AOI.gpkg --crs EPSG:XXXX)"
    )


def test_option_help_shows_defaults_written_in_brackets():
    """Rich reads "[default: size]" as markup and drops it; the help escapes it."""
    result = runner.invoke(app, ["tile", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Pixels between chip origins [default: size]." in result.output
    result = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert "Checkpoint [default: the newest]." in result.output
