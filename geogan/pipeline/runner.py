"""Running a pipeline: decide per stage what changed, run what must, record it, under a lock.

Everything the runner keeps lives in ``OUT/.geogan-pipeline/``:

* ``state.json``: per stage, the options and input fingerprints it last ran with, whether that
  run finished (``running`` / ``done`` / ``failed``) and a fingerprint of what it wrote;
* ``log.jsonl``: one JSON object per event (run-start, stage-skip, stage-start, stage-done,
  stage-failed, run-end), appended and flushed as it happens, every run after the other;
* ``lock``: held (``fcntl.flock``) while a run goes on, holding the holder's pid and host. The
  kernel drops the lock when the holder dies, even by SIGKILL, so a killed run never blocks the next.

A stage is skipped when its options, its inputs (the fingerprints of what the stages it reads
wrote) and its own outputs are as recorded after its last finished run. Otherwise it runs: keeping
its outputs when it was interrupted, its inputs only grew, or only a "grows" option changed
(the stage functions skip their finished work themselves), else after clearing its folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from rich.console import Console

from geogan.config import is_inert
from geogan.errors import as_fields
from geogan.files import folder_lock, sweep, write_text
from geogan.pipeline.spec import SOURCES_STAGE, Pipeline, PipelineError, Stage
from geogan.pipeline.stages import SOURCES, Context, SourcesOptions, fingerprinted

log = logging.getLogger(__name__)

STATE_DIR = ".geogan-pipeline"
STATE_FILE = "state.json"
LOG_FILE = "log.jsonl"
LOCK_FILE = "lock"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- lock, state, log ----------------------------------------------------------------------------


def pipeline_lock(root: Path, name: str):
    """Hold the pipeline's lock for the ``with`` block; :class:`LockError` naming the holder if taken."""
    return folder_lock(root / STATE_DIR / LOCK_FILE, f"{root}: pipeline {name!r}")


def read_state(root: Path) -> dict[str, Any]:
    path = root / STATE_DIR / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"stages": {}}
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: unreadable pipeline state ({err}); delete it to start over") from None


def _write_state(root: Path, state: dict[str, Any]) -> None:
    write_text(root / STATE_DIR / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))


class RunLog:
    """Appends one JSON line per event to ``log.jsonl``, flushed and synced at once."""

    def __init__(self, root: Path, pipeline: str, run_id: str):
        self.path = root / STATE_DIR / LOG_FILE
        self.base = {"run": run_id, "pipeline": pipeline, "pid": os.getpid()}

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": _now(), **self.base, "event": event, **fields}, default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_log(root: Path, run: str | None = None) -> list[dict[str, Any]]:
    """Events of ``log.jsonl`` (of run ``run`` only, if given; ``"last"`` for the newest run)."""
    path = root / STATE_DIR / LOG_FILE
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if run == "last" and events:
        run = events[-1]["run"]
    return [e for e in events if run is None or e["run"] == run]


# --- decisions -----------------------------------------------------------------------------------


@dataclass
class StageResult:
    stage: str
    action: str  # skip | run | reset | maybe | not selected | failed
    reason: str
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunResult:
    pipeline: str
    out: Path
    run_id: str
    dry_run: bool
    stages: list[StageResult]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def log(self) -> Path:
        return self.out / STATE_DIR / LOG_FILE


class _Writes(Protocol):
    out: Path


def _out(stage: Stage) -> Path:
    """The folder ``stage`` writes into: the options of every pipeline stage have an ``out``."""
    return cast(_Writes, stage.options).out


