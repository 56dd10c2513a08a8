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
>>> from gitops_render.core.load import LoadedData, Locations
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitops_render.core.errors import ConfigError, SchemaError, SchemaViolation
from gitops_render.core.load import LoadedData
from gitops_render.core.mask import MASK, mask
from gitops_render.data import checked

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# jsonschema is imported where it is used: a run whose schema and data passed the same checks
# before (cache markers, see load_schema and validate_data) does not load it at all.

__all__ = ["apply_defaults", "ecma_pattern", "format_path", "load_schema", "sensitive_values",
           "validate_data", "validate_per_file"]

_APPLICATORS = ("allOf", "anyOf", "oneOf")
_MAX_MESSAGE = 300  # characters of one violation message
_MAX_VIOLATIONS = 50
_MAX_WALK_DEPTH = 200
KeyPath = tuple[str | int, ...]


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
        from jsonschema.exceptions import ValidationError

        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _data_validator() -> Any:
    """Draft 2020-12 with the ECMA-262 end-of-text ``$`` for ``pattern``."""
    import jsonschema

    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"pattern": _pattern_keyword})


def load_schema(path: Path, *, cache_dir: Path | None = None) -> dict[str, Any]:
    """Read and check a JSON schema file; errors name the file.

    Checking a schema against the 2020-12 meta-schema costs more than validating the data
    with it; with ``cache_dir`` (the state directory's cache) a schema whose exact bytes
    passed the check before is not checked again (keyed by its sha256 and the meta-schema's).
    """
    try:
        raw = path.read_bytes()
        schema = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"schema file {path} not found", hint="fix 'schema' in gitops-render.toml") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON in the schema: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the schema is not UTF-8 text") from None
    marker = checked.marker(cache_dir, "schema", raw)
    if marker is None or not marker.is_file():
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"{path}: not a valid JSON Schema: {exc.message}") from None
        if isinstance(schema, dict):
            checked.record(marker)
    for where, ref in _refs(schema, ()):
        if not ref.startswith("#"):
            raise ConfigError(f"{path}: {format_path(where)}: $ref {ref!r} is not a reference inside the schema",
                              hint="gitops-render never fetches schemas: copy the definition into $defs "
                                   "and refer to it as '#/$defs/<name>'")
    if not isinstance(schema, dict):
        raise ConfigError(f"{path}: the schema must be a JSON object")
    return schema


