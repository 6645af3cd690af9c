"""geogan's user errors: one base class, one exit status each, one place that reports them.

A user error is bad input or a fault outside geogan (a folder it may not write, a full disk, a
folder another run holds). Its message names the file and the problem, in words a user acts on;
the command line prints it on one line, without a traceback, and exits with ``exit_code``
(``geogan.cli`` catches them in one place for every command). Library callers catch
:class:`GeoganError`; each subclass also derives from the builtin error it refines (``ValueError``
for bad input, ``OSError`` for the disk), so code that catches those keeps working.

Exit status: 0 done, 1 a run that failed on something outside its input (a full disk, a stage
that failed), 2 bad input, 3 a folder another geogan run holds.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path


class GeoganError(Exception):
    """A user error; the message names the file (or option) and the problem."""

    exit_code = 2


class InputError(GeoganError, ValueError):
    """Bad input: a file, option or folder geogan cannot use."""


class RunFailed(GeoganError, RuntimeError):
    """A run that started but did not finish its work; the message says why."""

    exit_code = 1


class LockError(GeoganError, RuntimeError):
    """Another geogan run holds the lock of the folder this one writes."""

    exit_code = 3


class DiskFullError(GeoganError, OSError):
    """The disk ran out of space while geogan wrote a file; what was there before is kept."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


class NotWritable(GeoganError, OSError):
    """A folder geogan was told to write into refuses writes (read-only, no permission)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: cannot write here ({reason}); give a folder you can write to")
        self.path = Path(path)


WRITE_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)


def user_error(err: BaseException) -> GeoganError | None:
    """``err`` as a user error, or None where it is not one (a bug, which keeps its traceback).

    Besides geogan's own: pydantic's option errors (each named as its ``--option``), and operating
    system errors of files the user named (no such file, not writable, disk full, not a folder),
    which name the path.
    """
    from pydantic import ValidationError

    if isinstance(err, GeoganError):
        return err
    if isinstance(err, ValidationError):
        return InputError(option_errors(err))
    if isinstance(err, OSError):
        path = err.filename or ""
        if err.errno == errno.ENOSPC:
            return DiskFullError(f"{path or 'the output folder'}: no space left on the disk")
        if err.errno in WRITE_REFUSED:
            return NotWritable(path or "the output folder", err.strerror or str(err))
        return InputError(f"{path}: {err.strerror}" if path and err.strerror else str(err))
    if isinstance(err, (ValueError, KeyError)):  # the library's plain bad-input errors name their file
        return InputError(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    return None


_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
_QUOTED = re.compile(r"(`[^`]*`)")


def as_fields(text: str) -> str:
    """``text`` with each ``--some-flag`` named as its option field ``some_flag``, for a caller that
    gave options as fields (a pipeline file) rather than flags. Commands quoted in backticks, such
    as ``geogan evaluate --drop-copies``, stay as they are: they are meant to be typed."""
    parts = _QUOTED.split(text)
    return "".join(
        part if part.startswith("`") else _FLAG.sub(lambda m: m.group(1).replace("-", "_"), part)
        for part in parts
    )


def option_errors(
    err, where: Callable[[tuple], str] | None = None, sep: str = "; ", whole: str | None = None
) -> str:
    """Each error of a pydantic ValidationError as ``WHERE: problem``: the one formatter of option
    errors, whether the options came from flags, a config file or a pipeline file.

    ``where`` names the place of an error's location (a tuple of fields); by default its
    ``--dashed-option``. An error of the options together (a model validator's) has no field: it is
    given at ``whole`` where there is one (a pipeline stage), else as it is; a field the model does
    not have is an "unknown field".
    """
    where = where or (lambda loc: "--" + str(loc[0]).replace("_", "-"))

    def one(e: dict) -> str:
        message = (
            "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        )
        if e["loc"]:
            return f"{where(tuple(e['loc']))}: {message}"
        return f"{whole}: {message}" if whole else message

    return sep.join(one(e) for e in err.errors())