def _sources_options(stage: Stage) -> SourcesOptions:
    """The options of the sources stage (the stage kind builds them as :class:`SourcesOptions`)."""
    return cast(SourcesOptions, stage.options)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def decide(stage: Stage, record: dict | None, values: dict, inputs: dict, outputs: str) -> tuple[str, str]:
    """(``skip`` | ``run`` | ``reset``, why) for ``stage`` given its last record and what it would use."""
    if record is None:
        if outputs and stage.name != SOURCES_STAGE:
            return "reset", "its folder holds outputs this pipeline has no record of"
        return "run", "never run"
    old_values, old_inputs = record.get("options", {}), record.get("inputs", {})
    hard: list[str] = []
    soft: list[str] = []
    retired = getattr(stage.options, "retired", {})
    for key in sorted(set(old_values) | set(values)):
        old, new = old_values.get(key), values.get(key)
        if old == new or (key not in values and is_inert(retired, key, old)):
            continue  # unchanged, or an option older geogan had that never changed what was made
        how = stage.kind.grows.get(key)
        text = f"option {key}: {_short(old)} -> {_short(new)}"
        numbers = isinstance(old, int | float) and isinstance(new, int | float)
        grows_ok = how == "any" or (how == "up" and numbers and new >= old)
        (soft if grows_ok else hard).append(text)
    for name in sorted(set(old_inputs) | set(inputs)):
        if old_inputs.get(name) != inputs.get(name):
            (soft if name in stage.kind.incremental_inputs else hard).append(f"input {name} changed")
    if hard:
        return "reset", "; ".join(hard + soft)
    if record.get("status") != "done":
        return "run", f"its last run did not finish ({record.get('status')}); resuming"
    if soft:
        return "run", "; ".join(soft)
    if outputs != record.get("outputs"):
        return "run", "its outputs changed since its last run"
    return "skip", "up to date"


def _reset(stage: Stage, root: Path, record: dict | None) -> None:
    """Clear what ``stage`` wrote: its folder under the pipeline's, never a user's own data.

    For the sources stage, only the folders of made (procedural, fetched) sources whose options
    changed are cleared: a new AOI for one remote source does not fetch the others again.
    """
    if stage.name == SOURCES_STAGE:
        sources = _sources_options(stage)
        old = (record or {}).get("options", {}).get("sources", {})
        folders = [
            sources.out / n
            for n, o in sources.sources.items()
            if SOURCES[o.kind].made and old.get(n) != o.model_dump(mode="json")
        ]
    else:
        folders = [Path(_out(stage))]
    for folder in folders:
        if root.resolve() not in folder.resolve().parents:
            raise PipelineError(f"{folder}: not inside the pipeline folder {root}; refusing to clear it")
        if folder.exists():
            log.info("clearing %s", folder)
            shutil.rmtree(folder)


def _clean_temporaries(stage: Stage) -> None:
    """Remove files an interrupted run left under temporary names in the stage's folder."""
    if stage.name == SOURCES_STAGE:
        return
    folder = Path(_out(stage))
    if folder.is_dir():
        for tmp in sweep(folder):
            log.info("removed %s (left by an interrupted run)", tmp)


def _check_sources(stage: Stage, file: Path) -> None:
    """Check the sources that are on disk already (a dry run's only look at them); raises PipelineError."""
    sources = _sources_options(stage)
    for name, options in sources.sources.items():
        kind = SOURCES[options.kind]
        if not kind.made:
            try:
                kind.make(options, sources.out / name)
            except (OSError, ValueError) as err:
                raise PipelineError(f"{file}: sources.{name}: {err}") from None


# --- the run -------------------------------------------------------------------------------------


def _selected(pipeline: Pipeline, start: str | None, until: str | None) -> list[str]:
    names = pipeline.names
    for given in (start, until):
        if given is not None and given not in names:
            raise PipelineError(f"{pipeline.path}: no stage {given!r} (stages: {', '.join(names)})")
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1
    if first > last:
        raise PipelineError(f"--from {start} comes after --until {until}")
    return names[first : last + 1]


def run(
    pipeline: Pipeline,
    start: str | None = None,
    until: str | None = None,
    dry_run: bool = False,
    console: Console | None = None,
    progress: bool = True,
) -> RunResult:
    """Run ``pipeline`` (stages ``start`` .. ``until``); with ``dry_run`` only say what would run.

    A dry run reads the state and the inputs and writes nothing. Raises :class:`LockError` when
    another run of the pipeline holds the lock and :class:`PipelineError` for unusable
    selections; a failing stage ends the run with ``error`` set (and is recorded as failed).
    """
    console = console or Console(stderr=True)
    selected = _selected(pipeline, start, until)
    run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    root = pipeline.out
    if dry_run:
        return _walk(pipeline, selected, read_state(root), run_id, True, None, console, progress)
    with pipeline_lock(root, pipeline.name):
        state = read_state(root)
        runlog = RunLog(root, pipeline.name, run_id)
        runlog.write(
            "run-start", file=str(pipeline.path), out=str(root), stages=selected, host=socket.gethostname()
        )
        result = _walk(pipeline, selected, state, run_id, False, runlog, console, progress)
        runlog.write(
            "run-end",
            ok=result.ok,
            error=result.error,
            ran=[r.stage for r in result.stages if r.action in ("run", "reset")],
            skipped=[r.stage for r in result.stages if r.action == "skip"],
        )
    return result


