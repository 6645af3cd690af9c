"""geogan run: the demo pipeline end to end, re-runs that do only what changed, dry runs, errors, lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from typer.testing import CliRunner

from geogan.cli import app
from geogan.pipeline import PipelineError, load, pipeline_lock, read_log, read_state, run
from geogan.pipeline.stages import tile_sources

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pipeline" / "demo.yaml"
SEN12MS = REPO / "pipeline" / "sen12ms.yaml"
STAGES = ["sources", "tile", "train", "generate", "evaluate"]


def write_pipeline(path: Path, out: Path, changes: dict[str, object] | None = None) -> Path:
    """demo.yaml with ``out`` and ``{"stages.train.steps": 24, ...}`` changed, written to ``path``."""
    doc = yaml.safe_load(DEMO.read_text())
    doc["out"] = str(out)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def events(root: Path) -> dict[str, list[str]]:
    """Stage name -> the events of the last run about it."""
    out: dict[str, list[str]] = {}
    for e in read_log(root, "last"):
        if "stage" in e:
            out.setdefault(e["stage"], []).append(e["event"])
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The shipped demo pipeline, run once through the CLI into a fresh folder."""
    root = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(app, ["run", str(DEMO), "--out", str(root)])
    assert result.exit_code == 0, result.output
    return root


def test_demo_runs_every_stage_and_writes_valid_outputs(demo):
    log = read_log(demo, "last")
    assert [e["event"] for e in log] == ["run-start"] + [
        ev for s in STAGES for ev in ("stage-start", "stage-done")
    ] + ["run-end"]
    done = {e["stage"]: e for e in log if e["event"] == "stage-done"}
    assert done["tile"]["counts"]["chips"] == 12  # 3 scenes of one 64 px patch, 2 x 2 chips of 32 px
    assert done["generate"]["counts"] == {"written": 8, "skipped": 0}

    index = gpd.read_file(demo / "tile" / "index.gpkg", layer="tiles")
    assert (index["role"] == "s2").sum() == 12 and set(index["role"]) == {"s2", "s1", "lc"}
    for rel in index["path"]:
        with rasterio.open(demo / "tile" / rel) as src:
            assert src.shape == (32, 32) and src.crs is not None
    assert (demo / "train" / "checkpoints" / "step-00000020.pt").is_file()
    images = sorted((demo / "generate" / "images").glob("*.tif"))
    assert [p.stem for p in images] == [f"syn_{i:06d}" for i in range(8)]
    for path in images:
        with rasterio.open(path) as src:
            data = src.read()
            assert data.shape == (13, 32, 32) and data.dtype == np.uint16 and data.max() > 0
    metrics = json.loads((demo / "evaluate" / "metrics.json").read_text())
    assert metrics["inputs"]["synthetic"] == str(demo / "generate")
    assert (demo / "evaluate" / "report.html").is_file()
    state = read_state(demo)["stages"]
    assert [state[s]["status"] for s in STAGES] == ["done"] * 5


def test_second_run_does_nothing(demo):
    before = snapshot(demo / "generate") | snapshot(demo / "tile") | snapshot(demo / "train")
    result = run(load(DEMO, out=demo), progress=False)
    assert result.ok
    assert events(demo) == {s: ["stage-skip"] for s in STAGES}
    assert [r.action for r in result.stages] == ["skip"] * 5
    after = snapshot(demo / "generate") | snapshot(demo / "tile") | snapshot(demo / "train")
    assert after == before  # not one file rewritten


def test_a_second_run_is_refused_while_one_holds_the_lock(demo):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "geogan", "run", str(DEMO), "--out", str(demo)]
    logged = len(read_log(demo))
    with pipeline_lock(demo, "demo"):
        blocked = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert blocked.returncode == 3, blocked.stderr
    assert f"is already running (pid {os.getpid()} on" in blocked.stderr
    assert len(read_log(demo)) == logged  # the refused run touched nothing
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert events(demo) == {s: ["stage-skip"] for s in STAGES}


def test_from_and_until_select_stages(demo):
    dry = run(load(DEMO, out=demo), start="train", until="generate", dry_run=True)
    assert [(r.stage, r.action) for r in dry.stages] == [
        ("sources", "not selected"),
        ("tile", "not selected"),
        ("train", "skip"),
        ("generate", "skip"),
        ("evaluate", "not selected"),
    ]
    with pytest.raises(PipelineError, match="no stage 'trian'"):
        run(load(DEMO, out=demo), start="trian", dry_run=True)


