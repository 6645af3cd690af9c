"""The Dask LocalCluster geogan starts when no scheduler address is given (tile, generate, run).

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

A cluster given by address keeps its own settings.
"""

from __future__ import annotations

import dask.config


def local_cluster(workers: int, threads: int = 1, preload: tuple[str, ...] = ()):
    """A started ``distributed.LocalCluster`` of ``workers`` processes of ``threads`` threads each.

    ``preload``: modules each worker imports as it starts (the stage's task module), so that the
    first tasks do not each wait for the imports (geogan.tiling: 0.65 s in each worker, measured).
    """
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
            preload=list(preload),
        )


def connect(address: str, timeout: str = "10s"):
    """A ``distributed.Client`` of the scheduler at ``address``; ``ValueError`` naming it if unreachable."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ValueError(f"cannot reach the Dask scheduler at {address} ({err})") from None
