"""Tiling on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on localhost.

``geogan tile --scheduler ADDRESS`` and ``geogan run --scheduler SCHEDULER_FILE`` send their tasks to the
cluster; the chips, lists and statistics must equal those of a run on a LocalCluster, and both
workers must have done some of the work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from distributed import Client
from processes import spawn, stop

from geogan.config import TileOptions
from geogan.pipeline import read_log
from geogan.tiling import tile

DASK = Path(sys.executable).with_name("dask")
SIZE = 64  # 4 chips of each 128 px patch; 8 patches, so 8 tasks


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, client, scheduler file) of a scheduler and two one-thread workers, each a process."""
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    procs = [
        spawn(
            [
                str(DASK),
                "scheduler",
                "--scheduler-file",
                str(scheduler_file),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
            ],
            folder / "scheduler.log",
        ),
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(folder / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        for i in range(2):
            args = ["worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1", "--nthreads", "1"]
            args += ["--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"]
            procs.append(spawn([str(DASK), *args], folder / f"worker{i}.log"))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            yield address, client, scheduler_file
    finally:
        for proc in reversed(procs):
            stop(proc)


def _executed(client: Client) -> dict[str, int]:
    return client.run(lambda dask_worker: dask_worker.state.executed_count)


def _outputs(folder: Path) -> dict[str, object]:
    """Every chip's pixels, the split lists and the band statistics of a tile folder."""
    chips = {}
    for path in sorted(folder.glob("*/*/*.tif")):
        with rasterio.open(path) as src:
            chips[str(path.relative_to(folder))] = (src.read(), src.transform, src.crs.to_string())
    lists = {n: (folder / n).read_text() for n in ("train_list.txt", "test_list.txt")}
    stats = json.loads((folder / "stats.json").read_text())["roles"]
    return {"chips": chips, "lists": lists, "stats": stats}


def _same(a: dict, b: dict) -> None:
    assert set(a["chips"]) == set(b["chips"]) and len(a["chips"]) == 8 * 4 * 3
    for name, (data, transform, crs) in a["chips"].items():
        other = b["chips"][name]
        assert np.array_equal(data, other[0], equal_nan=True) and transform == other[1] and crs == other[2], (
            name
        )
    assert a["lists"] == b["lists"]
    for role, stats in a["stats"].items():
        for key, value in stats.items():
            if key in ("bands", "nodata"):
                assert value == b["stats"][role][key]
            else:
                np.testing.assert_allclose(value, b["stats"][role][key], rtol=1e-9, equal_nan=True)


@pytest.fixture(scope="module")
def local_run(sen12ms_root, tmp_path_factory) -> dict:
    """The reference: the same tiling on a LocalCluster of two worker processes."""
    out = tmp_path_factory.mktemp("local") / "tiles"
    tile(
        TileOptions(sources=[str(sen12ms_root)], out=out, size=SIZE, min_valid=0.0, workers=2), progress=False
    )
    return _outputs(out)


def test_geogan_tile_on_a_two_worker_cluster_equals_a_local_run(cluster, sen12ms_root, local_run, tmp_path):
    address, client, _ = cluster
    before = _executed(client)
    out = tmp_path / "tiles"
    command = [sys.executable, "-m", "geogan", "tile", str(sen12ms_root), "--out", str(out)]
    command += ["--size", str(SIZE), "--min-valid", "0", "--scheduler", address]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _executed(client)
    assert len(after) == 2 and all(after[w] > before.get(w, 0) for w in after)  # both workers worked
    pids = client.run(os.getpid)
    assert os.getpid() not in pids.values() and len(set(pids.values())) == 2
    _same(_outputs(out), local_run)


def test_geogan_run_with_scheduler_file_tiles_on_the_cluster(cluster, sen12ms_root, local_run, tmp_path):
    _, client, scheduler_file = cluster
    before = _executed(client)
    path = tmp_path / "cluster.yaml"
    doc = {
        "out": str(tmp_path / "out"),
        "sources": {"sen12ms": {"kind": "sen12ms", "path": str(sen12ms_root)}},
        "stages": {"tile": {"size": SIZE, "min_valid": 0.0}},
    }
    path.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        [sys.executable, "-m", "geogan", "run", str(path), "--scheduler", str(scheduler_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sum(_executed(client).values()) > sum(before.values())
    events = [e for e in read_log(tmp_path / "out", "last") if e["event"] == "stage-done"]
    assert [e["stage"] for e in events] == ["sources", "tile"] and events[1]["counts"]["chips"] == 32
    _same(_outputs(tmp_path / "out" / "tile"), local_run)


def test_geogans_local_cluster_keeps_adaptive_malloc_and_has_no_profiler():
    from geogan.cluster import local_cluster

    def settings():
        import dask.config

        return (
            os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            os.environ.get("OMP_NUM_THREADS"),
            dask.config.get("distributed.worker.profile.enabled"),
        )

    def intervals(dask_worker):
        return {k: dask_worker.periodic_callbacks[k].callback_time for k in ("tick", "memory_monitor")}

    with local_cluster(1) as cluster, Client(cluster) as client:
        (found,) = client.run(settings).values()
        (worker,) = client.run(intervals).values()
        (nanny,) = cluster.workers.values()
        scheduler = cluster.scheduler.periodic_callbacks
        housekeeping = (
            scheduler["tick"].callback_time,
            scheduler["monitor"].callback_time,
            nanny.periodic_callbacks["memory_monitor"].callback_time,
        )
    assert found == (os.environ.get("MALLOC_TRIM_THRESHOLD_"), "1", False)
    # Housekeeping every 1-2 s instead of every 20-500 ms (milliseconds here).
    assert worker == {"tick": 1000, "memory_monitor": 1000}
    assert housekeeping == (1000, 2000, 1000)


def test_local_cluster_workers_import_the_task_modules_as_they_start():
    """The local workers start with the stages' task modules imported, so no task waits for them."""
    from geogan.cluster import local_cluster

    def imported():
        return [m in sys.modules for m in ("geogan.tiling", "geogan.export")]

    with local_cluster(1) as cluster, Client(cluster) as client:
        assert list(client.run(imported).values()) == [[True, True]]


def test_local_workers_log_no_traceback_for_a_heartbeat_to_a_closing_scheduler():
    """Under load a worker's last heartbeat can meet the scheduler closing; that is no error of the
    user's run, so the local workers drop that one log record (and keep every other)."""
    from geogan.cluster import HEARTBEAT_FAILED, local_cluster

    def kept(message):
        import logging

        record = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, message, None, None)
        return logging.getLogger("distributed.worker").filter(record)

    with local_cluster(1) as cluster, Client(cluster) as client:
        assert list(client.run(kept, HEARTBEAT_FAILED + ".").values()) == [False]
        assert list(client.run(kept, "Compute Failed").values()) == [True]


def test_one_client_maker_connects_by_address_or_scheduler_file(cluster):
    """cluster.client takes an address or a scheduler file (for every stage) and leaves that cluster
    running."""
    from geogan.cluster import client

    address, _, scheduler_file = cluster
    for given in (address, str(scheduler_file)):
        with client(given) as connected:
            assert connected.scheduler.address == address
            assert connected.submit(sum, [1, 2]).result() == 3
    with client(address) as again:  # still there
        assert again.submit(sum, [2, 2]).result() == 4


def test_local_cluster_serves_nothing_over_http():
    """No dashboard, on 8787 or anywhere: the scheduler's HTTP server has no routes, on localhost only."""
    import urllib.error
    import urllib.request

    from geogan.cluster import local_cluster

    with local_cluster(1) as cluster, Client(cluster) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        bound = [s.getsockname() for s in cluster.scheduler.http_server._sockets.values()]
        assert bound and all(host == "127.0.0.1" and port != 8787 for host, port, *_ in bound)
        host, port = bound[0][:2]
        for path in ("/status", "/metrics", "/health", "/info/main/workers.html"):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10)
            assert answer.value.code == 404
