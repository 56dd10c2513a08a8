"""Leak guard: sensitive values must only appear in ``*.sops.*`` outputs.

Sensitive fields are marked in the cluster schema with ``"x-sensitive": true``
(on a property, an array's items, an object -- then everything below it -- or
a ``$defs`` entry reached through ``$ref``). :func:`sensitive_values` collects
their values from the data; :func:`find_leaks` looks for them, and for their
base64 forms (a Secret ``data:`` value copied into a ConfigMap, a basic-auth
header), in every output that will be committed in plaintext.

Findings name the file and the field, never the value.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from gitops_render.core.errors import LeakError
from gitops_render.core.naming import is_secret_path

__all__ = [
    "DEFAULT_MIN_LENGTH",
    "Leak",
    "base64_fragments",
    "check_leaks",
    "find_leaks",
    "sensitive_values",
]

DEFAULT_MIN_LENGTH = 8
_NOT_SECRET_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "none", "enabled", "disabled"})
_APPLICATORS = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True)
class Leak:
    """A sensitive field's value found in a plaintext output."""

    path: PurePosixPath
    field: str
    form: str = "plain"  # "plain" or "base64"

    def __str__(self) -> str:
        how = "" if self.form == "plain" else f" ({self.form}-encoded)"
        return f"{self.path}: value of sensitive field {self.field}{how}"


# --------------------------------------------------------------------------- schema walk


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A local ``$ref`` (``#/$defs/x``, ``#/definitions/x``); anything else resolves to ``{}``."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return {}
    return node if isinstance(node, Mapping) else {}


def _same_instance(schema: Mapping[str, Any], root: Mapping[str, Any], seen: frozenset[int]) -> Iterator[Mapping[str, Any]]:
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
    subs.extend(schema.get(k) for k in ("if", "then", "else"))
    for sub in subs:
        if isinstance(sub, Mapping):
            yield from _same_instance(sub, root, seen)


def _leaves(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every non-boolean scalar below ``node`` with its dotted path."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
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
            for i, value in enumerate(node):
                if i < len(prefix) and isinstance(prefix[i], Mapping):
                    yield i, value, prefix[i]
                elif isinstance(items, Mapping):
                    yield i, value, items


def _walk(node: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str,
          out: dict[str, str], depth: int) -> None:
    """Collect sensitive leaves of ``node`` described by ``schema`` into ``out``."""
    if depth > 200:
        return
    schemas = list(_same_instance(schema, root, frozenset()))
    if any(s.get("x-sensitive") is True for s in schemas):
        out.update(_leaves(node, path))
        return
    for key, child, sub in _children(node, schemas):
        child_path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        _walk(child, sub, root, child_path, out, depth + 1)


def sensitive_values(data: Any, schema: Mapping[str, Any]) -> dict[str, str]:
    """``dotted path -> value`` of every field the schema marks ``"x-sensitive": true``.

    Walks ``properties``, ``patternProperties``, ``additionalProperties``,
    ``items``/``prefixItems``, ``allOf``/``anyOf``/``oneOf``/``if``/``then``/
    ``else`` and local ``$ref`` (``$defs``/``definitions``). A sensitive object
    or array makes every scalar below it sensitive. Booleans and nulls are
    never sensitive values. Array elements are named ``field[0]``.
    """
    out: dict[str, str] = {}
    _walk(data, schema, schema, "", out, 0)
    return out


# --------------------------------------------------------------------------- search


def base64_fragments(value: str, min_length: int = DEFAULT_MIN_LENGTH) -> set[str]:
    """Substrings that every base64 encoding of a text *containing* ``value`` has.

    For each of the three byte alignments, the base64 characters determined
    only by ``value``'s bytes (standard and URL-safe alphabets). This catches
    ``base64(value)`` as well as ``base64("user:" + value)``.
    """
    raw = value.encode()
    out: set[str] = set()
    for offset in range(3):
        padded = b"\0" * offset + raw
        start = -(-offset * 8 // 6)  # ceil(8*offset/6)
        end = (offset + len(raw)) * 8 // 6
        for enc in (base64.b64encode(padded).decode(), base64.urlsafe_b64encode(padded).decode()):
            core = enc[start:end]
            if len(core) >= min_length:
                out.add(core)
    return out


def _worth_checking(value: str, min_length: int) -> bool:
    """Long enough and not a word like ``true`` that appears everywhere."""
    return len(value) >= min_length and value.strip().lower() not in _NOT_SECRET_WORDS


def find_leaks(
    files: Mapping[PurePosixPath, bytes],
    sensitive: Mapping[str, str],
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
) -> list[Leak]:
    """Sensitive values (or their base64 forms) in outputs that are not ``*.sops.*``.

    Values shorter than ``min_length`` and boolean-like words are ignored.
    One finding per file and field; plain matches win over base64 ones.
    """
    checks = [(field, value.encode(), [f.encode() for f in base64_fragments(value, min_length)])
              for field, value in sorted(sensitive.items()) if _worth_checking(value, min_length)]
    search = _NeedleSearch([plain for _, plain, _ in checks] + [f for _, _, frags in checks for f in frags])
    leaks: list[Leak] = []
    for path in sorted(files, key=lambda p: PurePosixPath(p).as_posix()):
        if is_secret_path(path):
            continue
        found = search.occurring_in(files[path])
        if not found:
            continue
        for field, plain, fragments in checks:
            if plain in found:
                leaks.append(Leak(PurePosixPath(path), field, "plain"))
            elif any(frag in found for frag in fragments):
                leaks.append(Leak(PurePosixPath(path), field, "base64"))
    return leaks


class _NeedleSearch:
    """Which of many byte strings occur in a text, in one pass over the text.

    Testing each needle with ``in`` costs needles times text (8 000 sensitive values in a
    1 MB config took most of a minute); here every needle is filed under its first
    ``k`` bytes and the text is scanned once, looking each ``k``-byte window up.
    """

    #: below this many needles, one C-speed ``in`` per needle beats a Python-level scan
    SCAN_FROM = 200

    def __init__(self, needles: Iterable[bytes]) -> None:
        self.unique = {n for n in needles if n}
        self.k = min((len(n) for n in self.unique), default=0)
        self.by_prefix: dict[bytes, list[bytes]] = {}
        for n in self.unique:
            self.by_prefix.setdefault(n[:self.k], []).append(n)

    def occurring_in(self, text: bytes) -> set[bytes]:
        if len(self.unique) < self.SCAN_FROM:
            return {n for n in self.unique if n in text}
        k, index = self.k, self.by_prefix
        found: set[bytes] = set()
        if len(text) < k:
            return found
        for i in range(len(text) - k + 1):
            candidates = index.get(text[i:i + k])
            if candidates:
                found.update(n for n in candidates if text.startswith(n, i))
        return found


def check_leaks(
    files: Mapping[PurePosixPath, bytes],
    sensitive: Mapping[str, str],
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
) -> None:
    """Raise :class:`LeakError` listing every leak (file and field, never the value)."""
    leaks = find_leaks(files, sensitive, min_length=min_length)
    if leaks:
        lines = [f"{len(leaks)} sensitive value(s) found in plaintext output:"] + [f"  {leak}" for leak in leaks]
        raise LeakError("\n".join(lines),
                        hint="move the value into a *.sops.* output (a Secret) and reference it from there")