def _walk(
    pipeline: Pipeline,
    selected: list[str],
    state: dict,
    run_id: str,
    dry_run: bool,
    runlog: RunLog | None,
    console: Console,
    progress: bool,
) -> RunResult:
    root = pipeline.out
    records: dict[str, dict] = state.setdefault("stages", {})
    result = RunResult(pipeline.name, root, run_id, dry_run, [])
    pending: set[str] = set()  # dry run: stages that would run before this one
    ctx = Context(pipeline.config.cluster, console, progress)
    try:
        for stage in pipeline.stages:
            if stage.name not in selected:
                result.stages.append(StageResult(stage.name, "not selected", "outside --from/--until"))
                continue
            missing = [
                n for n in stage.inputs if records.get(n, {}).get("status") != "done" and n not in pending
            ]
            if missing and not dry_run and any(n not in selected for n in missing):
                raise PipelineError(
                    f"stage {stage.name} needs {', '.join(missing)}, which has not finished a run; "
                    "run those stages first (leave out --from)"
                )
            if dry_run and stage.name == SOURCES_STAGE:
                _check_sources(stage, pipeline.path)
            values = fingerprinted(stage)
            inputs = {n: records.get(n, {}).get("outputs") for n in stage.inputs}
            record = records.get(stage.name)
            outputs = stage.kind.digest(stage.options)
            action, reason = decide(stage, record, values, inputs, outputs)
            waiting = [n for n in stage.inputs if n in pending]
            if dry_run:
                if waiting and action == "skip":
                    action, reason = "maybe", f"runs if {', '.join(waiting)} changes what it writes"
                elif waiting:
                    reason = f"{reason} (after {', '.join(waiting)})"
                if action in ("run", "reset", "maybe"):
                    pending.add(stage.name)
                result.stages.append(StageResult(stage.name, action, reason))
                continue
            assert runlog is not None  # only a dry run goes without a run log
            if action == "skip":
                log.info("%s: up to date, skipped", stage.name)
                runlog.write("stage-skip", stage=stage.name, reason=reason)
                result.stages.append(StageResult(stage.name, "skip", reason))
                continue
            item = _run_stage(
                stage, action, reason, record, values, inputs, records, ctx, root, state, runlog
            )
            result.stages.append(item)
            if item.error:
                result.error = f"stage {stage.name} failed: {item.error}"
                break
    finally:
        ctx.close()
    return result


def _run_stage(
    stage: Stage,
    action: str,
    reason: str,
    record: dict | None,
    values: dict,
    inputs: dict,
    records: dict,
    ctx: Context,
    root: Path,
    state: dict,
    runlog: RunLog,
) -> StageResult:
    log.info(
        "%s: %s (%s)",
        stage.name,
        "clearing its folder and running" if action == "reset" else "running",
        reason,
    )
    runlog.write("stage-start", stage=stage.name, action=action, reason=reason)
    if action == "reset":
        _reset(stage, root, record)
    elif record is not None and record.get("status") != "done":
        _clean_temporaries(stage)
    records[stage.name] = {
        "kind": stage.kind.name,
        "model": stage.model,
        "options": values,
        "inputs": inputs,
        "status": "running",
        "started": _now(),
        "run": runlog.base["run"],
    }
    _write_state(root, state)
    started = time.perf_counter()
    try:
        counts = stage.kind.run(stage, ctx)
    except Exception as err:  # recorded, logged and shown; the run stops here
        seconds = time.perf_counter() - started
        message = as_fields(str(err)) or type(err).__name__  # the pipeline file names fields, not flags
        records[stage.name].update(status="failed", error=message, finished=_now())
        _write_state(root, state)
        runlog.write(
            "stage-failed",
            stage=stage.name,
            seconds=round(seconds, 3),
            error=message,
            error_type=type(err).__name__,
        )
        log.error("%s failed: %s", stage.name, message)
        return StageResult(stage.name, "failed", reason, seconds, error=message)
    seconds = time.perf_counter() - started
    outputs = stage.kind.digest(stage.options)
    records[stage.name].update(status="done", outputs=outputs, counts=counts, finished=_now())
    _write_state(root, state)
    runlog.write("stage-done", stage=stage.name, action=action, seconds=round(seconds, 3), counts=counts)
    return StageResult(stage.name, action, reason, seconds, counts)
