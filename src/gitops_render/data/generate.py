"""Strong random values for schema fields marked ``x-generate``.

A string property of the cluster schema may carry::

    "x-generate": {"prefix": "sk-", "alphabet": "hex", "length": 48}

(``alphabet``: ``hex``, ``alnum`` or ``base64url``; ``length`` counts the
random characters after ``prefix``; ``"x-generate": true`` means
``{"alphabet": "alnum", "length": 32}``). :func:`generate_missing` fills every
such field that is missing or empty in ``cluster.yaml`` with a value drawn from
:mod:`secrets` (the OS CSPRNG), keeping comments, key order and quoting
(ruamel.yaml round trip). A non-empty value is never replaced. Fields are
filled inside mappings that exist; a whole missing section is not created
(absent sections are usually disabled features). Each generated value must
carry at least 128 bits of randomness.

:func:`comment_out_defaults` turns every top-level key whose value equals its
schema default into a comment (``# litellm_replicas: 1``): ``init`` never
writes a default into ``cluster.yaml``, so a later change of a default (an
image tag) still reaches the repository. The schema is the single source of
defaults.
"""

from __future__ import annotations

import io
import json
import math
import re
import secrets
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from gitops_render.core.errors import ConfigError, DataError

__all__ = [
    "ALPHABETS",
    "MIN_BITS",
    "GenerateResult",
    "GenerateSpec",
    "comment_out_defaults",
    "fill_generated",
    "generate_missing",
    "generate_missing_report",
    "parse_spec",
    "random_value",
]

ALPHABETS: Mapping[str, str] = {
    "hex": "0123456789abcdef",
    "alnum": string.ascii_letters + string.digits,
    "base64url": string.ascii_letters + string.digits + "-_",
}
MIN_BITS = 128


@dataclass(frozen=True)
class GenerateSpec:
    """How to generate one value."""

    alphabet: str = "alnum"
    length: int = 32
    prefix: str = ""

    @property
    def bits(self) -> float:
        """Entropy of a generated value, in bits."""
        return self.length * math.log2(len(ALPHABETS[self.alphabet]))


@dataclass(frozen=True)
class GenerateResult:
    """The new cluster.yaml text and the dotted paths that were filled (no values)."""

    text: str
    generated: tuple[str, ...]


def parse_spec(raw: Any, where: str) -> GenerateSpec:
    """Validate an ``x-generate`` annotation (``where`` names it in errors)."""
    if raw is True:
        return GenerateSpec()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"schema: {where}: x-generate must be true or an object")
    unknown = set(raw) - {"prefix", "alphabet", "length"}
    if unknown:
        raise ConfigError(f"schema: {where}: x-generate has unknown key(s) {', '.join(sorted(unknown))}")
    spec = GenerateSpec(alphabet=str(raw.get("alphabet", "alnum")), length=raw.get("length", 32),
                        prefix=str(raw.get("prefix", "")))
    if spec.alphabet not in ALPHABETS:
        raise ConfigError(f"schema: {where}: x-generate alphabet {spec.alphabet!r} is not one of "
                          f"{', '.join(ALPHABETS)}")
    if not isinstance(spec.length, int) or isinstance(spec.length, bool) or not 1 <= spec.length <= 4096:
        raise ConfigError(f"schema: {where}: x-generate length must be an integer from 1 to 4096")
    if spec.bits < MIN_BITS:
        need = math.ceil(MIN_BITS / math.log2(len(ALPHABETS[spec.alphabet])))
        raise ConfigError(f"schema: {where}: x-generate gives only {spec.bits:.0f} bits of randomness",
                          hint=f"use length >= {need} for alphabet {spec.alphabet} (at least {MIN_BITS} bits)")
    return spec


def random_value(spec: GenerateSpec) -> str:
    """``prefix`` + ``length`` characters chosen uniformly with :func:`secrets.choice`."""
    chars = ALPHABETS[spec.alphabet]
    return spec.prefix + "".join(secrets.choice(chars) for _ in range(spec.length))


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref`` chains (merged with sibling keywords)."""
    seen: set[str] = set()
    while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#") and schema["$ref"] not in seen:
        ref = schema["$ref"]
        seen.add(ref)
        node: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
        merged = dict(node) if isinstance(node, Mapping) else {}
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        schema = merged
    return schema


def _is_empty(value: Any) -> bool:
    """Missing-equivalent: null or an empty/blank string."""
    return value is None or (isinstance(value, str) and not value.strip())


def _targets(node: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str, keys: tuple[str | int, ...] = (),
             *, create: bool = True) -> Iterator[tuple[CommentedMap, str, GenerateSpec, str, tuple[str | int, ...]]]:
    """``(mapping, key, spec, dotted path, key path)`` of every empty generatable field.

    ``create=False``: only fields the data names (with an empty value), never a missing one.
    """
    schema = _resolve(schema, root)
    subs = [schema] + [_resolve(s, root) for k in ("allOf",) for s in schema.get(k) or [] if isinstance(s, Mapping)]
    for sch in subs:
        if isinstance(node, Mapping):
            for key, raw_prop in (sch.get("properties") or {}).items():
                if not isinstance(raw_prop, Mapping):
                    continue
                prop = _resolve(raw_prop, root)
                where = f"{path}.{key}" if path else key
                if "x-generate" in prop:
                    spec = parse_spec(prop["x-generate"], where)
                    if _is_empty(node.get(key)) and (create or key in node):
                        yield node, key, spec, where, (*keys, key)  # type: ignore[misc]
                elif key in node:
                    yield from _targets(node[key], prop, root, where, (*keys, key), create=create)
        elif isinstance(node, list) and isinstance(sch.get("items"), Mapping):
            for i, item in enumerate(node):
                yield from _targets(item, sch["items"], root, f"{path}[{i}]", (*keys, i), create=create)


def fill_generated(data: Any, schema: Mapping[str, Any], *,
                   create: bool = True) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Fill every empty ``x-generate`` field of plain ``data`` in place; ``(key path, value, dotted path)`` each.

    For data files that are not YAML (TOML, JSON), whose text the caller edits itself.
    """
    filled = []
    for mapping, key, spec, where, keys in list(_targets(data, schema, schema, "", create=create)):
        mapping[key] = value = random_value(spec)
        filled.append((keys, value, where))
    return filled


