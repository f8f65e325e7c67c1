"""Scenario error messages: what went wrong in a scenario file, where, and what is allowed.

Turns pydantic ``ValidationError`` details and YAML errors into ``(field path, message)``
problems that :class:`harness.scenario.ScenarioError` shows one per line::

    prompts[1].max_tokens: must be >= 1 (got 0)
    strem: unknown field; allowed: name, ..., stream (did you mean 'stream'?)

The schema's validators raise :func:`field_error` for a problem at a sub-path of the
model they check. This module does not import the schema: callers pass the root model.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = ["field_error", "short", "validation_problems", "yaml_problem"]

Loc = tuple[int | str, ...]

_FIELD_ERROR = "scenario_field"

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}

_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}

_MAX_LISTED = 20


def field_error(field: str, msg: str) -> PydanticCustomError:
    """An error for ``field`` (a dotted/indexed sub-path) raised from a model validator."""
    return PydanticCustomError(_FIELD_ERROR, "{field}: {msg}", {"field": field, "msg": msg})


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- field paths


def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = str(part)
            if part.startswith("["):
                out += part
            elif re.fullmatch(r"[A-Za-z0-9_\-]+", part):
                out += f".{part}" if out else part
            else:
                out += f"[{part!r}]"
    return out


def _join_loc(base: str, sub: str) -> str:
    if not sub:
        return base
    if not base:
        return sub
    return base + sub if sub.startswith("[") else f"{base}.{sub}"


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so we can walk to the model at an error location."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model at ``loc`` below ``root`` (None if it is not a model)."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str) or part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
            continue
        origin = typing.get_origin(current)
        if origin in (list, dict):
            current = typing.get_args(current)[-1]
            continue
        return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


# --------------------------------------------------------------------------- messages


def _unknown_field(root: type[BaseModel], loc: Loc) -> str:
    """An unknown key: the fields allowed there, and the closest one."""
    key = str(loc[-1]) if loc else "?"
    model = _model_at(root, loc[:-1])
    msg = "unknown field"
    if model is not None:
        allowed = list(model.model_fields)
        msg += f"; allowed: {', '.join(allowed)}"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
    return msg


def _bound(op: str, ctx: dict[str, Any], value: Any) -> str:
    bound = next(iter(ctx.values())) if ctx else "?"
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    return f"must be {op} {bound} (got {short(value)})"


def _too_short(etype: str, ctx: dict[str, Any], value: Any) -> str:
    if etype == "string_too_short" or isinstance(value, str) or (isinstance(value, (list, dict)) and not value):
        return "must not be empty"
    return f"needs at least {ctx.get('min_length')} item(s)"


def _pattern(path: str, ctx: dict[str, Any], value: Any) -> str:
    if path == "anthropic_version":
        return f'must be a date like "2023-06-01" (got {short(value)})'
    return f"must match {ctx.get('pattern')} (got {short(value)})"


def _value_error(path: str, msg: str) -> tuple[str, str]:
    """A validator's ``ValueError``; a message starting ``[i]...: `` names a sub-path."""
    msg = msg.removeprefix("Value error, ")
    if msg.startswith("["):  # sub-path inside the field, e.g. "[2].type: ..."
        sub, _, rest = msg.partition(": ")
        return path + sub, rest
    return path, msg


def _message(err: ErrorDetails, path: str) -> str:
    """The message for an error of a pydantic type (not a custom or value error)."""
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if etype == "missing":
        return "missing required field"
    if etype in _BOUNDS:
        return _bound(_BOUNDS[etype], ctx, value)
    if etype in ("too_short", "string_too_short"):
        return _too_short(etype, ctx, value)
    if etype == "string_pattern_mismatch":
        return _pattern(path, ctx, value)
    if etype == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {short(value)})"
    if etype == "finite_number":
        return f"must be a finite number (got {short(value)})"
    if etype in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[etype]} (got {short(value)})"
    msg = str(err.get("msg", "invalid value"))
    return (msg[:1].lower() + msg[1:]) + (f" (got {short(value)})" if value is not None else "")


def _describe(err: ErrorDetails, root: type[BaseModel]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    etype = err.get("type", "")
    path = _format_loc(loc)
    if etype == _FIELD_ERROR:
        ctx = err.get("ctx") or {}
        return _join_loc(path, ctx["field"]), ctx["msg"]
    if etype == "extra_forbidden":
        return path, _unknown_field(root, loc)
    if etype == "value_error":
        return _value_error(path, str(err.get("msg", "")))
    return path, _message(err, path)


def validation_problems(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """``(field path, message)`` for each distinct error of ``exc`` (``root`` was validated)."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        item = _describe(err, root)
        if item not in out:
            out.append(item)
    if len(out) > _MAX_LISTED:
        more = len(out) - _MAX_LISTED
        out = [*out[:_MAX_LISTED], ("", f"... and {more} more problem(s)")]
    return out


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML syntax error as ``line L, column C: invalid YAML: ...``."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        return f"invalid YAML: character {exc.character!r} at position {exc.position}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = f"{where}invalid YAML: {problem}"
    if context:
        text += f" ({context})"
    return text
