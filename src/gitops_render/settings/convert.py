"""Converters derived from the declaration: a raw TOML/env value -> the field's type.

One generic function, :func:`convert_table`, walks a settings dataclass: each key's
type annotation picks the conversion, its :class:`~.model.Option` adds the checks
(choices, pattern, positive). Unknown keys raise :class:`ConfigError` with a
did-you-mean; wrong types name the source file and the key. A nested table is
returned as a partial ``dict`` (merged by the loader, then built by :func:`build`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gitops_render.core.errors import ConfigError
from gitops_render.settings.model import Option, declared_fields, option_of

__all__ = ["Ctx", "build", "convert_table", "fail", "type_hints", "unknown_key"]


@dataclass(frozen=True)
class Ctx:
    """Where a value came from: for messages and for resolving relative paths."""

    source: str  # "gitops-render.toml [gitops-render]", "environment variable MAKEJINJA_X", "command line"
    base: Path  # directory relative paths resolve against
    split_strings: bool  # typed-settings rules: "a:b" for a list, "true"/"1" for a boolean, "3" for an int
    table: str = "gitops-render"  # the top-level table (for messages: [gitops-render.secrets])


@cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a settings dataclass."""
    return typing.get_type_hints(cls)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def fail(ctx: Ctx, key: str, expected: str, value: Any) -> ConfigError:
    """The wrong-type error: ``<source>: <key>: expected …, got …``."""
    shown = repr(value) if not isinstance(value, (dict, list, Mapping)) else ""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        shown = "(a very large number)"
    return ConfigError(f"{ctx.source}: {key}: expected {expected}, got {_type_name(value)} {shown}".rstrip(),
                       hint="see docs/configuration.md")


