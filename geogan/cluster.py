"""The one way geogan gets a Dask client (tile, generate, run): :func:`client`.

Given an address (``tcp://host:8786``) or a scheduler file (``scheduler.json``, as written by
``dask scheduler --scheduler-file``), it connects there and leaves that cluster as it is; given
neither, it starts a LocalCluster for the run and closes it after.

The LocalCluster:

Worker processes with one thread each and no dashboard (nothing served over HTTP), with two of
distributed's defaults changed for geogan's work (reading, compressing and writing MB-sized
chips); measured by
``benchmarks/tiling.py``, see benchmarks/RESULTS.md:

* ``MALLOC_TRIM_THRESHOLD_`` is not set in the workers. distributed sets it to 64 KiB so that
  workers give memory back to the OS at once; setting it also turns off glibc's adaptive mmap
  threshold, so every chip-sized buffer is mapped, zero-filled and unmapped again, which made
  tiling about 25 % slower. geogan's tasks hold a few chips at a time, so memory stays bounded.
* The workers' statistical profiler is off: it samples every thread's stack every 10 ms only to
  feed the dashboard's profile page, which this cluster does not serve.
* Housekeeping runs less often: the event-loop tick (20 ms -> 1 s, it only detects a blocked
  loop), the system monitor (0.5 s -> 2 s, it feeds dashboard plots) and the memory monitor of
  nannies and workers (0.1 s -> 1 s). On a 2-core machine the scheduler, nannies and client took
  1.5-1.9 CPU seconds of a 13-15 s tiling run with the defaults and 0.8-0.9 s with these.

* Workers import the stages' task modules (:data:`PRELOAD`) as they start, so that the first
  tasks do not each wait for the imports (geogan.tiling: 0.65 s in each worker, measured).
* A worker whose heartbeat meets a scheduler already closing logs no traceback for it (while
  the cluster shuts down under load, after a run's own error had been reported).

A cluster given by address keeps its own settings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import dask.config

from geogan.errors import InputError

log = logging.getLogger(__name__)

# What the local workers import as they start: this module (dask_setup below) and the modules
# whose functions the stages send to workers (tiling's chips, export's pairs).
PRELOAD = (__name__, "geogan.tiling", "geogan.export")
HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


@contextmanager
def client(scheduler: str | None = None, workers: int = 2, threads: int = 1) -> Iterator:
    """A ``distributed.Client`` for the ``with`` block: of the scheduler at ``scheduler`` (an address
    or a ``.json`` scheduler file), else of a LocalCluster of ``workers`` processes of ``threads``
    threads each, started here and closed after. An unreachable scheduler is a clear error."""
    from distributed import Client

    if scheduler:
        log.info("connecting to the Dask scheduler at %s", scheduler)
        with connect(scheduler) as connected:
            yield connected
        return
    with local_cluster(workers, threads) as cluster, Client(cluster) as local:
        log.info("Dask: %s", local)
        yield local


def dask_setup(worker) -> None:  # run by distributed in each local worker, as a preload
    logging.getLogger("distributed.worker").addFilter(_quiet_heartbeat)


def _quiet_heartbeat(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(HEARTBEAT_FAILED)


def local_cluster(workers: int, threads: int = 1):
    """A started ``distributed.LocalCluster`` of ``workers`` processes of ``threads`` threads each."""
    from distributed import LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # the rest (OMP_NUM_THREADS=1 ...) stays
    settings = {
        "distributed.nanny.pre-spawn-environ": environ,
        "distributed.worker.profile.enabled": False,
        "distributed.admin.tick.interval": "1s",
        "distributed.admin.system-monitor.interval": "2s",
        "distributed.worker.memory.monitor-interval": "1s",
        # The scheduler always starts an HTTP server (dashboard_address=None alone still served the
        # dashboard on 127.0.0.1:8787): no routes on it, on a free port of localhost only.
        "distributed.scheduler.http.routes": [],
    }
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            preload=list(PRELOAD),
        )


def connect(address: str, timeout: str = "10s"):
    """A ``distributed.Client`` of the scheduler at ``address`` (or of the scheduler file
    ``address``, a ``.json``); an :class:`~geogan.errors.InputError` naming it if unreachable."""
    from distributed import Client

    where = {"scheduler_file": address} if address.endswith(".json") else {"address": address}
    try:
        return Client(**where, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({err})") from None
