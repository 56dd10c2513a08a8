"""Template loaders: makejinja's lookup by name, plus one loader confined to one input.

Every name a template can ask for (``include``, ``import``, ``extends``, or the
walk's own internal names) goes through :func:`confined_path`: it refuses ``..``,
empty and absolute segments, NUL bytes and anything whose real path leaves the
input directory, so no loader ever reads a file outside the template inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jinja2
from jinja2 import BaseLoader, Environment
from jinja2.loaders import split_template_path

__all__ = [
    "ROOTED", "ConfinedFileSystemLoader", "FileInputLoader", "RootedLoader", "confined_path", "rooted_name",
    "split_rooted",
]

#: prefix of the walk's internal template names: ``<ROOTED><input index>/<relpath>``
ROOTED = "\x00rooted\x00"


def rooted_name(index: int, rel: str) -> str:
    """The internal name that loads ``rel`` from dir input number ``index`` only."""
    return f"{ROOTED}{index}/{rel}"


def split_rooted(name: str) -> tuple[int, str] | None:
    """``(index, relpath)`` of an internal name, None for any other name (or a malformed one)."""
    if not name.startswith(ROOTED):
        return None
    index, sep, rel = name[len(ROOTED):].partition("/")
    if not sep or not index.isascii() or not index.isdigit():
        return None
    return int(index), rel


def confined_path(root: Path, name: str, memo: dict[str, str] | None = None) -> Path | None:
    """``root/name`` when ``name`` is a template path (Jinja's rules: ``/``-separated, no ``..``)
    whose real path stays inside ``root``; None otherwise (also for a NUL byte).

    ``memo`` (one per loader, so per run) keeps the real paths of directories already resolved:
    a template's real path then costs one ``lstat`` of its own name, not one per path segment.

    >>> confined_path(Path("/t"), "../age.key") is None, confined_path(Path("/t"), "a/\\x00b") is None
    (True, True)
    >>> confined_path(Path("/t"), "./a//b.j2")
    PosixPath('/t/a/b.j2')
    """
    if "\x00" in name:
        return None
    try:
        pieces = split_template_path(name)
    except jinja2.TemplateNotFound:
        return None
    path = root.joinpath(*pieces)
    base = _realpath(str(root), memo)
    if os.path.commonpath([_real_file(path, memo), base]) != base:
        return None
    return path


def _realpath(directory: str, memo: dict[str, str] | None) -> str:
    if memo is None:
        return os.path.realpath(directory)
    real = memo.get(directory)
    if real is None:
        real = memo[directory] = os.path.realpath(directory)
    return real


def _real_file(path: Path, memo: dict[str, str] | None) -> str:
    """``os.path.realpath(path)``, the parent's real path taken from ``memo``."""
    if memo is None or not path.name:
        return os.path.realpath(path)
    candidate = os.path.join(_realpath(str(path.parent), memo), path.name)
    return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def _read(path: Path, name: str) -> tuple[str, str, Callable[[], bool]]:
    try:
        return path.read_text(encoding="utf-8"), str(path), lambda: True
    except (OSError, UnicodeDecodeError):
        raise jinja2.TemplateNotFound(name) from None


class FileInputLoader(BaseLoader):
    """Templates given as single files, by bare file name (makejinja's ``DictLoader``).

    Unlike a ``DictLoader`` it reports the file name, so errors and the bytecode
    cache know where a template lives. The first file input with a name wins.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self.files: dict[str, Path] = {}
        for f in files:
            self.files.setdefault(f.name, f)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:  # noqa: ARG002
        path = self.files.get(template)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        return _read(path, template)

    def list_templates(self) -> list[str]:
        return sorted(self.files)


class RootedLoader(BaseLoader):
    """Loads ``<ROOTED><index>/<relpath>`` from one specific input directory, confined to it."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = list(roots)
        self._real_dirs: dict[str, str] = {}

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:  # noqa: ARG002
        parsed = split_rooted(template)
        if parsed is None or parsed[0] >= len(self.roots):
            raise jinja2.TemplateNotFound(template)
        path = confined_path(self.roots[parsed[0]], parsed[1], self._real_dirs)
        if path is None or not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return _read(path, template)


class ConfinedFileSystemLoader(jinja2.FileSystemLoader):
    """Jinja's ``FileSystemLoader`` (makejinja's lookup: first input directory that has the name),
    refusing a name whose real path leaves that input directory."""

    def __init__(self, searchpath: Sequence[Path]) -> None:
        super().__init__(searchpath)
        self._real_dirs: dict[str, str] = {}

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:  # noqa: ARG002
        for searchpath in self.searchpath:
            path = confined_path(Path(searchpath), template, self._real_dirs)
            if path is not None and path.is_file():
                return _read(path, template)
        raise jinja2.TemplateNotFound(template)