def unknown_key(key: str, known: Sequence[str], ctx: Ctx, table: str) -> ConfigError:
    """An unknown key, with a did-you-mean (or the list of known keys)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return ConfigError(f"{ctx.source}: unknown key {key!r} in [{table}]", hint=hint)


def _is_optional(tp: Any) -> tuple[bool, tuple[Any, ...]]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return type(None) in args, tuple(a for a in args if a is not type(None))
    return False, (tp,)


def _scalar(tp: Any, value: Any, key: str, ctx: Ctx, opt: Option) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and ctx.split_strings:  # typed-settings' to_bool
            low = value.lower()
            if low in ("true", "t", "yes", "y", "on", "1"):
                return True
            if low in ("false", "f", "no", "n", "off", "0"):
                return False
        raise fail(ctx, key, "a boolean (true/false)", value)
    if tp is int:
        if isinstance(value, str) and ctx.split_strings:
            try:
                value = int(value)
            except ValueError:
                pass
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 10**18:
            raise fail(ctx, key, "an integer", value)
        if opt.positive and value < 1:
            raise fail(ctx, key, "a positive integer", value)
        return value
    if tp is float:
        if isinstance(value, str) and ctx.split_strings:
            try:
                value = float(value)
            except ValueError:
                pass
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or abs(value) > 10**18
                or not math.isfinite(value) or (opt.positive and value <= 0)):
            raise fail(ctx, key, "a positive number" if opt.positive else "a number", value)
        return float(value)
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            p = Path(value).expanduser()
            return (p if p.is_absolute() else ctx.base / p).resolve()
        raise fail(ctx, key, "a path string", value)
    if tp is str:
        if opt.scalars_as_strings and isinstance(value, (bool, int, float)):
            # makejinja/cattrs structure every value with str(): TOML `x = 1` -> "1"
            return str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str):
            expected = "a scalar (it is used as a string)" if opt.scalars_as_strings else "a string"
            raise fail(ctx, key, expected, value)
        _check_string(value, key, ctx, opt)
        return value
    raise TypeError(f"settings: no converter for {tp!r} ({key})")  # a declaration bug


def _check_string(value: str, key: str, ctx: Ctx, opt: Option) -> None:
    if opt.choices and value not in opt.choices:
        close = difflib.get_close_matches(value, opt.choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(map(repr, opt.choices))}"
        raise ConfigError(f"{ctx.source}: {key}: {value!r} is not one of {', '.join(map(repr, opt.choices))}",
                          hint=hint)
    if opt.pattern and not re.fullmatch(opt.pattern, value):
        raise ConfigError(f"{ctx.source}: {key}: {value!r} is not of the form {opt.pattern_example!r}",
                          hint="see docs/configuration.md")


def convert(tp: Any, value: Any, key: str, ctx: Ctx, opt: Option) -> Any:
    """``value`` as type ``tp`` (a field's annotation), or :class:`ConfigError`."""
    optional, arms = _is_optional(tp)
    if value is None and optional:
        return None
    if len(arms) > 1:  # `Path | Mapping[str, Path]`: pick the arm by the value's shape
        table_arm = [a for a in arms if typing.get_origin(a) in (Mapping, dict)]
        if table_arm and isinstance(value, Mapping):
            return convert(table_arm[0], value, key, ctx, opt)
        others = [a for a in arms if a not in table_arm]
        return convert(others[0], value, key, ctx, opt)
    tp = arms[0]
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise fail(ctx, key, "a table", value)
        return convert_table(tp, value, ctx, prefix=key + ".")
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, str) and ctx.split_strings:
            value = value.split(":")
        if not isinstance(value, (list, tuple)):
            raise fail(ctx, key, "a list of path strings" if item is Path else "a list of strings", value)
        if not all(isinstance(v, (str, os.PathLike)) for v in value):
            raise fail(ctx, key, "a list of path strings" if item is Path else "a list of strings", value)
        return tuple(convert(item, v, key, ctx, opt) for v in value)
    if origin in (Mapping, dict):
        key_type, item = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise fail(ctx, key, "a table", value)
        out: dict[Any, Any] = {}
        plain = dataclasses.replace(opt, pattern=None)  # the pattern constrains the table's keys
        for k, v in value.items():
            if opt.pattern and not re.fullmatch(opt.pattern, str(k)):
                raise ConfigError(f"{ctx.source}: {key}: {str(k)!r} is not of the form {opt.pattern_example!r}",
                                  hint="see docs/configuration.md")
            name = _scalar(Path, k, f"{key}.{k}", ctx, plain) if key_type is Path else str(k)
            out[name] = convert(item, v, f"{key}.{k}", ctx, plain)
        return MappingProxyType(out)
    return _scalar(tp, value, key, ctx, opt)


def convert_table(cls: type, raw: Mapping[str, Any], ctx: Ctx, *, prefix: str = "",
                  exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Check and convert one table of ``cls``; nested tables become partial dicts.

    ``prefix`` is the dotted path of the table below ``ctx.table`` (``"secrets."``).
    Keys may be spelled with ``-`` or ``_``; ``exclude`` names keys that are not
    accepted in this source (gitops-render's own keys in ``makejinja.toml``).
    """
    table = ctx.table + ("." + prefix.rstrip(".") if prefix else "")
    hints = type_hints(cls)
    known = {f.name: f for f in declared_fields(cls) if f.name not in exclude}
    out: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = str(raw_key).replace("-", "_")
        f = known.get(key)
        if f is None:
            raise unknown_key(key, list(known), ctx, table)
        opt = option_of(f)
        assert opt is not None
        out[key] = convert(hints[key], value, prefix + key, ctx, opt)
    return out


def merge(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Merge a partial table into another: nested tables merge, everything else replaces."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def build(cls: type, values: Mapping[str, Any], **computed: Any) -> Any:
    """An instance of ``cls`` from a merged partial table (nested partial dicts built recursively)."""
    hints = type_hints(cls)
    kwargs: dict[str, Any] = dict(computed)
    for f in declared_fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        _optional, arms = _is_optional(hints[f.name])
        if isinstance(value, dict) and len(arms) == 1 and dataclasses.is_dataclass(arms[0]):
            value = build(arms[0], value)  # type: ignore[arg-type]
        kwargs[f.name] = value
    return cls(**kwargs)
