"""Stage 2 — validate the merged data against the cluster schema (JSON Schema 2020-12).

* Every violation is reported at once, each as ``cluster.yaml:LINE: path.to.key: message``.
* Unknown keys (``additionalProperties: false``) get a did-you-mean.
* Defaults declared in the schema (``default``) are applied before validation
  and derivation: the schema is the single source of defaults.
* Values of fields annotated ``"x-sensitive": true`` never appear in messages.
* A subschema may carry ``"x-error"``: the operator-facing message used when
  that subschema fails (useful for ``anyOf``/``if``-``then`` rules).

>>> schema = {"type": "object", "additionalProperties": False,
...           "properties": {"replicas": {"type": "integer", "default": 1}, "name": {"type": "string"}}}
>>> from gitops_render.load import LoadedData, Locations
>>> validate_data(LoadedData({"name": "x"}, Locations()), schema)
{'name': 'x', 'replicas': 1}
>>> try:
...     validate_data(LoadedData({"nmae": "x"}, Locations(), ()), schema)
... except SchemaError as e:
...     print(e.violations[0])
<data>: nmae: unknown key (did you mean 'name'?)
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from gitops_render.core.errors import ConfigError, SchemaError, SchemaViolation
from gitops_render.core.load import LoadedData

__all__ = ["DataValidator", "apply_defaults", "ecma_pattern", "format_path", "load_schema", "sensitive_paths",
           "validate_data"]

_MIN_SECRET_LEN = 4


@functools.lru_cache(maxsize=512)
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema ``pattern`` compiled with ECMA-262 semantics for ``$``: the end of the text.

    Python's ``$`` also matches before a final newline, so ``^[a-z.]+$`` would accept
    ``"example.com\\n"``; every ``$`` outside a character class becomes ``\\Z``.
    """
    out, in_class, escaped = [], False, False
    for char in pattern:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            out.append(char)
            escaped = True
        elif in_class:
            out.append(char)
            in_class = char != "]"
        elif char == "[":
            out.append(char)
            in_class = True
        else:
            out.append("\\Z" if char == "$" else char)
    return re.compile("".join(out))


def _pattern_keyword(validator: Any, pattern: str, instance: Any,
                     _schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    """``pattern`` with :func:`ecma_pattern` semantics (a trailing newline never slips through)."""
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with the ECMA-262 end-of-text ``$`` for ``pattern``.
DataValidator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern_keyword})


def load_schema(path: Path) -> dict[str, Any]:
    """Read and check a JSON schema file; errors name the file."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"schema file {path} not found", hint="fix 'schema' in gitops-render.toml") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON in the schema: {exc.msg}") from None
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{path}: not a valid JSON Schema: {exc.message}") from None
    return schema


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}
    return schema


def apply_defaults(data: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """Return a copy of ``data`` with every ``properties.*.default`` filled in, recursively.

    Only plain ``properties`` are considered (not conditional branches), so a
    default never depends on other values.
    """
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if isinstance(data, dict):
        out = dict(data)
        props = schema.get("properties", {})
        for key, sub in props.items():
            sub = _resolve(sub, root)
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub, root)
        return out
    if isinstance(data, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [apply_defaults(x, items, root) for x in data]
    return data


def format_path(path: Iterable[str | int]) -> str:
    """``("a", 0, "b") -> "a[0].b"``; the empty path is ``<root>``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _subschema_at(schema: Mapping[str, Any], path: Iterable[str | int], root: Mapping[str, Any]) -> Mapping[str, Any]:
    node = _resolve(schema, root)
    for p in path:
        if isinstance(p, int):
            node = _resolve(node.get("items", {}) if isinstance(node.get("items"), Mapping) else {}, root)
        else:
            node = _resolve(node.get("properties", {}).get(p, {}), root)
    return node


def sensitive_paths(schema: Mapping[str, Any], data: Any) -> dict[str, str]:
    """Dotted path -> value of every string field annotated ``x-sensitive`` present in ``data``."""
    out: dict[str, str] = {}

    def walk(node: Mapping[str, Any], value: Any, path: tuple[str | int, ...]) -> None:
        node = _resolve(node, schema)
        if node.get("x-sensitive") and isinstance(value, str):
            out[format_path(path)] = value
        if isinstance(value, dict):
            for k, sub in node.get("properties", {}).items():
                if k in value:
                    walk(sub, value[k], (*path, k))
        elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
            for i, item in enumerate(value):
                walk(node["items"], item, (*path, i))

    walk(schema, data, ())
    return out


def _mask(text: str, secrets: Iterable[str]) -> str:
    for s in sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def _unknown_key_violations(err: ValidationError, base: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str, str | None]]:
    instance = err.instance if isinstance(err.instance, dict) else {}
    props = list(err.schema.get("properties", {}))
    patterns = [re.compile(p) for p in err.schema.get("patternProperties", {})]
    for key in instance:
        if key in props or any(p.search(str(key)) for p in patterns):
            continue
        close = difflib.get_close_matches(str(key), props, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else None
        yield (*base, str(key)), "unknown key", hint


def _message(err: ValidationError, sensitive: bool, values: Iterable[str]) -> str:
    custom = err.schema.get("x-error") if isinstance(err.schema, Mapping) else None
    if custom:
        return str(custom)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        return f"missing required key {missing[0]!r}" if missing else err.message
    if sensitive:
        v = err.validator
        if v == "pattern":
            return f"*** does not match {err.validator_value!r}"
        if v == "minLength":
            return f"*** is too short (at least {err.validator_value} characters)"
        if v == "maxLength":
            return f"*** is too long (at most {err.validator_value} characters)"
        if v == "type":
            return f"*** is not of type {err.validator_value!r}"
        return _mask(err.message, [str(err.instance)] + list(values))
    if err.validator in ("anyOf", "oneOf") and err.context:
        best = jsonschema.exceptions.best_match(err.context)
        return f"{err.message.split(' is not valid')[0]} matches none of the allowed forms (e.g. {best.message})"
    return err.message


def validate_data(loaded: LoadedData, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Apply schema defaults to ``loaded.data`` and validate; raise :class:`SchemaError` with every violation."""
    data = apply_defaults(loaded.data, schema)
    validator = DataValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    secrets = list(sensitive_paths(schema, data).values())
    violations: list[SchemaViolation] = []
    seen: set[tuple[str, str]] = set()
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        raise SchemaError([SchemaViolation(loaded.primary_file, None, "<root>",
                                           "the data nests too deeply to be validated")]) from None
    for err in errors:
        base = tuple(err.absolute_path)
        items: list[tuple[tuple[str | int, ...], str, str | None]]
        if err.validator == "additionalProperties" and err.validator_value is False:
            items = list(_unknown_key_violations(err, base))
        else:
            sub = _subschema_at(schema, base, schema)
            sensitive = bool(sub.get("x-sensitive"))
            path = base
            if err.validator == "required":
                missing = re.findall(r"'([^']+)' is a required property", err.message)
                if missing:
                    path = (*base, missing[0])
            items = [(path, _message(err, sensitive, secrets), None)]
        for path, message, hint in items:
            key = (format_path(path), message)
            if key in seen:
                continue
            seen.add(key)
            where = loaded.locations.line_for(path)
            file, line = where if where else (loaded.primary_file, None)
            violations.append(SchemaViolation(file, line, format_path(path), _mask(message, secrets), hint))
    if violations:
        violations.sort(key=lambda v: (v.file, v.line or 0, v.path))
        raise SchemaError(violations)
    return data
