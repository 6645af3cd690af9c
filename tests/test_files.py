"""Atomic writing: the target holds the old text or the new, and no temporary file is left."""

from __future__ import annotations

import pytest

from geogan.files import temporary_name, write_text


def test_write_text_replaces_the_target_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "stats.json"
    assert write_text(path, "old") == path
    write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]
    assert temporary_name(path).name == ".stats.geogan-tmp.json"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "index.txt"
    write_text(path, "old")
    temporary_name(path).mkdir()  # the temporary name cannot be written: the write fails
    with pytest.raises(OSError):
        write_text(path, "new")
    assert path.read_text() == "old"
