"""geogan run killed with SIGKILL in the middle of tiling and of generation, then run again.

Each time the whole process group (the run and its Dask workers) is killed, as a job scheduler or
a lost machine would; the next run must finish the work, and every output must be whole, valid,
written once, and equal to what an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from distributed import Client

from geogan.config import GenerateOptions, TileOptions
from geogan.export import validate_cogs
from geogan.files import is_temporary
from geogan.generate import generate
from geogan.pipeline import load, read_log, read_state
from geogan.tiling import tile

SCENES, PATCHES, PATCH, CHIP = 2, 2, 64, 16
CHIPS = SCENES * PATCHES**2 * (PATCH // CHIP) ** 2  # 128 chips; 8 tile tasks, one per patch (its block)
PAIRS = 64

PIPELINE = {
    "name": "faults",
    "cluster": {"workers": 2, "threads": 1},
    "sources": {
        "scenes": {
            "kind": "procedural",
            "scenes": SCENES,
            "patches_per_side": PATCHES,
            "patch_size": PATCH,
            "seed": 5,
        }
    },
    "stages": {
        "tile": {"size": CHIP, "min_valid": 0.0},
        "train": {
            "model": "msg-stylegan",
            "resolution": CHIP,
            "split": None,
            "steps": 2,
            "batch_size": 4,
            "z_dim": 8,
            "w_dim": 8,
            "mapping_layers": 1,
            "channel_base": 64,
            "channel_max": 8,
            "sample_every": 100,
            "samples": 4,
        },
        "generate": {"n": PAIRS, "batch_size": 4, "seed": 3},
    },
}


def _start(path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "geogan", "run", str(path), *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()`` holds."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > end:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    time.sleep(0.5)  # let the killed group's last exits settle


def _finish(path: Path, *args: str) -> str:
    proc = _start(path, *args)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output[-3000:]
    return output


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p)]


def _chips(folder: Path) -> dict[str, np.ndarray]:
    """Every chip under a tile folder, read whole (rasterio decodes each fully)."""
    out = {}
    for path in sorted(folder.glob("*/*/*.tif")):
        with rasterio.open(path) as src:
            assert src.shape == (CHIP, CHIP) and src.crs is not None, path
            out[str(path.relative_to(folder))] = src.read()
    return out


@pytest.fixture(scope="module")
def client():
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


@pytest.mark.slow
def test_killed_in_tiling_and_in_generation_then_rerun(tmp_path, client, one_torch_thread):
    root = tmp_path / "out"
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({**PIPELINE, "out": str(root)}, sort_keys=False))
    records = root / "tile" / ".geogan" / "tasks"

    # 1. Kill in the middle of tiling: some of the 8 tile tasks done, not all.
    proc = _start(path)
    _kill_when(proc, lambda: len(list(records.glob("*.json"))) >= 2, "tiling under way")
    done_at_kill = {p.name: p.read_text() for p in records.glob("*.json")}  # written whole, then renamed
    assert read_state(root)["stages"]["tile"]["status"] == "running"

    _finish(path, "--until", "tile")
    restart = [e for e in read_log(root, "last") if e.get("stage") == "tile"]
    assert restart[0]["event"] == "stage-start" and "did not finish" in restart[0]["reason"]
    assert restart[-1]["counts"]["chips"] == CHIPS
    assert 2 <= len(done_at_kill) < len(list(records.glob("*.json"))) == 8
    # Finished tasks were not redone: their chips count as skipped and their records are unchanged.
    assert restart[-1]["counts"]["skipped"] == sum(len(json.loads(t)["chips"]) for t in done_at_kill.values())
    assert all((records / name).read_text() == text for name, text in done_at_kill.items())
    assert _temporaries(root) == []

    chips = _chips(root / "tile")
    index = gpd.read_file(root / "tile" / "index.gpkg", layer="tiles")
    assert len(index) == CHIPS * 3 and index["path"].is_unique  # s2, s1 and lc of each chip, once
    assert set(index["path"]) == set(chips)  # nothing on disk the index lacks, nothing missing
    reference = tmp_path / "reference-tiles"
    options = TileOptions(sources=[str(root / "sources" / "scenes")], out=reference, size=CHIP, min_valid=0.0)
    tile(options, client=client, progress=False)
    expected = _chips(reference)
    assert set(expected) == set(chips)
    assert all(np.array_equal(expected[k], chips[k], equal_nan=True) for k in chips)
    for name in ("train_list.txt", "test_list.txt"):
        assert (root / "tile" / name).read_text() == (reference / name).read_text()

    # 2. Kill in the middle of generation: some of the 64 pairs written, not all.
    images = root / "generate" / "images"
    proc = _start(path)
    _kill_when(proc, lambda: len(list(images.glob("syn_*.tif"))) >= 8, "generation under way")
    at_kill = len(list(images.glob("syn_*.tif")))
    assert 8 <= at_kill < PAIRS
    assert read_state(root)["stages"]["generate"]["status"] == "running"

    _finish(path)
    last = {e.get("stage"): e for e in read_log(root, "last") if e["event"] in ("stage-skip", "stage-done")}
    assert {s: last[s]["event"] for s in ("sources", "tile", "train")} == dict.fromkeys(
        ("sources", "tile", "train"), "stage-skip"
    )
    assert last["generate"]["counts"]["written"] == PAIRS - at_kill  # none written twice, none lost
    assert _temporaries(root) == []

    written = sorted(images.glob("*.tif"))
    assert [p.stem for p in written] == [f"syn_{i:06d}" for i in range(PAIRS)]
    assert validate_cogs(written) == []
    pairs = gpd.read_file(root / "generate" / "index.gpkg", layer="pairs")
    assert len(pairs) == PAIRS and pairs.iloc[:, 0].is_unique
    # The reference samples the model with one torch thread, as the run did (OMP_NUM_THREADS=1):
    # a float32 generator's last bits, and so a few rounded DNs, depend on the thread count.
    reference = tmp_path / "reference-pairs"
    spec = load(path)
    generate(
        GenerateOptions(**{**spec.stage("generate").options.model_dump(), "out": reference}), client=client
    )
    for p in written:
        with rasterio.open(p) as ours, rasterio.open(reference / "images" / p.name) as theirs:
            assert np.array_equal(ours.read(), theirs.read()), p.name
    assert read_state(root)["stages"]["generate"]["status"] == "done"
