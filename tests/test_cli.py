import json
import re
import subprocess
import sys

import pytest
import rasterio
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

import geogan
from geogan.cli import app
from geogan.config import (
    DemoOptions,
    EvaluateOptions,
    GenerateOptions,
    QgisInstallOptions,
    QgisPackageOptions,
    RasterizeOptions,
    SentinelHubSource,
    StacSource,
    TileOptions,
)
from geogan.errors import option_errors
from geogan.models.options import MaskGANOptions, MSGStyleGANOptions, SpadeOptions

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
        "sources",
        "tile",
        "masks",
        "images",
        "generate",
        "evaluate",
    }


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
    assert str(option_errors(err.value)) == ("crs: only with grid (--grid AOI.gpkg --crs EPSG:XXXX)")


# Each command and the options model it is made from (geogan.flags), with the flags named otherwise.
MODELS = {
    "demo": (DemoOptions, {}),
    "tile": (TileOptions, {"sources": "SOURCES"}),
    "labels rasterize": (RasterizeOptions, {"polygons": "POLYGONS"}),
    "train msg-stylegan": (MSGStyleGANOptions, {}),
    "train spade": (SpadeOptions, {}),
    "train mask-gan": (MaskGANOptions, {}),
    "generate": (GenerateOptions, {"n": "-n"}),
    "evaluate": (EvaluateOptions, {}),
    "fetch sentinelhub": (SentinelHubSource, {"sensors": "--sensor", "kind": None}),
    "fetch stac": (StacSource, {"assets": "--asset", "kind": None}),
    "qgis install": (QgisInstallOptions, {}),
    "qgis package": (QgisPackageOptions, {}),
}
NOT_MODELLED = {"run", "schedule"}  # they take a pipeline file, whose stages have the models


def _commands(group, prefix: str = "") -> list[str]:
    found = []
    for name, cmd in group.commands.items():
        found += _commands(cmd, f"{prefix}{name} ") if hasattr(cmd, "commands") else [prefix + name]
    return found


def test_every_command_is_made_from_an_options_model():
    assert set(_commands(typer.main.get_command(app))) == set(MODELS) | NOT_MODELLED


@pytest.mark.parametrize("command", sorted(MODELS))
def test_help_lists_every_field_of_the_commands_model_with_its_default(command):
    model, names = MODELS[command]
    result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "320"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, field in model.model_fields.items():
        shown = names.get(name, "--" + name.replace("_", "-"))
        if shown is None:  # a field the command sets itself (a source's kind)
            continue
        [line] = [line for line in lines if re.match(rf"^[│ *]*{re.escape(shown)}[ /]", line)]
        assert field.description and field.description[1:] in line, (name, line)
        default = field.get_default(call_default_factory=True)
        if (
            not field.is_required()
            and default not in (None, {}, ())
            and not isinstance(default, bool | tuple)
        ):
            assert f"[default: {default}]" in line, (name, line)
        if field.is_required():
            assert "[required]" in line, (name, line)
    assert any("--config" in line for line in lines)


def test_flags_win_over_the_config_file_and_its_errors_name_it(tmp_path):
    config = tmp_path / "tile.yaml"
    config.write_text("size: 32\nmin_valid: 3\nsplit_block: 2\n")
    result = runner.invoke(app, ["tile", "s2=a.tif", "--out", str(tmp_path / "t"), "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}: min_valid: Input should be less than or equal to 1" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["tile", "s2=a.tif", "--out", str(tmp_path / "t"), "--config", str(config), "--min-valid", "5"]
    )
    assert "--min-valid: Input should be less than or equal to 1" in " ".join(result.output.split())
    config.write_text("sise: 32\n")
    result = runner.invoke(app, ["tile", "s2=a.tif", "--out", str(tmp_path / "t"), "--config", str(config)])
    assert result.exit_code == 2 and f"{config}: sise: unknown field" in " ".join(result.output.split())
    assert not (tmp_path / "t").exists()
