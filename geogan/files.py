"""Writing files safely: to a temporary name in the target folder, then renamed over the target.

A reader (or a killed run) sees the old file or the new one, never half of one. Temporary names
hold a mark only geogan makes (``.<stem>.geogan-tmp<suffix>``, the suffix kept because GDAL picks
drivers by it), so a stage sweeps up what a killed run of its own left and never touches files of
anyone else. A write that fails removes its temporary file; one that fails because the disk is
full says so (:class:`DiskFullError`, naming the folder and the size being written).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from geogan.errors import DiskFullError, LockError

MARK = ".geogan-tmp"
LOW_SPACE = 1 << 20  # bytes: a failed write with less free space than this is taken as disk full


def temporary_name(path: Path) -> Path:
    """The temporary name ``path`` is written under before the rename."""
    path = Path(path)
    return path.with_name(f".{path.stem}{MARK}{path.suffix}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a name :func:`temporary_name` makes (or a GDAL side file of one)."""
    return path.name.startswith(".") and MARK in path.name


def sweep(folder: Path) -> list[Path]:
    """Remove geogan's temporary files and folders under ``folder`` (left by killed runs)."""
    removed = []
    for path in sorted(Path(folder).rglob(f".*{MARK}*"), key=lambda p: len(p.parts), reverse=True):
        if not is_temporary(path) or not path.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


def _remove(tmp: Path) -> None:
    for p in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err``, raised while writing into ``folder``, came from a full disk.

    ENOSPC says so directly; GDAL's errors often do not (a full disk shows as "seek error" or
    "write failed"), so a failure with almost no free space left counts too.
    """
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


@contextmanager
def replacing(
    path: str | Path, size: int | None = None, check: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """Yield the temporary name to write ``path`` under; rename it over ``path`` on success.

    ``check(tmp)``, if given, runs before the rename and raises when the file is not whole. On any
    failure the temporary file goes and ``path`` keeps what it held; a full disk raises
    :class:`DiskFullError` naming the folder and ``size`` (bytes being written, where known).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, Exception) and not isinstance(err, DiskFullError) and disk_full(err, path.parent):
            what = f"{size} bytes of " if size else ""
            raise DiskFullError(
                f"{path.parent}: no space left on the disk while writing {what}{path.name}; free some "
                "space and run again (files written before are kept, and the run resumes)",
            ) from None
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    path = Path(path)
    data = text.encode("utf-8")
    with replacing(path, len(data)) as tmp:
        tmp.write_bytes(data)
    return path


def reads_back(data: np.ndarray) -> Callable[[Path], None]:
    """A ``check`` for :func:`replacing`: the written raster's pixels must equal ``data``.

    For writers that can report success on a truncated file (GDAL's COG copy on a full disk).
    """

    def check(tmp: Path) -> None:
        import rasterio

        try:
            with rasterio.open(tmp) as src:
                back = src.read()
        except rasterio.RasterioIOError as err:
            raise OSError(f"{tmp}: the file just written cannot be read back ({err})") from None
        floating = np.issubdtype(data.dtype, np.floating)
        if back.shape != data.shape or not np.array_equal(back, data, equal_nan=floating):
            raise OSError(f"{tmp}: the file just written does not read back as what was written")

    return check


@contextmanager
def folder_lock(path: Path, what: str) -> Iterator[Path]:
    """Hold the lock file ``path`` (``fcntl.flock``) for the ``with`` block.

    The file records the holder's pid, host and start time. Another holder raises
    :class:`LockError`: "``what`` is already running (pid ... on ..., started ...)". The kernel
    drops the lock when the holder dies, even by SIGKILL, so a killed run never blocks the next.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        os.close(fd)
        who = (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
        )
        raise LockError(f"{what} is already running ({who}); this run stops. Lock file: {path}") from None
    try:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        info = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "what": what}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        yield path
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


#: The GDAL metadata item (a TIFF tag) holding a raster's attribution, e.g. "Contains modified
#: Copernicus Sentinel data 2017": tiling copies a source's into its chips and ``stats.json``,
#: generate writes the training tiles' into every pair (QGIS shows it under Layer Properties).
COPYRIGHT = "TIFFTAG_COPYRIGHT"
