"""Running QGIS headless in tests: ``qgis_process`` from Debian's ``qgis`` package.

CI installs it (``apt-get install -y --no-install-recommends qgis``); where it is missing the
tests that need it are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest


def qgis_process() -> str | None:
    # Debian's qgis_process wrapper passes --noversioncheck, which qgis_process itself refuses.
    return shutil.which("qgis_process.bin") or shutil.which("qgis_process")


needs_qgis = pytest.mark.skipif(
    qgis_process() is None, reason="qgis_process is missing (Debian package qgis: apt-get install qgis)"
)


def run_algorithm(algorithm: str, **params: object) -> dict:
    """Run a QGIS processing algorithm headless (offscreen Qt); its JSON results."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    args = [qgis_process(), "run", algorithm, "--json", "--", *(f"{k}={v}" for k, v in params.items())]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)["results"]


def unique_values(mask_path, table) -> tuple[dict, dict[int, int]]:
    """QGIS's report of a mask's band 1 (results, {value: pixel count}) via a CSV table."""
    report = run_algorithm(
        "native:rasterlayeruniquevaluesreport", INPUT=mask_path, BAND=1, OUTPUT_TABLE=table
    )
    counts = {
        int(float(line.split(",")[0])): int(line.split(",")[1].strip('"'))
        for line in table.read_text().splitlines()[1:]
    }
    return report, counts
