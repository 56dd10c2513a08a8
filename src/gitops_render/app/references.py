"""Files a render reads besides the templates: which must exist before ``configure`` (for ``doctor``).

Found without rendering (fast, and it works while the data is still incomplete):

* the settings: ``inputs``, ``import_paths``, ``file_data``, ``schema`` files and the
  plugin modules found in ``import_paths``;
* the data: a string value of a key named ``*file`` (``key_file``, ``tunnelFile`` …);
* the templates and plugins: a quoted relative file name (``'deploy.key'``) in a Jinja
  expression of a template, or a string literal of a plugin module, that the repository's
  ``.gitignore`` keeps out of git: a file each machine makes for itself (a key, a token), so a
  fresh clone lacks it. Literals git tracks are left alone (they are outputs, examples, tests).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from gitops_render.core.errors import GitopsRenderError
from gitops_render.core.load import load_data
from gitops_render.settings import Settings

__all__ = ["Reference", "gitignored", "referenced_files"]

_FILE_NAME = re.compile(r"[\w.-]+(?:/[\w.-]+)*\.[A-Za-z0-9]{1,10}")
_QUOTED = re.compile(r"""(?<![\w\\])(["'])([^"'\s{}]+)\1""")
_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Reference:
    """A file something reads, and who reads it."""

    path: Path
    where: str  # "template/scripts/plugin.py:78", "cluster.toml: ssh.key_file", "settings: inputs"
    local: bool = False  # the repository's .gitignore keeps it out of git

    @property
    def fix(self) -> str:
        if self.local:
            return ("create it: .gitignore keeps it out of git, so every machine needs its own copy (copy it from "
                    "the machine that has it, or make it as the repository's README or init task says)")
        return f"restore it, or fix {self.where}"


def gitignored(root: Path, rel: PurePosixPath) -> bool:
    """Whether the root ``.gitignore`` ignores ``rel`` (its usual patterns; the last matching line wins)."""
    try:
        lines = (root / ".gitignore").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    ignored = False
    parents = [PurePosixPath(*rel.parts[:i]).as_posix() for i in range(1, len(rel.parts))]
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        candidates = parents if dir_only else [*parents, rel.as_posix()]
        hit = any(fnmatch(c, pattern) if anchored else fnmatch(PurePosixPath(c).name, pattern) for c in candidates)
        if hit:
            ignored = not negate
    return ignored


def _python_literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, value) of every plain string literal of a Python file (any Python version's syntax)."""
    try:
        source = path.read_text(encoding="utf-8")
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, UnicodeDecodeError, tokenize.TokenError, SyntaxError):
        return
    for tok in tokens:
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str):
                yield tok.start[0], value


def _template_literals(path: Path, delimiters: Iterable[tuple[str, str]]) -> Iterator[tuple[int, str]]:
    """(line, value) of every quoted string inside the Jinja expressions and statements of a template."""
    try:
        if path.stat().st_size > _MAX_BYTES:
            return
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    for start, end in delimiters:
        for block in re.finditer(re.escape(start) + r"(.*?)" + re.escape(end), text, re.DOTALL):
            for m in _QUOTED.finditer(block.group(1)):
                yield text.count("\n", 0, block.start(1) + m.start()) + 1, m.group(2)


def _files_in(folder: Path, suffix: str) -> Iterator[Path]:
    if folder.is_file():
        if folder.name.endswith(suffix):
            yield folder
        return
    if folder.is_dir():
        yield from (p for p in sorted(folder.rglob(f"*{suffix}")) if p.is_file() and "__pycache__" not in p.parts)


def _rel(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _local_literals(settings: Settings) -> Iterator[Reference]:
    """Relative file names the templates and plugins name that .gitignore keeps out of git."""
    root = Path(settings.root)
    d = settings.delimiter
    sources: list[tuple[Path, Iterator[tuple[int, str]]]] = []
    for folder in settings.import_paths:
        sources += [(p, _python_literals(p)) for p in _files_in(Path(folder), ".py") if not p.name.startswith("test")]
    if settings.jinja_suffix:
        delimiters = ((d.variable_start, d.variable_end), (d.block_start, d.block_end))
        for folder in settings.inputs:
            sources += [(p, _template_literals(p, delimiters)) for p in _files_in(Path(folder), settings.jinja_suffix)]
    for path, literals in sources:
        for line, value in literals:
            if _FILE_NAME.fullmatch(value) and not value.startswith(("/", "../")) and ".." not in value.split("/"):
                rel = PurePosixPath(value.removeprefix("./"))
                if gitignored(root, rel):
                    yield Reference(root / rel, f"{_rel(root, path)}:{line}", local=True)


def _data_file_values(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every string under a key named ``*file``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(value, str) and str(key).lower().endswith("file") and value.strip() and "://" not in value:
                yield here, value
            else:
                yield from _data_file_values(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _data_file_values(item, f"{where}[{i}]")


def _data_references(settings: Settings) -> Iterator[Reference]:
    root = Path(settings.root)
    for data_file in settings.data:
        if not Path(data_file).is_file():
            continue  # doctor names a missing data file itself
        try:
            data = load_data([Path(data_file)], display_root=root).data
        except GitopsRenderError:
            continue  # so does configure, with its line
        for key, value in _data_file_values(data, ""):
            path = Path(value).expanduser()
            yield Reference(path if path.is_absolute() else root / path, f"{_rel(root, Path(data_file))}: {key}")


def _settings_references(settings: Settings) -> Iterator[Reference]:
    where = f"{settings.config_file.name if settings.config_file else 'settings'}"
    for path in settings.inputs:
        yield Reference(Path(path), f"{where}: inputs")
    for path in settings.import_paths:
        yield Reference(Path(path), f"{where}: import_paths")
    for template, paths in settings.file_data.items():
        yield from (Reference(Path(p), f"{where}: file_data of {template}") for p in paths)
    for schema in settings.schema_files:
        yield Reference(Path(schema), f"{where}: schema")


def referenced_files(settings: Settings, *, exclude: Iterable[Path] = ()) -> list[Reference]:
    """Every file the settings, data, templates and plugins read (``exclude``: files checked elsewhere)."""
    skip = {Path(p).resolve() for p in exclude}
    seen: dict[Path, Reference] = {}
    for ref in [*_settings_references(settings), *_data_references(settings), *_local_literals(settings)]:
        key = ref.path.resolve()
        if key not in skip:
            seen.setdefault(key, ref)
    return list(seen.values())