def _guess_indent(text: str) -> tuple[int, int, int]:
    """``(mapping, sequence, offset)`` indentation of a YAML text, for ruamel's dumper.

    Looks at the first nested mapping key and the first block sequence under a
    key; defaults to 2 / 4 / 2 (``key:\n  - item``).
    """
    mapping, offset = 0, -1
    prev_indent, prev_opens = -1, False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        is_item = stripped.startswith("- ") or stripped == "-"
        if prev_opens and is_item and indent >= prev_indent and offset < 0:
            offset = indent - prev_indent
        elif prev_opens and not is_item and indent > prev_indent and not mapping:
            mapping = indent - prev_indent
        prev_indent = indent
        prev_opens = bool(re.search(r":\s*(#.*)?$", stripped)) and not stripped.startswith("- ")
        if mapping and offset >= 0:
            break
    mapping = mapping or 2
    offset = 2 if offset < 0 else offset
    return mapping, offset + 2, offset


def generate_missing_report(text: str, schema: Mapping[str, Any], *, source: str = "cluster.yaml",
                            create: bool = True) -> GenerateResult:
    """Like :func:`generate_missing`, also naming the filled fields (never their values).

    ``create=False`` fills only fields the text names with an empty value (one data file of several
    validated by one merged schema: a missing field belongs in another file).
    """
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(source, mark.line + 1 if mark else None, "not valid YAML") from None
    if data is None:
        data = CommentedMap()
    targets = list(_targets(data, schema, schema, "", create=create))
    if not targets:
        return GenerateResult(text=text, generated=())
    for mapping, key, spec, *_ in targets:
        mapping[key] = random_value(spec)
    mapping_indent, sequence_indent, offset = _guess_indent(text)
    yaml.indent(mapping=mapping_indent, sequence=sequence_indent, offset=offset)
    out = io.StringIO()
    yaml.dump(data, out)
    return GenerateResult(text=out.getvalue(), generated=tuple(t[3] for t in targets))


def generate_missing(text: str, schema: Mapping[str, Any]) -> str:
    """``cluster.yaml`` text with every empty/missing ``x-generate`` field filled.

    Comments and formatting are kept; non-empty values are never replaced;
    text without anything to fill is returned unchanged.
    """
    return generate_missing_report(text, schema).text


def _plain(value: Any) -> Any:
    """ruamel's round-trip types as plain JSON values (for a type-strict comparison)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value) if isinstance(value, str) else value


def _is_default(value: Any, prop: Mapping[str, Any]) -> bool:
    """``value`` equals the property's ``default`` (``1`` is not ``true``, ``"1"`` is not ``1``)."""
    if "default" not in prop or "x-generate" in prop:
        return False
    try:
        return json.dumps(_plain(value), sort_keys=True) == json.dumps(prop["default"], sort_keys=True)
    except (TypeError, ValueError):
        return False


def comment_out_defaults(text: str, schema: Mapping[str, Any], *, source: str = "cluster.yaml") -> str:
    """``text`` with every top-level key whose value equals its schema default commented out.

    The key's lines (value and nested lines included) are prefixed with ``# ``; comment
    and blank lines are kept as they are. ``x-generate`` fields are never commented out
    (``init`` fills them). Text without such a key is returned unchanged.
    """
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(source, mark.line + 1 if mark else None, "not valid YAML") from None
    if not isinstance(data, CommentedMap) or not data:
        return text
    props = schema.get("properties") or {}
    lines = text.splitlines(keepends=True)
    starts = [(data.lc.key(key)[0], key) for key in data]
    starts.sort()
    ends = [line for line, _ in starts[1:]] + [len(lines)]
    commented: set[int] = set()
    for (start, key), end in zip(starts, ends, strict=True):
        prop = props.get(key)
        if isinstance(prop, Mapping) and _is_default(data[key], _resolve(prop, schema)):
            commented.update(range(start, end))
    if not commented:
        return text
    out = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        out.append("# " + line if index in commented and stripped and not stripped.startswith("#") else line)
    return "".join(out)
