"""Writing files safely: to a temporary name in the target folder, then renamed over the target.

A reader (or a killed run) sees the old file or the new one, never half of one. Temporary names
start with a dot and end in ``.tmp`` so that stages can sweep up what a killed run left.
"""

from __future__ import annotations

import os
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The temporary name ``path`` is written under before the rename."""
    return path.with_name(f".{path.name}.tmp")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