def _refs(node: Any, where: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every ``$ref``/``$dynamicRef`` of a schema with its location."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield (*where, key), value
            else:
                yield from _refs(value, (*where, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, (*where, i))


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    return _resolve_ref(ref, root) if isinstance(ref, str) else schema


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
        for key, raw_sub in props.items():
            sub = _resolve(raw_sub, root)
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


# --------------------------------------------------------------------------- sensitive values


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A local ``$ref`` (``#/$defs/x``, ``#/definitions/x``); anything else resolves to ``{}``."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for raw in [p for p in ref[1:].split("/") if p]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return {}
    return node if isinstance(node, Mapping) else {}


def _same_instance(schema: Mapping[str, Any], root: Mapping[str, Any],
                   seen: frozenset[int]) -> Iterator[Mapping[str, Any]]:
    """``schema`` and every subschema that applies to the same instance ($ref, allOf, if/then ...)."""
    if id(schema) in seen:
        return
    seen = seen | {id(schema)}
    yield schema
    subs: list[Any] = []
    if isinstance(schema.get("$ref"), str):
        subs.append(_resolve_ref(schema["$ref"], root))
    for key in _APPLICATORS:
        subs.extend(schema.get(key) or [])
    subs.extend(schema.get(k) for k in ("if", "then", "else", "not"))
    subs.extend((schema.get("dependentSchemas") or {}).values())
    for sub in subs:
        if isinstance(sub, Mapping):
            yield from _same_instance(sub, root, seen)


def _leaves(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every non-boolean, non-null scalar below ``node`` with its path."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    elif node is not None and not isinstance(node, bool):
        yield path, str(node)


def _children(node: Any, schemas: list[Mapping[str, Any]]) -> Iterator[tuple[str | int, Any, Mapping[str, Any]]]:
    """``(key, child, child schema)`` for every schema keyword that describes a child."""
    for sch in schemas:
        if isinstance(node, Mapping):
            props = sch.get("properties") or {}
            patterns = sch.get("patternProperties") or {}
            extra = sch.get("additionalProperties")
            for key, value in node.items():
                matched = False
                if key in props and isinstance(props[key], Mapping):
                    matched = True
                    yield key, value, props[key]
                for pattern, sub in patterns.items():
                    if isinstance(sub, Mapping) and re.search(pattern, str(key)):
                        matched = True
                        yield key, value, sub
                if not matched and isinstance(extra, Mapping):
                    yield key, value, extra
        elif isinstance(node, list):
            prefix = sch.get("prefixItems") or []
            items = sch.get("items")
            contains = sch.get("contains")
            for i, value in enumerate(node):
                if i < len(prefix) and isinstance(prefix[i], Mapping):
                    yield i, value, prefix[i]
                elif isinstance(items, Mapping):
                    yield i, value, items
                if isinstance(contains, Mapping):
                    yield i, value, contains


def _walk(node: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: KeyPath,
          out: dict[KeyPath, str], positions: set[KeyPath], depth: int) -> None:
    """Collect sensitive leaves of ``node`` described by ``schema`` into ``out``
    (and the paths where ``x-sensitive`` applies into ``positions``)."""
    if depth > _MAX_WALK_DEPTH:
        return
    schemas = list(_same_instance(schema, root, frozenset()))
    if any(s.get("x-sensitive") is True for s in schemas):
        positions.add(path)
        out.update(_leaves(node, path))
        return
    for key, child, sub in _children(node, schemas):
        _walk(child, sub, root, (*path, key), out, positions, depth + 1)


def _sensitive_leaves(data: Any, schema: Mapping[str, Any],
                      positions: set[KeyPath] | None = None) -> dict[KeyPath, str]:
    out: dict[KeyPath, str] = {}
    _walk(data, schema, schema, (), out, positions if positions is not None else set(), 0)
    return out


def sensitive_values(data: Any, schema: Mapping[str, Any]) -> dict[str, str]:
    """``dotted path -> value`` of every field the schema marks ``"x-sensitive": true``.

    Walks ``properties``, ``patternProperties``, ``additionalProperties``,
    ``items``/``prefixItems``/``contains``, ``allOf``/``anyOf``/``oneOf``/``not``/
    ``if``/``then``/``else``/``dependentSchemas`` and local ``$ref``
    (``$defs``/``definitions``). A sensitive object or array makes every scalar
    below it sensitive; a sensitive integer or number counts as its text.
    Booleans and nulls are never sensitive values. Array elements are named
    ``field[0]``.

    >>> sensitive_values({"k": {"a": "s3cret", "n": 7}}, {"properties": {"k": {"x-sensitive": True}}})
    {'k.a': 's3cret', 'k.n': '7'}
    """
    return {format_path(path): value for path, value in _sensitive_leaves(data, schema).items()}


# --------------------------------------------------------------------------- messages


def _shown(instance: Any, sensitive: bool) -> str:
    """How a violation shows the offending value: never a sensitive one, never a whole mapping/list."""
    if sensitive:
        return MASK
    if isinstance(instance, Mapping):
        return "the mapping"
    if isinstance(instance, list):
        return "the list"
    if isinstance(instance, int) and not isinstance(instance, bool) and instance.bit_length() > 200:
        return "a very long integer"
    text = repr(instance)
    return text if len(text) <= 80 else f"a {type(instance).__name__} of {len(str(instance))} characters"


_TYPE_NAMES = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer", float: "number",
               type(None): "null"}


def _structural(err: ValidationError, shown: str) -> str | None:
    """A message built from the validator and the schema only (the value appears as ``shown``)."""
    v, vv = err.validator, err.validator_value
    if v == "type":
        return f"{shown} is not of type {vv!r} (found {_TYPE_NAMES.get(type(err.instance), 'value')})"
    if v == "pattern":
        return f"{shown} does not match {vv!r}"
    if v == "minLength":
        return f"{shown} is too short (at least {vv} characters)"
    if v == "maxLength":
        return f"{shown} is too long (at most {vv} characters)"
    if v == "enum":
        return f"{shown} is not one of {vv!r}"
    if v == "const":
        return f"{shown} is not {vv!r}"
    if v == "format":
        return f"{shown} is not a valid {vv!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        words = {"minimum": "less than the minimum of", "maximum": "greater than the maximum of",
                 "exclusiveMinimum": "less than or equal to the minimum of",
                 "exclusiveMaximum": "greater than or equal to the maximum of", "multipleOf": "not a multiple of"}
        return f"{shown} is {words[str(v)]} {vv!r}"
    if v in ("minItems", "maxItems", "minProperties", "maxProperties"):
        what = "items" if v.endswith("Items") else "keys"
        return f"{shown} has too {'few' if v.startswith('min') else 'many'} {what} " \
               f"(at {'least' if v.startswith('min') else 'most'} {vv})"
    if v == "uniqueItems":
        return f"{shown} has non-unique elements"
    if v == "not":
        return f"{shown} must not match the forbidden form"
    return None


def _is_sensitive_at(path: KeyPath, positions: Iterable[KeyPath]) -> bool:
    """``path`` is, or lies below, a place the schema marks ``x-sensitive``."""
    return any(path[:len(p)] == p for p in positions)


def _message(err: ValidationError, sensitive: set[KeyPath]) -> str:
    custom = err.schema.get("x-error") if isinstance(err.schema, Mapping) else None
    if custom:
        return str(custom)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        return f"missing required key {missing[0]!r}" if missing else err.message
    here = tuple(err.absolute_path)
    shown = _shown(err.instance, _is_sensitive_at(here, sensitive))
    if err.validator in ("anyOf", "oneOf") and err.context:
        from jsonschema.exceptions import best_match

        best = best_match(err.context)
        at = f"{format_path(best.absolute_path)}: " if tuple(best.absolute_path) != here else ""
        return f"{shown} matches none of the allowed forms (e.g. {at}{_message(best, sensitive)})"
    structural = _structural(err, shown)
    if structural is not None:
        return structural
    message = err.message
    if not isinstance(err.instance, (Mapping, list)) and not _is_sensitive_at(here, sensitive):
        return message
    # an unusual validator on a sensitive value or a container: name the rule, never the value
    return f"{shown} does not satisfy the schema's {err.validator!r} rule"


def _bounded(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + " ... (message shortened)"


def _unknown_key_violations(err: ValidationError, base: KeyPath) -> Iterator[tuple[KeyPath, str, str | None]]:
    instance = err.instance if isinstance(err.instance, dict) else {}
    sch = err.schema if isinstance(err.schema, Mapping) else {}
    props = list(sch.get("properties", {}))
    patterns = [re.compile(p) for p in sch.get("patternProperties", {})]
    for key in instance:
        if key in props or any(p.search(str(key)) for p in patterns):
            continue
        close = difflib.get_close_matches(str(key), props, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else None
        yield (*base, str(key)), "unknown key", hint


def validate_data(loaded: LoadedData, schema: Mapping[str, Any], *, cache_dir: Path | None = None) -> dict[str, Any]:
    """Apply schema defaults to ``loaded.data`` and validate; raise :class:`SchemaError` with every violation.

    With ``cache_dir``, data that passed this very schema before (same data, same schema, same
    checker: a marker named by their digests) is not validated again; only its defaults are applied.
    """
    data = apply_defaults(loaded.data, schema)
    data_blob, schema_blob = checked.json_blob(loaded.data), checked.json_blob(schema)
    marker = (checked.marker(cache_dir, "data", data_blob, schema_blob)
              if data_blob is not None and schema_blob is not None else None)
    if marker is not None and marker.is_file():
        return dict(data)
    import jsonschema
    import referencing.exceptions

    validator = _data_validator()(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    sensitive: set[KeyPath] = set()
    secrets = list(_sensitive_leaves(data, schema, sensitive).values())
    violations: list[SchemaViolation] = []
    seen: set[tuple[str, str]] = set()
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        raise SchemaError([SchemaViolation(loaded.primary_file, None, "<root>",
                                           "the data nests too deeply to be validated")]) from None
    except referencing.exceptions.Unresolvable as exc:
        raise ConfigError(f"the schema has a $ref that cannot be resolved: {exc}",
                          hint="gitops-render resolves only references inside the schema ('#/$defs/<name>')") from None
    for err in errors:
        base = tuple(err.absolute_path)
        items: list[tuple[tuple[str | int, ...], str, str | None]]
        if err.validator == "additionalProperties" and err.validator_value is False:
            items = list(_unknown_key_violations(err, base))
        else:
            path = base
            if err.validator == "required":
                missing = re.findall(r"'([^']+)' is a required property", err.message)
                if missing:
                    path = (*base, missing[0])
            items = [(path, _message(err, sensitive), None)]
        for path, message, hint in items:
            key = (format_path(path), message)
            if key in seen:
                continue
            seen.add(key)
            where = loaded.locations.line_for(path)
            file, line = where if where else (loaded.primary_file, None)
            violations.append(SchemaViolation(file, line, format_path(path), _bounded(mask(message, secrets)), hint))
    if violations:
        violations.sort(key=lambda v: (v.file, v.line or 0, v.path))
        if len(violations) > _MAX_VIOLATIONS:
            more = len(violations) - _MAX_VIOLATIONS
            violations = [*violations[:_MAX_VIOLATIONS],
                          SchemaViolation(loaded.primary_file, None, "<root>", f"... and {more} more violation(s)")]
        raise SchemaError(violations)
    checked.record(marker)
    return dict(data)


def validate_per_file(data: Mapping[str, Any], parts: Sequence[tuple[LoadedData, Mapping[str, Any]]], *,
                      cache_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """A schema per data file: each file's own keys are validated (errors keep that file's lines).

    ``data`` is the merged data, ``parts`` each data file loaded alone with its schema.
    Returns the merged data with each schema's defaults applied to the keys the file
    still provides after merging, and the sensitive values of every schema.
    """
    merged = dict(data)
    sensitive: dict[str, str] = {}
    for part, schema in parts:
        validated = validate_data(part, schema, cache_dir=cache_dir)
        for key, value in validated.items():
            if key not in merged or merged[key] == part.data.get(key):  # not overridden by a later file
                merged[key] = value
        sensitive.update(sensitive_values(validated, schema))
    return merged, sensitive
