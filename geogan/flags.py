"""Command-line flags made from the options models (:mod:`geogan.config`): one source of truth.

:func:`command` turns a function taking a validated options model into a typer command whose
parameters are the model's fields: name (``--split-block``), help (the field's description),
default (shown, never restated), choices (``Literal`` fields), repeatable flags (lists, variable
tuples, ``KEY=VALUE`` mappings) and ``--flag/--no-flag`` booleans. Every command also takes
``--config FILE``, a YAML mapping of any of the model's fields; flags given on the command line
win over the file, the file over the model's defaults. A bad value names its ``--flag``, or the
config file and its field.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from datetime import date
from inspect import Parameter
from pathlib import Path
from typing import Any, Literal

import typer
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from geogan.errors import InputError, option_errors

CONFIG_HELP = "YAML file of options by field name (a flag without its dashes, _ for -); flags given win."


def flag(name: str) -> str:
    """A field's flag: ``split_block`` -> ``--split-block``."""
    return f"--{name.replace('_', '-')}"


def command(
    model: type[BaseModel],
    *,
    arguments: tuple[str, ...] = (),
    names: dict[str, tuple[str, ...]] | None = None,
    hidden: tuple[str, ...] = (),
    extra: dict[str, tuple[Any, Any]] | None = None,
    base: Callable[[dict, dict], dict] | None = None,
) -> Callable:
    """Decorate ``body(options, **extra)`` into a typer command of ``model``'s fields.

    ``arguments``: fields taken as positional arguments; ``names``: flag declarations other than
    :func:`flag`'s (``("-n",)``); ``hidden``: fields the command line does not take; ``extra``: more
    parameters, name -> (annotation, typer.Option), passed to ``body`` as they are; ``base``: the
    field values under the flags when no --config is given, from (flags given, extra values).
    """
    names = names or {}
    extra = extra or {}

    def decorate(body: Callable) -> Callable:
        fields = {n: f for n, f in model.model_fields.items() if n not in hidden}
        parameters = [_parameter(n, f, n in arguments, names.get(n)) for n, f in fields.items()]
        parameters.append(_option("config", Path | None, typer.Option(None, "--config", help=CONFIG_HELP)))
        parameters += [_option(n, annotation, default) for n, (annotation, default) in extra.items()]
        parameters.sort(key=lambda p: p.kind)  # positional arguments first

        def run(**values: Any) -> Any:
            config = values.pop("config")
            extras = {n: values.pop(n) for n in extra}
            given = {
                n: _value(fields[n], v, names.get(n, (flag(n),))[0])
                for n, v in values.items()
                if v is not None and v != []
            }
            doc = read_config(config) if config is not None else (base(given, extras) if base else {})
            try:
                options = model.model_validate({**doc, **given})
            except ValidationError as err:
                raise InputError(_errors(err, given, config, names, arguments)) from None
            return body(options, **extras)

        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__name__, run.__doc__, run.__module__ = body.__name__, body.__doc__, body.__module__
        # What the command is made of, for what else shows its options (the QGIS plugin's algorithms)
        run.options_model, run.arguments, run.names = model, arguments, names  # type: ignore[attr-defined]
        run.hidden, run.extra = hidden, extra  # type: ignore[attr-defined]
        return run

    return decorate


def read_config(path: Path) -> dict:
    """The mapping of options in the YAML file ``path``; an :class:`InputError` naming it otherwise."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping of option: value")
    return doc


def _errors(err: ValidationError, given: dict, config: Path | None, names: dict, arguments: tuple) -> str:
    """Each error named as the user gave the value: its flag, or the config file and field."""

    def where(loc: tuple) -> str:
        field = str(loc[0])
        if field not in given and config is not None:
            return f"{config}: {'.'.join(map(str, loc))}"
        if field in arguments:
            return field.upper()
        return names.get(field, (flag(field),))[0]

    return option_errors(err, where)


def _option(name: str, annotation: Any, default: Any) -> Parameter:
    return Parameter(name, Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _parameter(
    name: str, field: FieldInfo, argument: bool, declared: tuple[str, ...] | None
) -> inspect.Parameter:
    annotation, help = _cli_type(field), _help(field)
    if argument:
        info = typer.Argument(None, help=help, show_default=False, metavar=name.upper())
        return inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info, annotation=annotation
        )
    dashed = name.replace("_", "-")
    decls = declared or ((f"--{dashed}/--no-{dashed}",) if annotation is bool else (flag(name),))
    return _option(name, annotation | None, typer.Option(None, *decls, help=help, show_default=False))


def _help(field: FieldInfo) -> str:
    text = (field.description or "").strip()
    text = text[:1].upper() + text[1:]
    kind = strip_none(field.annotation)
    if typing.get_origin(kind) in (list, tuple) and typing.get_args(kind)[1:] == (Ellipsis,):
        inner = typing.get_args(kind)[0]
        if typing.get_origin(inner) is Literal:  # typer shows a Literal's choices, not a list of them
            text += f" (repeatable: {', '.join(map(str, typing.get_args(inner)))})"
    if field.is_required():
        return f"{text} \\[required]"
    default = field.get_default(call_default_factory=True)
    if default is None or default == {} or default == ():
        return text
    if isinstance(default, tuple | list):
        default = " ".join(str(v) for v in default)
    elif isinstance(default, bool):
        default = "yes" if default else "no"
    return f"{text} \\[default: {default}]"


def _cli_type(field: FieldInfo) -> Any:
    """The annotation typer takes for ``field`` (choices stay ``Literal``; typer offers them)."""
    kind = strip_none(field.annotation)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (list, tuple) and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
        inner = strip_none(args[0])
        return list[str] if typing.get_origin(inner) is Literal else list[_scalar(inner)]  # type: ignore[misc]
    if origin is tuple:
        return tuple[tuple(_scalar(a) for a in args)]  # type: ignore[misc]
    if origin is dict:  # KEY=VALUE, repeated
        return list[str]
    return _scalar(kind)


def _scalar(kind: Any) -> Any:
    if kind is date:
        return str
    if kind in (int, float, str, bool) or kind is Path or typing.get_origin(kind) is Literal:
        return kind
    raise TypeError(f"no command-line type for {kind!r}")


def strip_none(kind: Any) -> Any:
    """``X | None`` -> ``X``; any other type as it is."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _value(field: FieldInfo, value: Any, label: str) -> Any:
    """A flag's value as the model takes it: ``KEY=VALUE`` items of a mapping field as a dict."""
    if typing.get_origin(strip_none(field.annotation)) is not dict or not isinstance(value, list | tuple):
        return value
    pairs = [str(v).rpartition("=") for v in value]
    for item, (key, sep, _) in zip(value, pairs, strict=True):
        if not (key.strip() and sep):
            raise InputError(f"{label}: give KEY=VALUE, e.g. {label} {_example(field)} (got {item!r})")
    return {key.strip(): item for key, _, item in pairs}


def _example(field: FieldInfo) -> str:
    examples = field.json_schema_extra or {}
    return str(examples.get("example", "NAME=VALUE")) if isinstance(examples, dict) else "NAME=VALUE"
