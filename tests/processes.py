"""Services the tests start as separate processes (Dask scheduler and workers, a Prefect server)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``args`` in a session of its own (so :func:`stop` reaches its children), output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    out = log.open("w")
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process's session, SIGKILL it if it has not ended in 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
