"""Reading a pipeline file: YAML with line numbers, ``${VAR}`` expansion, validation, wiring.

The file is composed into YAML nodes first so every value keeps its line; errors from the options
models are reported as ``FILE:LINE: stages.tile.size: problem``. Strings may hold ``${VAR}`` or
``${VAR:-default}``, taken from the environment (an unset variable without a default is an error
naming it). Relative paths in the file are relative to the file's folder, so a scheduled run
(cron starts in ``$HOME``) reads the same folders as one started beside the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from geogan.config import PipelineConfig, Sen12msSource, Source
from geogan.errors import InputError, as_fields, option_errors
from geogan.pipeline.stages import SOURCES, STAGES, SourceKind, SourcesOptions, Stage

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SOURCES_STAGE = "sources"  # the implicit first stage: make or check every source


class PipelineError(InputError):
    """A pipeline file that cannot be used; the message names the file, the place and the problem."""


@dataclass
class Pipeline:
    path: Path
    name: str
    out: Path
    config: PipelineConfig
    sources: dict[str, tuple[SourceKind, Source, Path]]  # name -> kind, options, where it lives
    stages: list[Stage]  # the implicit "sources" stage first

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise PipelineError(f"{self.path}: no stage {name!r} (stages: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


# --- YAML with marks -----------------------------------------------------------------------------


def _expand(text: str, where: str) -> str:
    """``text`` with every ``${VAR}`` / ``${VAR:-default}`` replaced (defaults may nest)."""
    return _expand_until(text, where, top=True, needed=True)[0]


def _expand_until(text: str, where: str, top: bool, needed: bool) -> tuple[str, str]:
    """Expand ``text`` up to an unmatched ``}`` (inside a default) or its end; (value, what follows)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("${", i):
            match = NAME.match(text, i + 2)
            if not match:
                raise PipelineError(f"{where}: malformed ${{...}} in {text!r}")
            name, i = match.group(0), match.end()
            value, default = os.environ.get(name), None
            if text.startswith(":-", i):
                default, after = _expand_until(text[i + 2 :], where, top=False, needed=needed and not value)
                i = len(text) - len(after)
            elif text.startswith("}", i):
                i += 1
            else:
                raise PipelineError(f"{where}: malformed ${{{name}...}} in {text!r}")
            if not value:
                if default is None and needed:
                    raise PipelineError(
                        f"{where}: environment variable {name} is not set (used as ${{{name}}})"
                    )
                value = default or ""
            out.append(value)
        elif text[i] == "}" and not top:
            return "".join(out), text[i + 1 :]
        else:
            out.append(text[i])
            i += 1
    if not top:
        raise PipelineError(f"{where}: a ${{...:-...}} is not closed in {text!r}")
    return "".join(out), ""


def _to_python(node: yaml.Node, path: tuple, marks: dict[tuple, int], file: Path) -> Any:
    """Plain Python values of ``node``; ``marks`` gets the 1-based line of every key path."""
    marks[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                raise PipelineError(f"{file}:{key_node.start_mark.line + 1}: {key!r} appears twice")
            out[key] = _to_python(value_node, (*path, key), marks, file)
            marks[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), marks, file) for i, item in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, str):
        value = _expand(value, f"{file}:{node.start_mark.line + 1}")
        if node.style is None and value != node.value:  # an expanded plain scalar: re-read 2 as 2
            loaded = yaml.safe_load(value)
            value = loaded if isinstance(loaded, int | float | bool) else value
    return value


def read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """The document of ``path`` and the line of every key path in it."""
    try:
        text = path.read_text()
    except OSError as err:
        raise PipelineError(f"{path}: cannot read the pipeline file ({err.strerror or err})") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(node, yaml.MappingNode):
        raise PipelineError(f"{path}: expected a mapping with out, sources and stages")
    marks: dict[tuple, int] = {}
    return _to_python(node, (), marks, path), marks


def _place(file: Path, marks: dict[tuple, int], prefix: tuple, loc: tuple) -> str:
    """``FILE:LINE: a.b.c`` for the error at ``prefix + loc``, at the line of its deepest part in the file.

    Parts pydantic adds that the file lacks (a source's ``kind`` tag) are left out; a missing
    field is named, at the line of the mapping it is missing from.
    """
    known, shown = tuple(prefix), [str(p) for p in prefix]
    for i, part in enumerate(loc):
        if (*known, part) in marks:
            known = (*known, part)
            shown.append(f"[{part}]" if isinstance(part, int) else str(part))
        elif i == len(loc) - 1:
            shown.append(str(part))
    dotted = ".".join(shown).replace(".[", "[")
    line = marks.get(known)
    return f"{file}:{line}: {dotted}" if line else f"{file}: {dotted}"


def _errors(err: ValidationError, file: Path, marks: dict, prefix: tuple) -> PipelineError:
    text = option_errors(
        err, lambda loc: _place(file, marks, prefix, loc), sep="\n", whole=_place(file, marks, prefix, ())
    )
    return PipelineError(as_fields(text))  # a pipeline file names fields, not flags


# --- the pipeline ----------------------------------------------------------------------------------


