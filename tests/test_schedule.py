"""`geogan schedule`: a pipeline file as a Prefect flow, one task per stage, against a real (local,
temporary) Prefect server started by Prefect's test harness."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("prefect", reason="the prefect extra is not installed")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from processes import spawn, stop  # noqa: E402

from geogan.cli import app  # noqa: E402
from geogan.pipeline import PipelineError, read_log  # noqa: E402
from geogan.pipeline.schedule import FLOW_NAME, deployment, pipeline_flow  # noqa: E402


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_pipeline(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    doc = {
        "out": "out",
        "sources": {"demo": {"kind": "procedural", "scenes": 2, "patch_size": 64}},
        "stages": {"tile": {"size": 32}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _runs(flow_name: str) -> list:
    """(flow run, its task runs) of every flow run Prefect recorded, newest first."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC
        )
        out = []
        for r in runs:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id])))
            out.append((r, {t.name: t.state.type.value for t in tasks}))
        return out


def test_every_stage_is_a_prefect_task_and_a_rerun_skips_them(prefect_server, tmp_path):
    path = tiny_pipeline(tmp_path)
    first = pipeline_flow(str(path))
    assert [(r["stage"], r["action"]) for r in first] == [("sources", "run"), ("tile", "run")]
    assert first[1]["counts"]["chips"] == 32
    assert len(list((tmp_path / "out" / "tile").glob("*/s2_*/*.tif"))) == 32
    flow_run, tasks = _runs(FLOW_NAME)[0]
    assert flow_run.state.type.value == "COMPLETED" and flow_run.name == str(path)
    assert tasks == {"sources": "COMPLETED", "tile": "COMPLETED"}

    # Again, through the CLI: the runner's fingerprints say nothing changed.
    result = CliRunner().invoke(app, ["schedule", str(path), "--run-once"])
    assert result.exit_code == 0, result.output
    events = [e for e in read_log(tmp_path / "out") if e["event"] in ("stage-done", "stage-skip")]
    assert [(e["event"], e["stage"]) for e in events] == [
        ("stage-done", "sources"),
        ("stage-done", "tile"),
        ("stage-skip", "sources"),
        ("stage-skip", "tile"),
    ]
    assert "skip" in result.output and len(_runs(FLOW_NAME)) == 2


def test_a_failing_stage_fails_its_task_and_the_flow_run(prefect_server, tmp_path):
    (tmp_path / "scene.tif").write_text("not a raster")
    path = tmp_path / "broken.yaml"
    doc = {
        "out": "out",
        "sources": {"mine": {"kind": "geotiff", "s2": "scene.tif"}},
        "stages": {"tile": {"size": 32}, "train": {"model": "msg-stylegan", "resolution": 32}},
    }
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["schedule", str(path), "--run-once"])
    assert result.exit_code == 1 and f"{tmp_path / 'scene.tif'}: not a raster" in result.output
    flow_run, tasks = next((r, t) for r, t in _runs(FLOW_NAME) if r.name == str(path))
    assert flow_run.state.type.value == "FAILED"
    assert tasks == {"sources": "COMPLETED", "tile": "FAILED"}  # train never started


def test_the_deployment_runs_the_file_on_its_cron_one_run_at_a_time(tmp_path):
    path = tiny_pipeline(tmp_path)
    made = deployment(path, "0 3 * * *", timezone="Europe/London")
    assert made.name == "tiny" and made.flow_name == FLOW_NAME
    assert made.entrypoint == "geogan.pipeline.schedule.pipeline_flow"  # importable wherever geogan is
    (schedule,) = made.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "Europe/London"
    assert made.parameters == {"pipeline": str(path.resolve()), "out": None, "scheduler": None}
    assert made.concurrency_limit == 1
    with pytest.raises(ValueError, match="cron"):
        deployment(path, "every night")
    with pytest.raises(PipelineError):
        deployment(tmp_path / "missing.yaml", "0 3 * * *")


def test_cli_refuses_a_missing_or_bad_schedule(tmp_path):
    path = tiny_pipeline(tmp_path)
    result = CliRunner().invoke(app, ["schedule", str(path)])
    assert result.exit_code == 2 and "give --cron" in result.output
    result = CliRunner().invoke(app, ["schedule", str(path), "--cron", "61 * * * *"])
    assert result.exit_code == 2 and "--cron '61 * * * *'" in result.output
    assert not (tmp_path / "out").exists()  # nothing ran


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ready, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_a_served_schedule_runs_the_pipeline_when_its_cron_fires(tmp_path):
    """`prefect server start` and `geogan schedule --cron "* * * * *"` as separate processes; the
    server's scheduler creates a run for the next minute and `geogan schedule` runs it."""
    path = tiny_pipeline(tmp_path)
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    host, port = api.split("//")[1].split("/")[0].split(":")
    prefect = str(Path(sys.executable).with_name("prefect"))
    logs = {"server": tmp_path / "server.log", "served": tmp_path / "served.log"}
    server = [prefect, "server", "start", "--host", host, "--port", port, "--no-ui"]
    procs = [spawn(server, logs["server"], env)]
    try:
        _wait(lambda: _up(f"{api}/health"), procs[0], 120, logs["server"])
        args = [sys.executable, "-m", "geogan", "schedule", str(path), "--cron", "* * * * *"]
        procs.append(spawn(args, logs["served"], env))
        root = tmp_path / "out"
        ended = ("stage-done", "stage-failed")
        _wait(
            lambda: any(e["event"] in ended and e["stage"] == "tile" for e in _log(root)),
            procs[1],
            200,
            logs["served"],
        )
        done = [e["stage"] for e in _log(root) if e["event"] == "stage-done"]
        assert done == ["sources", "tile"], logs["served"].read_text()[-3000:]
        assert len(list((root / "tile").glob("*/s2_*/*.tif"))) == 32
        assert "Traceback" not in logs["server"].read_text()
    finally:
        for proc in reversed(procs):
            stop(proc)


def _log(root: Path) -> list[dict]:
    return read_log(root) if (root / ".geogan-pipeline" / "log.jsonl").exists() else []
