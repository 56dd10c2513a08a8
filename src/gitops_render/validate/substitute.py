"""Flux ``postBuild`` variable substitution, as kustomize-controller applies it.

kustomize-controller substitutes ``${VAR}`` in the YAML text of every object a
Kustomization applies (after kustomize build and SOPS decryption), with the
values of ``postBuild.substitute`` and ``postBuild.substituteFrom``; then it
parses the text again, so ``replicas: ${N}`` becomes a number and
``replicas: "${N}"`` stays a string. The dialect (fluxcd/pkg/envsubst, a fork
of drone/envsubst) is bash's:

``${VAR}``                                the value
``${VAR:=d}`` ``${VAR=d}`` ``${VAR:-d}`` ``${VAR-d}``  a default (``:`` forms also when empty)
``${VAR^}`` ``${VAR^^}`` ``${VAR,}`` ``${VAR,,}``   case
``${VAR#p}`` ``${VAR##p}`` ``${VAR%s}`` ``${VAR%%s}``  prefix/suffix removal (glob patterns)
``${VAR/a/b}`` ``${VAR//a/b}`` ``${VAR/#a/b}`` ``${VAR/%a/b}``  replacement
``${VAR:pos}`` ``${VAR:pos:len}`` ``${#VAR}``      substring, length
``$${VAR}``                               an escape: the literal text ``${VAR}``

Objects annotated or labelled ``kustomize.toolkit.fluxcd.io/substitute: disabled``
are left alone. ``$VAR`` without braces is never substituted (Flux documents this).

>>> values = {"SECRET_DOMAIN": "example.com"}
>>> substitute("host: flux-webhook.${SECRET_DOMAIN}\\nname: ${SECRET_DOMAIN/./-}-production\\n", values.get)
('host: flux-webhook.example.com\\nname: example-com-production\\n', frozenset())
>>> substitute("a: ${A:=1}\\nb: $${B}\\nc: ${C}\\n", {}.get)
('a: 1\\nb: ${B}\\nc: ${C}\\n', frozenset({'C'}))
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["SUBSTITUTE_ANNOTATION", "find_variables", "placeholders", "substitute", "substitution_disabled"]

SUBSTITUTE_ANNOTATION = "kustomize.toolkit.fluxcd.io/substitute"

_VAR = re.compile(r"(\$?)\$\{(#?)([_a-zA-Z][_a-zA-Z0-9]*)([^}]*)\}")
_DEFAULTS = (":=", ":-", "=", "-")


def _strip(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    """Bash ``#``/``##``/``%``/``%%``: remove the shortest/longest glob match at one end."""
    ends = range(len(value) + 1)
    order = list(reversed(ends)) if longest else list(ends)
    for n in order:
        part = value[:n] if prefix else value[len(value) - n:]
        if fnmatch.fnmatchcase(part, pattern):
            return value[n:] if prefix else value[:len(value) - n]
    return value


def _replace(value: str, spec: str) -> str:
    """Bash ``/a/b``, ``//a/b``, ``/#a/b``, ``/%a/b`` (``spec`` without the first ``/``)."""
    mode = ""
    if spec[:1] in ("/", "#", "%"):
        mode, spec = spec[0], spec[1:]
    old, _, new = spec.partition("/")
    if not old:
        return value
    if mode == "/":
        return value.replace(old, new)
    if mode == "#":
        return new + value[len(old):] if value.startswith(old) else value
    if mode == "%":
        return value[:-len(old)] + new if value.endswith(old) else value
    return value.replace(old, new, 1)


def _substring(value: str, spec: str) -> str | None:
    """Bash ``:pos`` / ``:pos:len``; ``None`` when ``spec`` is not of that form."""
    match = re.fullmatch(r"\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?", spec)
    if match is None:
        return None
    pos = int(match.group(1))
    start = max(0, len(value) + pos) if pos < 0 else min(pos, len(value))
    if match.group(2) is None:
        return value[start:]
    length = int(match.group(2))
    end = len(value) + length if length < 0 else start + length
    return value[start:max(start, end)]


def _apply(value: str | None, op: str) -> str | None:
    """The value of ``${NAME<op>}`` when NAME is ``value`` (``None``: no value)."""
    for form in _DEFAULTS:
        if op.startswith(form):
            empty_counts = form.startswith(":")
            if value is None or (empty_counts and value == ""):
                return op[len(form):]
            return value
    if value is None:
        return None
    if op == "":
        return value
    transforms: dict[str, Callable[[str], str]] = {
        "^^": str.upper, ",,": str.lower,
        "^": lambda v: v[:1].upper() + v[1:], ",": lambda v: v[:1].lower() + v[1:],
    }
    if op in transforms:
        return transforms[op](value)
    if op.startswith(("##", "%%")):
        return _strip(value, op[2:], prefix=op[0] == "#", longest=True)
    if op.startswith(("#", "%")):
        return _strip(value, op[1:], prefix=op[0] == "#", longest=False)
    if op.startswith("/"):
        return _replace(value, op[1:])
    if op.startswith(":"):
        return _substring(value, op[1:])
    return None


def substitute(text: str, lookup: Callable[[str], str | None]) -> tuple[str, frozenset[str]]:
    """``text`` with every ``${VAR...}`` that ``lookup`` can answer replaced; and the names it could not.

    An unanswered reference (no value, no default) is left as it is written.
    """
    unresolved: set[str] = set()

    def one(match: re.Match[str]) -> str:
        escape, length, name, op = match.groups()
        if escape:
            return match.group(0)[1:]
        value = lookup(name)
        if length:
            return str(len(value)) if value is not None and not op else _keep(name, match)
        result = _apply(value, op)
        return _keep(name, match) if result is None else result

    def _keep(name: str, match: re.Match[str]) -> str:
        unresolved.add(name)
        return match.group(0)

    return _VAR.sub(one, text), frozenset(unresolved)


def _strings(data: Any) -> Iterator[str]:
    """Keys and string values of a parsed document, depth first."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            yield item


def find_variables(data: Any) -> set[str]:
    """Names of ``${VAR}`` without a default in the keys and string values of ``data``.

    >>> sorted(find_variables({"a": "${A}.${B:=x}.$${C}", "${D}": ["${E:-y}", "${F/x/y}", 3]}))
    ['A', 'D', 'F']
    """
    found: set[str] = set()
    for item in _strings(data):
        if "${" in item:
            for escape, _length, name, op in _VAR.findall(item):
                if not escape and not op.startswith(_DEFAULTS):
                    found.add(name)
    return found


def placeholders(text: str) -> frozenset[str]:
    """Names referenced (not escaped) in ``text``.

    >>> sorted(placeholders("x.${A}.$${B}.${C:=1}"))
    ['A', 'C']
    """
    return frozenset(name for escape, _length, name, _op in _VAR.findall(text) if not escape)


def substitution_disabled(data: Any) -> bool:
    """Whether the object opts out with ``kustomize.toolkit.fluxcd.io/substitute: disabled``."""
    meta = data.get("metadata") if isinstance(data, Mapping) else None
    if not isinstance(meta, Mapping):
        return False
    return any(isinstance(m, Mapping) and m.get(SUBSTITUTE_ANNOTATION) == "disabled"
               for m in (meta.get("annotations"), meta.get("labels")))
