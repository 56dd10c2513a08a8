"""Stage 1 — load data files (YAML, TOML, JSON) with makejinja's merge semantics.

Differences from makejinja, on purpose:

* a duplicate key in a YAML or JSON mapping is an error naming file and line
  (PyYAML silently keeps the last one);
* every error names the file and line, and is a :class:`~gitops_render.errors.DataError`
  (never a traceback);
* the line of every key is remembered (:class:`Locations`) so that later stages
  (schema validation) can point at ``cluster.yaml:LINE`` -- in YAML, JSON and TOML;
* YAML aliases that expand to more than :data:`MAX_EXPANDED_NODES` values (an
  "alias bomb") and integers longer than Python converts (4 300 digits) are
  errors naming the line, not an endless run or an internal error.

Like makejinja, YAML is read with PyYAML's safe loader (YAML 1.1: ``yes``/``no``
are booleans), every document must be a mapping, and files and documents are
merged shallowly in order (a later top-level key replaces an earlier one).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "c.yaml").write_text("a: 1\\nb:\\n  c: x\\n")
>>> loaded = load_data([d / "c.yaml"])
>>> loaded.data
{'a': 1, 'b': {'c': 'x'}}
>>> loaded.locations.line_for(("b", "c"))
('...c.yaml', 3)
"""

from __future__ import annotations

import bisect
import json
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitops_render.core.errors import DataError

__all__ = ["LoadedData", "Locations", "collect_data_files", "load_data", "load_yaml_text", "set_dotted"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_MAX_DEPTH = 200
MAX_EXPANDED_NODES = 1_000_000
_MAX_DIGITS = sys.get_int_max_str_digits() or 4300
_LONG_INT = re.compile(r"[-+]?\d{" + str(_MAX_DIGITS + 1) + ",}")
_TOO_LONG_HINT = "quote it if it is meant as text"

KeyPath = tuple[str | int, ...]

# the C loader is much faster on large files; same semantics (the pure one when libyaml is missing)
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that rejects duplicate keys (merge keys ``<<`` excepted)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found an unhashable key (a list or mapping used as a key)", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first defined on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value its tag cannot hold (``!!bool 'maybe'``, ``!!int x``) is a YAML error at its line."""
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, OverflowError):
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"the value cannot be read as the YAML type !!{tag}", node.start_mark) from None


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


@dataclass
class Locations:
    """Where each key path was defined: ``path -> (file, line)``."""

    lines: dict[KeyPath, tuple[str, int]] = field(default_factory=dict)

    def line_for(self, path: Sequence[str | int]) -> tuple[str, int] | None:
        """The location of ``path`` or of its nearest recorded ancestor."""
        p = tuple(path)
        while True:
            hit = self.lines.get(p)
            if hit is not None:
                return hit
            if not p:
                return None
            p = p[:-1]

    def update(self, other: Locations, *, top_keys: Sequence[str]) -> None:
        """Shallow-merge ``other`` in: every path under a replaced top-level key is replaced."""
        replaced = set(top_keys)
        self.lines = {k: v for k, v in self.lines.items() if not (k and k[0] in replaced)}
        self.lines.update(other.lines)


@dataclass
class LoadedData:
    """The merged data and where every key came from."""

    data: dict[str, Any]
    locations: Locations
    files: tuple[Path, ...] = ()

    @property
    def primary_file(self) -> str:
        """The file named in messages that have no better location."""
        return str(self.files[0]) if self.files else "<data>"


