"""benchmarks/RESULTS.md: each benchmark script owns one marked section and rewrites only that."""

from __future__ import annotations

import logging
import os
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


QUIET = ("distributed", "geogan", "lightning", "lightning.fabric", "rasterio", "pyogrio")


def quiet_logs() -> None:
    """Warnings on, and only errors from the libraries whose progress would drown a benchmark's output."""
    logging.basicConfig(level=logging.WARNING)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)


def marks(script: str) -> tuple[str, str]:
    """The begin and end comments around ``script``'s section."""
    return f"<!-- benchmarks/{script}: begin -->", f"<!-- benchmarks/{script}: end -->"


def write_section(script: str, section: str) -> None:
    """Replace ``script``'s section of RESULTS.md (or append it), atomically."""
    begin, end = marks(script)
    text = RESULTS.read_text() if RESULTS.exists() else "# geogan benchmark results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)