def _resolve(path: Path | str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load(path: str | Path, out: str | Path | None = None, scheduler: str | None = None) -> Pipeline:
    """Read and check pipeline file ``path``; ``out`` and ``scheduler`` override the file's.

    Raises :class:`PipelineError` naming the file, the line and the field for anything wrong.
    """
    path = Path(path)
    doc, marks = read_yaml(path)
    base = path.resolve().parent
    raw_stages = doc.get("stages") if isinstance(doc.get("stages"), dict) else None
    try:
        config = PipelineConfig.model_validate(doc)
    except ValidationError as err:
        raise _errors(err, path, marks, ()) from None
    if scheduler:
        config = config.model_copy(
            update={"cluster": config.cluster.model_copy(update={"scheduler": scheduler})}
        )
    root = _resolve(out, Path.cwd()) if out is not None else _resolve(config.out, base)

    sources = {}
    for name, options in config.sources.items():
        _check_name(name, f"{path}:{marks.get(('sources', name), '?')}: sources.{name}")
        kind = SOURCES[options.kind]
        if isinstance(options, Sen12msSource):
            options = options.model_copy(update={"path": _resolve(options.path, base)})
        for role in ("s2", "s1", "labels"):
            value = getattr(options, role, None)
            if isinstance(value, str) and not value.startswith("/vsi"):
                options = options.model_copy(update={role: str(_resolve(value, base))})
        sources[name] = (kind, options, root / SOURCES_STAGE / name)

    made = SourcesOptions(sources={n: o for n, (_, o, _) in sources.items()}, out=root / SOURCES_STAGE)
    stages = [Stage(SOURCES_STAGE, STAGES[SOURCES_STAGE], made, line=marks.get(("sources",)))]
    problems = []
    for name, raw in (raw_stages or {}).items():
        try:
            stages.append(_stage(name, raw, stages, sources, path, marks, root, base))
        except PipelineError as err:  # check every stage, report every problem
            problems.append(str(err))
            kind = raw.get("stage", name) if isinstance(raw, dict) else name
            if kind in STAGES:  # a stand-in, so the stages after it can be checked too
                stages.append(Stage(name, STAGES[kind], None))  # type: ignore[arg-type]
    if problems:
        raise PipelineError("\n".join(problems))
    return Pipeline(path, config.name or path.stem, root, config, sources, stages)


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _check_name(name: object, where: str) -> None:
    """Stage and source names become folder names under ``out``: letters, digits, '-' and '_'."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PipelineError(
            f"{where}: {name!r} cannot be a stage or source name: it names a folder under out, so it "
            "must be 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )


def _stage(
    name: str, raw: Any, earlier: list[Stage], sources: dict, file: Path, marks: dict, root: Path, base: Path
) -> Stage:
    prefix = ("stages", name)
    where = f"{file}:{marks.get(prefix, '?')}: stages.{name}"
    _check_name(name, where)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: expected a mapping of option: value")
    raw = dict(raw)
    kind_name = raw.pop("stage", name)
    if name == SOURCES_STAGE or kind_name == SOURCES_STAGE:
        raise PipelineError(
            f"{where}: 'sources' is the pipeline's own first stage; name this stage otherwise"
        )
    if kind_name not in STAGES or kind_name == SOURCES_STAGE:
        known = ", ".join(k for k in STAGES if k != SOURCES_STAGE)
        raise PipelineError(f"{where}: unknown stage {kind_name!r} (stages: {known}; or set stage: KIND)")
    kind = STAGES[kind_name]
    for wired in (*kind.wire, "out"):
        if wired in raw:
            raise PipelineError(
                f"{file}:{marks.get((*prefix, wired), '?')}: stages.{name}.{wired}: set by the pipeline "
                f"(under {root}); remove it"
            )
    try:
        model_cls, model = kind.options_model(raw)
    except ValueError as err:
        raise PipelineError(
            f"{file}:{marks.get((*prefix, 'model'), marks.get(prefix, '?'))}: stages.{name}.model: {err}"
        ) from None
    values = {k: v for k, v in raw.items() if k != "model"}
    inputs: list[str] = []
    for field_name, upstream_kind in kind.wire.items():
        found = [s for s in earlier if s.kind.name == upstream_kind]
        if not found:
            raise PipelineError(f"{where}: needs a {upstream_kind} stage before it")
        values[field_name] = root / found[-1].name
        inputs.append(found[-1].name)
    for field_name in kind.refs:  # e.g. generate's mask_run: masks (an earlier train stage's name)
        named = [s for s in earlier if s.name == values.get(field_name)]
        if named:
            values[field_name] = root / named[0].name
            inputs.append(named[0].name)
    for upstream_kind in kind.reads:
        found = [s for s in earlier if s.kind.name == upstream_kind]
        if found and found[-1].name not in inputs:
            inputs.append(found[-1].name)
    if kind.takes_sources:
        names = values.get("sources", list(sources))
        if not isinstance(names, list):
            names = [names]
        for i, item in enumerate(names):
            if item not in sources:
                raise PipelineError(
                    f"{file}:{marks.get((*prefix, 'sources', i), marks.get(prefix, '?'))}: "
                    f"stages.{name}.sources[{i}]: {item!r} is not a source of this pipeline "
                    f"(sources: {', '.join(sources)})"
                )
        values["sources"] = names  # source names: the stage expands them when it runs (see stages.py)
        inputs.insert(0, SOURCES_STAGE)
    for field_name, info in model_cls.model_fields.items():  # relative paths: beside the file
        if field_name in values and field_name not in kind.wire and isinstance(values[field_name], str):
            if "Path" in str(info.annotation) and isinstance(values[field_name], str):
                values[field_name] = str(_resolve(values[field_name], base))
    values["out"] = root / name
    try:
        options = model_cls.model_validate(values)
    except ValidationError as err:
        raise _errors(err, file, marks, prefix) from None
    problem = kind.check(options) if kind.check else None
    if problem:
        field_name, text = problem
        line = marks.get((*prefix, field_name), marks.get(prefix, "?"))
        raise PipelineError(f"{file}:{line}: stages.{name}.{field_name}: {text}")
    takes = {n: sources[n] for n in getattr(options, "sources", ())} if kind.takes_sources else {}
    return Stage(name, kind, options, line=marks.get(prefix), inputs=inputs, model=model, sources=takes)