def _walk_nodes(node: yaml.Node, path: KeyPath, file: str, out: dict[KeyPath, tuple[str, int]],
                seen: set[int], depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise DataError(file, node.start_mark.line + 1, f"nesting deeper than {_MAX_DEPTH} levels",
                        hint="flatten the structure")
    if id(node) in seen:  # an alias: record nothing new, never walk twice
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG and len(node.value) > _MAX_DIGITS:
        raise DataError(file, node.start_mark.line + 1, f"an integer of {len(node.value)} digits is too long "
                        f"(at most {_MAX_DIGITS})", hint=_TOO_LONG_HINT)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            child = (*path, str(key_node.value))
            out.setdefault(child, (file, key_node.start_mark.line + 1))
            _walk_nodes(value_node, child, file, out, seen, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            out.setdefault(child, (file, item.start_mark.line + 1))
            _walk_nodes(item, child, file, out, seen, depth + 1)


def _expanded_size(node: yaml.Node, file: str, memo: dict[int, int]) -> int:
    """How many values ``node`` becomes once every alias is expanded (raises past the limit)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a cycle counts once (the constructor rejects nothing, it shares)
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, file, memo) + _expanded_size(v, file, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, file, memo) for item in node.value)
    if size > MAX_EXPANDED_NODES:
        raise DataError(file, node.start_mark.line + 1,
                        f"YAML aliases here expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb)",
                        hint="write the values out instead of nesting aliases (*name) of aliases")
    memo[id(node)] = size
    return size


def _iter_yaml(text: str, file: str) -> Iterator[tuple[Any, Locations, int]]:
    loader = _StrictLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover
                continue
            locs: dict[KeyPath, tuple[str, int]] = {}
            _walk_nodes(node, (), file, locs, set())
            _expanded_size(node, file, {})
            yield loader.construct_document(node), Locations(locs), node.start_mark.line + 1
    finally:
        loader.dispose()


def _yaml_error(file: str, exc: yaml.YAMLError, text: str = "") -> DataError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    bad_line = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    hint = "check indentation and quoting around this line"
    if "duplicate key" in str(problem):
        hint = "remove one of the two definitions"
    elif "could not determine a constructor" in str(problem):
        hint = "custom YAML tags (!!python/...) are not allowed in data files"
    elif "\t" in bad_line[: (mark.column + 1) if mark is not None else None]:
        hint = "YAML does not allow tabs for indentation; use spaces"
    return DataError(file, line, f"invalid YAML: {problem}", hint=hint)


def load_yaml_text(text: str, file: str) -> tuple[dict[str, Any], Locations]:
    """Parse every document of ``text`` and merge them shallowly (makejinja's ``|=``)."""
    data: dict[str, Any] = {}
    locations = Locations()
    try:
        for doc, locs, line in _iter_yaml(text, file):
            if not isinstance(doc, dict):
                found = "an empty document" if doc is None else f"a {type(doc).__name__}"
                raise DataError(file, line, f"expected a mapping at the top of the YAML document, found {found}",
                                hint="the data file must be 'key: value' pairs (remove a stray '---' or list)")
            _check_keys(doc, file, locs)
            locations.update(locs, top_keys=[str(k) for k in doc])
            data |= doc
    except yaml.YAMLError as exc:
        raise _yaml_error(file, exc, text) from None
    except RecursionError:
        raise DataError(file, None, "the YAML nests too deeply to be read", hint="flatten the structure") from None
    return data, locations


def _check_keys(doc: dict[Any, Any], file: str, locs: Locations) -> None:
    raw_lines = {k[0]: v for k, v in locs.lines.items() if len(k) == 1}
    for i, key in enumerate(doc):
        if not isinstance(key, str):
            where = locs.line_for((str(key),)) or (list(raw_lines.values())[i] if i < len(raw_lines) else None)
            raise DataError(file, where[1] if where else None,
                            f"top-level key {key!r} is not a string (YAML read it as {type(key).__name__})",
                            hint="quote the key (YAML reads yes/no/on/off as booleans and digits as numbers)")


def _load_json(text: str, file: str) -> dict[str, Any]:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    _refuse_long_integers(text, file)
    try:
        doc = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise DataError(file, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        dup = re.search(r"duplicate key ('.*')", str(exc))
        line = _line_of_key(text, json.loads(dup.group(1).replace("'", '"'))) if dup else None
        raise DataError(file, line, f"invalid JSON: {exc}", hint="remove one of the two definitions") from None
    except RecursionError:
        raise DataError(file, None, "the JSON nests too deeply to be read") from None
    if not isinstance(doc, dict):
        raise DataError(file, 1, f"expected a JSON object at the top, found {type(doc).__name__}")
    return doc


def _refuse_long_integers(text: str, file: str) -> None:
    """A number Python refuses to convert is a :class:`DataError` naming its line."""
    match = _LONG_INT.search(text)
    if match:
        raise DataError(file, text.count("\n", 0, match.start()) + 1,
                        f"a number of {len(match.group().lstrip('+-'))} digits is too long (at most {_MAX_DIGITS})",
                        hint=_TOO_LONG_HINT)


def _line_of_key(text: str, key: str) -> int | None:
    """The line of the last definition of ``key`` (a duplicate key's second occurrence)."""
    hits = [m.start() for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
    return text.count("\n", 0, hits[-1]) + 1 if hits else None


class _Lines:
    """Offset -> 1-based line number."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def at(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)


_WS = re.compile(r"[ \t\r\n]*")


class _JsonLocator:
    """The line of every key and list item of a (valid) JSON document."""

    def __init__(self, text: str, file: str) -> None:
        self.text, self.file, self.lines = text, file, _Lines(text)
        self.decoder = json.JSONDecoder()
        self.out: dict[KeyPath, tuple[str, int]] = {}

    def _skip(self, pos: int) -> int:
        match = _WS.match(self.text, pos)
        return match.end() if match else pos

    def _record(self, path: KeyPath, pos: int) -> None:
        self.out.setdefault(path, (self.file, self.lines.at(pos)))

    def value(self, pos: int, path: KeyPath, depth: int) -> int:
        """Record ``path``'s children from ``pos``; return the offset after the value."""
        if depth > _MAX_DEPTH:
            raise DataError(self.file, self.lines.at(pos), "the JSON nests too deeply to be read")
        text, char = self.text, self.text[pos]
        if char not in "{[":
            end: int = self.decoder.raw_decode(text, pos)[1]
            return end
        close, i = ("}" if char == "{" else "]"), 0
        pos = self._skip(pos + 1)
        while text[pos] != close:
            if char == "{":
                key, end = self.decoder.raw_decode(text, pos)
                child: KeyPath = (*path, str(key))
                self._record(child, pos)
                pos = self._skip(self._skip(end) + 1)  # past the ':'
            else:
                child = (*path, i)
                self._record(child, pos)
                i += 1
            pos = self._skip(self.value(pos, child, depth + 1))
            if text[pos] == ",":
                pos = self._skip(pos + 1)
        return pos + 1


def _json_locations(text: str, file: str) -> Locations:
    """The line of every key and list item of a (valid) JSON document."""
    locator = _JsonLocator(text, file)
    try:
        locator.value(locator._skip(0), (), 0)
    except (ValueError, IndexError):  # pragma: no cover - json.loads accepted it; keep what was found
        pass
    return Locations(locator.out)


_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_PART_RE = r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'"""
_TOML_PART = re.compile(_TOML_PART_RE)
_TOML_KEY = re.compile(rf"^\s*((?:{_TOML_PART_RE})(?:\s*\.\s*(?:{_TOML_PART_RE}))*)\s*=")


def _toml_key(dotted: str) -> list[str]:
    parts = []
    for part in _TOML_PART.findall(dotted):
        parts.append(json.loads(part) if part.startswith('"') else part.strip("'"))
    return parts


def _toml_locations(text: str, file: str) -> Locations:
    """The line of every table, array-of-tables entry and key of a (valid) TOML document."""
    out: dict[KeyPath, tuple[str, int]] = {}
    prefix: KeyPath = ()
    counts: dict[KeyPath, int] = {}
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:  # inside a multi-line string
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _TOML_HEADER.match(line)
        if header:
            table = tuple(_toml_key(header.group(2)))
            if header.group(1) == "[[":
                index = counts.get(table, -1) + 1
                counts[table] = index
                out.setdefault(table, (file, number))
                prefix = (*table, index)
            else:
                prefix = table
            out.setdefault(prefix, (file, number))
            continue
        key = _TOML_KEY.match(line)
        if key:
            out.setdefault((*prefix, *_toml_key(key.group(1))), (file, number))
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
    return Locations(out)


def _load_toml(text: str, file: str) -> dict[str, Any]:
    _refuse_long_integers(text, file)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise DataError(file, line, f"invalid TOML: {str(exc).split(' (at')[0]}") from None


def collect_data_files(paths: Sequence[Path]) -> list[Path]:
    """Files in the order makejinja reads them: directories expanded, sorted, dotfiles skipped."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(f for f in sorted(p.glob("**/*"))
                       if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating them (makejinja's ``dict_nested_set``)."""
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value


def load_data(paths: Sequence[Path], *, data_vars: Mapping[str, str] | None = None,
              display_root: Path | None = None) -> LoadedData:
    """Load and merge data files in order, then apply ``data_vars`` (always strings).

    Unsupported suffixes are skipped (as makejinja does). A missing file is a
    :class:`DataError` with a hint.
    """
    data: dict[str, Any] = {}
    locations = Locations()
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise DataError(_display(path, display_root), None, "data file not found",
                            hint="create it (gitops-render init copies cluster.sample.yaml) or fix the 'data' setting")
    for path in collect_data_files(paths):
        name = _display(path, display_root)
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json", ".toml"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(name, None, f"not UTF-8 text ({exc.reason})", hint="save the file as UTF-8") from None
        except OSError as exc:
            raise DataError(name, None, f"cannot be read: {exc.strerror}") from None
        files.append(path)
        if suffix in (".yaml", ".yml"):
            doc, locs = load_yaml_text(text, name)
        elif suffix == ".json":
            doc = _load_json(text, name)
            locs = _json_locations(text, name)
        else:
            doc = _load_toml(text, name)
            locs = _toml_locations(text, name)
        locations.update(locs, top_keys=list(doc))
        data |= doc
    for key, value in (data_vars or {}).items():
        set_dotted(data, key, value)
    return LoadedData(data=data, locations=locations, files=tuple(files))


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)