def test_dry_run_writes_nothing(demo, tmp_path):
    before = snapshot(demo)
    bigger = write_pipeline(tmp_path / "bigger.yaml", demo, {"stages.tile.min_valid": 0.7})
    result = CliRunner().invoke(app, ["run", str(bigger), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert snapshot(demo) == before
    dry = run(load(bigger), dry_run=True)
    assert [(r.stage, r.action) for r in dry.stages] == [("sources", "skip"), ("tile", "reset")] + [
        (s, "maybe") for s in STAGES[2:]
    ]
    assert dry.stages[1].reason == "option min_valid: 0.5 -> 0.7"

    fresh = tmp_path / "never"
    result = CliRunner().invoke(app, ["run", str(DEMO), "--out", str(fresh), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not fresh.exists()


def test_changed_option_reruns_that_stage_and_later_ones_only(demo, tmp_path):
    # More samples: generate only, keeping the 8 pairs it has.
    more = write_pipeline(tmp_path / "more.yaml", demo, {"stages.generate.n": 10})
    assert run(load(more), progress=False).ok
    assert events(demo) == {
        "sources": ["stage-skip"],
        "tile": ["stage-skip"],
        "train": ["stage-skip"],
        "generate": ["stage-start", "stage-done"],
        "evaluate": ["stage-start", "stage-done"],
    }
    done = {e["stage"]: e for e in read_log(demo, "last") if e["event"] == "stage-done"}
    assert done["generate"]["counts"] == {"written": 2, "skipped": 8}
    assert done["evaluate"]["action"] == "reset"  # new pairs: a new report

    # More training: the dry run says train runs and generate may follow; the real run resumes
    # training from its checkpoint and regenerates every pair from the new model.
    longer = write_pipeline(
        tmp_path / "longer.yaml", demo, {"stages.generate.n": 10, "stages.train.steps": 24}
    )
    dry = run(load(longer), dry_run=True)
    assert [(r.stage, r.action) for r in dry.stages] == [
        ("sources", "skip"),
        ("tile", "skip"),
        ("train", "run"),
        ("generate", "maybe"),
        ("evaluate", "maybe"),
    ]
    assert "option steps: 20 -> 24" in dry.stages[2].reason
    old_pair = (demo / "generate" / "images" / "syn_000000.tif").read_bytes()
    result = run(load(longer), progress=False)
    assert result.ok
    assert [(r.stage, r.action) for r in result.stages] == [
        ("sources", "skip"),
        ("tile", "skip"),
        ("train", "run"),
        ("generate", "reset"),
        ("evaluate", "reset"),
    ]
    assert result.stages[2].counts["resumed"] is True
    assert result.stages[3].reason == "input train changed"
    assert (demo / "train" / "checkpoints" / "step-00000024.pt").is_file()
    assert len(list((demo / "generate" / "images").glob("*.tif"))) == 10
    assert (demo / "generate" / "images" / "syn_000000.tif").read_bytes() != old_pair


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_wrong_fields_are_reported_with_file_line_stage_and_field(tmp_path):
    bad = {"stages.tile.sizee": 32, "stages.train.r1_every": -4}
    path = write_pipeline(tmp_path / "bad.yaml", tmp_path / "out", bad)
    text = path.read_text()
    with pytest.raises(PipelineError) as err:
        load(path)
    message = str(err.value)
    assert f"{path}:{_line(text, 'sizee')}: stages.tile.sizee: unknown field" in message
    assert f"{path}:{_line(text, 'r1_every')}: stages.train.r1_every: Input should be greater than" in message

    cli = CliRunner().invoke(app, ["run", str(path)])
    assert cli.exit_code == 2 and "sizee" in cli.output and not (tmp_path / "out").exists()

    cases = {
        "stages.train.tiles": ("/somewhere", "stages.train.tiles: set by the pipeline"),
        "stages.train.model": ("big-gan", "stages.train.model: unknown model 'big-gan'"),
        "stages.tile.sources": (["nowhere"], "stages.tile.sources[0]: 'nowhere' is not a source"),
        "sources.flow-country.patch_sizes": (64, "sources.flow-country.patch_sizes: unknown field"),
        "stages.evaluat": ({}, "unknown stage 'evaluat'"),
        "stages.evaluate.drop_copies": (True, "stages.evaluate.drop_copies: moving pairs out"),
        # An error of the options together: at the stage, naming fields, not the flags `geogan generate`
        # would name (--grid, --crs); a command to type stays as it is (`geogan evaluate --drop-copies`).
        "stages.generate.crs": (
            "EPSG:32633",
            "stages.generate: crs: only with grid (grid AOI.gpkg",
        ),
    }
    for dotted, (value, expected) in cases.items():
        bad = write_pipeline(tmp_path / "case.yaml", tmp_path / "out", {dotted: value})
        with pytest.raises(PipelineError, match=r"case\.yaml:\d+: ") as err:
            load(bad)
        assert expected in str(err.value), (dotted, str(err.value))
        assert "--" not in str(err.value).replace("`geogan evaluate --drop-copies`", ""), str(err.value)


def test_sen12ms_pipeline_validates_against_a_sen12ms_folder(sen12ms_root, tmp_path, monkeypatch):
    monkeypatch.delenv("SEN12MS_ROOT", raising=False)
    with pytest.raises(PipelineError, match="environment variable SEN12MS_ROOT is not set"):
        load(SEN12MS)
    monkeypatch.setenv("SEN12MS_ROOT", str(tmp_path / "missing"))
    result = CliRunner().invoke(app, ["run", str(SEN12MS), "--dry-run"])
    assert result.exit_code == 2 and "missing: no such folder" in " ".join(result.output.split())
    assert not (tmp_path / "missing-geogan").exists()

    monkeypatch.setenv("SEN12MS_ROOT", str(sen12ms_root))
    monkeypatch.setenv("GEOGAN_PIPELINE_OUT", str(tmp_path / "out"))
    spec = load(SEN12MS)
    assert spec.out == tmp_path / "out"
    assert spec.stage("tile").options.sources == ["sen12ms"]
    assert tile_sources(spec.stage("tile")) == [str(sen12ms_root)]
    assert spec.stage("train").options.resolution == 256
    dry = run(spec, dry_run=True)
    assert [(r.stage, r.action) for r in dry.stages] == [(s, "run") for s in STAGES]
    result = CliRunner().invoke(app, ["run", str(SEN12MS), "--dry-run", "--until", "tile"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out").exists()


def test_a_failing_stage_stops_the_run_and_is_logged(tmp_path):
    bad = tmp_path / "scene.tif"
    bad.write_text("not a raster")
    path = tmp_path / "broken.yaml"
    doc = {
        "out": "out",  # relative to the file
        "sources": {"mine": {"kind": "geotiff", "s2": "scene.tif"}},
        "stages": {"tile": {"size": 32}, "train": {"model": "msg-stylegan", "resolution": 32}},
    }
    path.write_text(yaml.safe_dump(doc))
    cli = CliRunner().invoke(app, ["run", str(path)])
    assert cli.exit_code == 1
    root = tmp_path / "out"
    log = read_log(root, "last")
    failed = [e for e in log if e["event"] == "stage-failed"]
    assert [e["stage"] for e in failed] == ["tile"] and f"{bad}: not a raster" in failed[0]["error"]
    assert not any(e.get("stage") == "train" for e in log)  # nothing after the failure ran
    assert read_state(root)["stages"]["tile"]["status"] == "failed"
    assert log[-1]["event"] == "run-end" and log[-1]["ok"] is False


def test_a_stac_source_is_fetched_once_then_tiled(tmp_path):
    """A remote source in a pipeline: fetched from a local STAC API (real request/response formats)."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds
    from remote_servers import StacApp, StacItem, serve

    utm32 = CRS.from_epsg(32632)
    items = [
        StacItem("S2A_32TQM_20230601_0_L1C", "2023-06-01T10:30:31Z", 11, 3.0, utm32, (600000.0, 5000040.0)),
        StacItem("S2B_32TQM_20230604_0_L1C", "2023-06-04T10:30:29Z", 12, 95.0, utm32, (600000.0, 5000040.0)),
    ]
    aoi = ",".join(f"{v:.7f}" for v in transform_bounds(utm32, "EPSG:4326", 602010, 4994020, 602650, 4994660))
    app = StacApp(items)
    with serve(app) as server:
        path = tmp_path / "stac.yaml"
        source = {"kind": "stac", "url": app.url}
        path.write_text(
            yaml.safe_dump(
                {
                    "out": "out",
                    "cluster": {"workers": 1},
                    "sources": {
                        "earth": {
                            **source,
                            "aoi": aoi,
                            "start": "2023-06-01",
                            "end": "2023-06-30",
                            "max_cloud": 30,
                        }
                    },
                    "stages": {"tile": {"size": 32, "min_valid": 0.5}},
                }
            )
        )
        dry = run(load(path), dry_run=True)
        assert [(r.stage, r.action) for r in dry.stages] == [("sources", "run"), ("tile", "run")]
        assert server.requests == [] and not (tmp_path / "out").exists()  # a dry run asks no service

        first = run(load(path), progress=False)
        assert first.ok, first.error
        fetched = len(server.requests)
        assert fetched > 0
        assert [p.name for p in (tmp_path / "out" / "sources" / "earth" / "s2").glob("*.tif")] == [
            "S2A_32TQM_20230601_0_L1C.tif"  # the cloudy item is not fetched
        ]
        assert first.stages[1].counts["chips"] >= 4

        again = run(load(path), progress=False)
        assert [r.action for r in again.stages] == ["skip", "skip"]
        assert len(server.requests) == fetched  # unchanged options: the service is not asked again
