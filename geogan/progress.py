"""Progress of long stages: rich bars in a terminal, or plain lines for a program that runs geogan.

Every stage makes its bars through :class:`Progress` and :func:`track` (rich's own API). With
``GEOGAN_PROGRESS=lines`` in the environment (the QGIS plugin sets it) the bars are not drawn;
instead each whole percent of a bar is one line on stderr::

    geogan-progress 42 train spade

so the caller can show it in its own progress bar (``PROGRESS_LINE`` parses one).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import rich.progress

ENV = "GEOGAN_PROGRESS"
PREFIX = "geogan-progress"
PROGRESS_LINE = re.compile(rf"^{PREFIX} (\d{{1,3}}) (.*)$")
T = TypeVar("T")


def as_lines() -> bool:
    return os.environ.get(ENV, "") == "lines"


class Progress(rich.progress.Progress):
    """rich's Progress; with ``GEOGAN_PROGRESS=lines``, a line per whole percent instead of a bar."""

    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        self._lines = as_lines() and not kwargs.get("disable", False)
        self._said: dict[rich.progress.TaskID, int] = {}
        if self._lines:
            kwargs["disable"] = True
        super().__init__(*columns, **kwargs)

    def update(self, task_id: rich.progress.TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._say(task_id)

    def advance(self, task_id: rich.progress.TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)

    def _say(self, task_id: rich.progress.TaskID) -> None:
        if not self._lines:
            return
        task = self._tasks[task_id]
        if not task.total:
            return
        percent = min(100, int(100 * task.completed / task.total))
        if self._said.get(task_id) != percent:
            self._said[task_id] = percent
            print(f"{PREFIX} {percent} {task.description}", file=sys.stderr, flush=True)


def track(
    sequence: Iterable[T],
    description: str = "working",
    total: float | None = None,
    disable: bool = False,
    **kwargs: Any,
) -> Iterator[T]:
    """rich's ``track`` through :class:`Progress`."""
    with Progress(disable=disable, **kwargs) as bar:
        yield from bar.track(sequence, total=total, description=description)
