"""A data file's first version, made from the sample next to it (what ``init`` writes).

Each data entry of the settings (``cluster.toml``, ``nodes.yaml`` …) has its sample beside it:
``X.sample.EXT`` for ``X.EXT`` (YAML, TOML or JSON; ``.yaml`` and ``.yml`` stand in for each
other). The data file starts as the sample's text with every empty ``x-generate`` field of its
schema filled (:mod:`.generate`):

* YAML: a round trip that keeps comments; top-level values equal to their schema default become
  comments (the schema stays the single source of defaults);
* TOML: the sample text as it is, apart from the generated values (``key = ""`` lines are filled
  in place; a missing key is added to its table);
* JSON: the sample's data, filled, with the sample's indentation.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops_render.core.errors import ConfigError, DataError
from gitops_render.data import generate

__all__ = ["DATA_SUFFIXES", "SampleText", "from_sample", "sample_for"]

DATA_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
_YAML = (".yaml", ".yml")


@dataclass(frozen=True)
class SampleText:
    """The text to write for a data file and the fields that were generated (names only)."""

    text: str
    generated: tuple[str, ...]


def sample_for(data_file: Path) -> Path | None:
    """``X.sample.EXT`` beside ``X.EXT`` (``.yaml``/``.yml`` interchangeable); ``None`` when there is none."""
    suffix = data_file.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        return None
    alternatives = [data_file.suffix] + ([s for s in _YAML if s != suffix] if suffix in _YAML else [])
    for ext in alternatives:
        candidate = data_file.with_name(f"{data_file.stem}.sample{ext}")
        if candidate.is_file():
            return candidate
    return None


def from_sample(sample: Path, schema: Mapping[str, Any] | None, *, create: bool = True) -> SampleText:
    """The data file's text made from ``sample`` (``create=False``: only fields the sample names are filled)."""
    text = sample.read_text(encoding="utf-8")
    if schema is None:
        return SampleText(text, ())
    suffix = sample.suffix.lower()
    if suffix in _YAML:
        result = generate.generate_missing_report(text, schema, source=sample.name, create=create)
        return SampleText(generate.comment_out_defaults(result.text, schema, source=sample.name), result.generated)
    if suffix == ".json":
        return _json(sample, text, schema, create)
    return _toml(sample, text, schema, create)


def _json(sample: Path, text: str, schema: Mapping[str, Any], create: bool) -> SampleText:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(sample.name, exc.lineno, f"not valid JSON: {exc.msg}") from None
    filled = generate.fill_generated(data, schema, create=create)
    if not filled:
        return SampleText(text, ())
    indent = re.search(r"^\{\s*\n([ \t]+)\S", text)
    out = json.dumps(data, indent=indent.group(1) if indent else 2, ensure_ascii=False) + "\n"
    return SampleText(out, tuple(where for *_, where in filled))


# --------------------------------------------------------------------------- TOML, edited as text

_HEADER = re.compile(r"^\s*\[(?!\[)\s*([^\]]+?)\s*\]\s*(?:#.*)?$")
_ARRAY_HEADER = re.compile(r"^\s*\[\[")


def _split_key(dotted: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ``("a", "b.c", "d")`` (TOML dotted keys, quoted parts kept whole)."""
    parts = re.findall(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*(?:\.|$)', dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _sections(lines: list[str]) -> dict[tuple[str, ...], tuple[int, int]]:
    """Each ``[table]``'s line range (header excluded); ``()`` is the top level before the first header."""
    starts: list[tuple[tuple[str, ...] | None, int]] = [((), 0)]
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            starts.append((_split_key(header.group(1)), i + 1))
        elif _ARRAY_HEADER.match(line):
            starts.append((None, i + 1))  # arrays of tables are not edited
    out: dict[tuple[str, ...], tuple[int, int]] = {}
    for n, (name, start) in enumerate(starts):
        end = starts[n + 1][1] - 1 if n + 1 < len(starts) else len(lines)
        if name is not None:
            out.setdefault(name, (start, end))
    return out


def _set_toml(lines: list[str], keys: tuple[str | int, ...], value: str) -> bool:
    """Put ``key = "value"`` into its table: fill an empty ``key = ""`` line, else add the line."""
    if not all(isinstance(k, str) for k in keys):
        return False
    table, key = tuple(str(k) for k in keys[:-1]), str(keys[-1])
    section = _sections(lines).get(table)
    if section is None:
        return False
    start, end = section
    quoted = json.dumps(value)
    pattern = re.compile(rf'^(\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*=\s*)(""|\'\')?(\s*(?:#.*)?)$')
    for i in range(start, end):
        m = pattern.match(lines[i].rstrip("\n"))
        if m:
            lines[i] = f"{m.group(1)}{quoted}{m.group(3)}\n"
            return True
    last = max((i for i in range(start, end) if lines[i].strip() and not lines[i].lstrip().startswith("#")),
               default=start - 1)
    bare = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    lines.insert(last + 1, f"{bare} = {quoted}\n")
    return True


def _toml(sample: Path, text: str, schema: Mapping[str, Any], create: bool) -> SampleText:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(sample.name, None, f"not valid TOML: {exc}") from None
    filled = generate.fill_generated(data, schema, create=create)
    if not filled:
        return SampleText(text, ())
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for keys, value, where in filled:
        if not _set_toml(lines, keys, value):
            raise ConfigError(f"{sample.name}: cannot fill the generated field {where}",
                              hint=f'write it as `{keys[-1]} = ""` in its [table] of the sample')
    out = "".join(lines)
    try:
        check = tomllib.loads(out)  # the edit must give exactly the generated values
    except tomllib.TOMLDecodeError:
        check = {}
    for keys, value, where in filled:
        node: Any = check
        for k in keys:
            node = node.get(k) if isinstance(node, Mapping) and isinstance(k, str) else None
        if node != value:
            raise ConfigError(f"{sample.name}: cannot fill the generated field {where}",
                              hint=f'write it as `{keys[-1]} = ""` in its [table] of the sample')
    return SampleText(out, tuple(where for *_, where in filled))
