"""The walk over the template inputs, with makejinja's overlay order, and the checks of the inputs."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from jinja2 import Environment, Template

from gitops_render.core.errors import ConfigError, PathEscapeError, PluginError, TemplateError
from gitops_render.render.bytecode import precompile
from gitops_render.render.diagnostics import TemplateIndex, template_error
from gitops_render.render.limits import TemplateClock, template_clock
from gitops_render.render.loaders import rooted_name
from gitops_render.render.plugins import PathFilter, failing_frame
from gitops_render.settings.config import Settings

__all__ = ["ExcludeMatcher", "RenderResult", "RenderedFile", "Walk", "check_input_symlinks", "check_inputs",
           "finish", "handle_file", "non_empty_dirs", "walk_dir"]

_DATA_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


@dataclass(frozen=True)
class RenderedFile:
    """One output: its bytes, the permission bits to give it (None = umask default),
    the input file it came from, and whether it was rendered (else copied)."""

    content: bytes
    mode: int | None
    source: Path
    template: bool


@dataclass(frozen=True)
class RenderResult:
    """Everything a render produced; paths are relative to ``settings.output``.

    ``dirs`` are the output directories that mirror input directories and are not
    empty (all of them with ``keep_empty``). With ``copy_metadata``, ``dir_modes``
    gives each of them the permission bits of its template directory (makejinja's
    ``copystat`` of rendered directories).
    """

    files: dict[PurePosixPath, RenderedFile] = field(default_factory=dict)
    skipped_empty: list[PurePosixPath] = field(default_factory=list)
    skipped_existing: list[PurePosixPath] = field(default_factory=list)
    dirs: set[PurePosixPath] = field(default_factory=set)
    plugins: list[object] = field(default_factory=list)
    dir_modes: dict[PurePosixPath, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- exclude patterns


def _match_parts(parts: Sequence[str], pats: Sequence[str]) -> bool:
    """Segment-wise fnmatch where a ``**`` segment matches any number of segments."""
    if not pats:
        return not parts
    head = pats[0]
    if head == "**":
        return any(_match_parts(parts[i:], pats[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match_parts(parts[1:], pats[1:])


@dataclass(frozen=True)
class ExcludeMatcher:
    """``Path.match`` semantics (relative patterns match from the right) plus ``**``.

    >>> m = ExcludeMatcher(("*.partial.yaml.j2", "a/**/tmp"))
    >>> m.matches(PurePosixPath("/t/x/y.partial.yaml.j2")), m.matches(PurePosixPath("/t/a/b/c/tmp"))
    (True, True)
    >>> m.matches(PurePosixPath("/t/a/b.yaml"))
    False
    """

    patterns: tuple[str, ...]

    def matches(self, path: PurePath) -> bool:
        """Whether any pattern matches ``path``."""
        return any(_pattern_matches(path.parts, pat) for pat in self.patterns)


@lru_cache(maxsize=256)
def _split_pattern(pattern: str) -> tuple[bool, tuple[str, ...]]:
    pure = PurePosixPath(pattern)
    return pure.is_absolute(), pure.parts


def _pattern_matches(parts: tuple[str, ...], pattern: str) -> bool:
    absolute, pats = _split_pattern(pattern)
    if not pats:
        return False
    if absolute:
        return _match_parts(parts, pats)
    start = 1 if parts and parts[0] == "/" else 0
    if "**" not in pats:  # plain Path.match: compare the last len(pats) parts
        if len(pats) > len(parts) - start:
            return False
        return all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts[len(parts) - len(pats):], pats, strict=True))
    return any(_match_parts(parts[k:], pats) for k in range(start, len(parts)))


# --------------------------------------------------------------------------- walk


@dataclass
class Walk:
    """Mutable state of one render (local to :func:`render_tree`)."""

    settings: Settings
    env: Environment
    path_filters: tuple[PathFilter, ...]
    index: TemplateIndex
    dir_inputs: tuple[Path, ...]
    file_inputs: tuple[Path, ...]
    excludes: ExcludeMatcher
    result: RenderResult = field(default_factory=RenderResult)
    seen: set[PurePosixPath] = field(default_factory=set)
    dir_sources: dict[PurePosixPath, Path] = field(default_factory=dict)
    excluded_dirs: dict[Path, bool] = field(default_factory=dict)
    ops: list[Any] = field(default_factory=list)  # _RenderOp, or (rel_out, RenderedFile) to copy

    def output_rel(self, relative: PurePosixPath) -> PurePosixPath:
        s = self.settings
        if relative.suffix == s.jinja_suffix and not s.keep_jinja_suffix:
            return relative.with_suffix("")
        return relative

    def is_excluded(self, path: Path, root: Path) -> bool:
        """Excluded itself or below an excluded directory (memoized per directory)."""
        parent = path.parent
        if parent != root and root in parent.parents and self._dir_excluded(parent, root):
            return True
        return self._self_excluded(path)

    def _self_excluded(self, path: Path) -> bool:
        return self.excludes.matches(path) or any(not self._keeps(f, path) for f in self.path_filters)

    def _keeps(self, path_filter: PathFilter, path: Path) -> bool:
        try:
            return bool(path_filter(path))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the plugin's code: one message, whatever it raised
            where = failing_frame(exc, self.settings.import_paths)
            raise PluginError(f"plugin path filter {getattr(path_filter, '__qualname__', path_filter)!s} failed "
                              f"on {self.index.display(str(path))}: {type(exc).__name__}: {exc}"
                              + (f" (at {where})" if where else "")) from None

    def _dir_excluded(self, path: Path, root: Path) -> bool:
        known = self.excluded_dirs.get(path)
        if known is None:
            parent = path.parent
            known = (parent != root and root in parent.parents and self._dir_excluded(parent, root)) \
                or self._self_excluded(path)
            self.excluded_dirs[path] = known
        return known


def _resolved_source(walk: Walk, name: str) -> Path | None:
    """The file the ChoiceLoader would load for ``name`` (makejinja's lookup)."""
    for f in walk.file_inputs:
        if f.name == name:
            return f
    for root in walk.dir_inputs:
        cand = root / name
        if cand.is_file():
            return cand
    return None


def _file_data(settings: Settings, name: str) -> dict[str, Any]:
    """Data for one template only (``file_data``): missing/unsupported files skipped, as makejinja."""
    paths = [p for p in settings.file_data.get(name, ()) if p.exists() and p.suffix in _DATA_SUFFIXES]
    if not paths:
        return {}
    from gitops_render.core.load import (
        load_data,  # local: load.py is owned by another stage
    )

    return load_data(paths).data


def _render_template(walk: Walk, clock: TemplateClock, name: str, data_name: str, display: str) -> str:
    """Render one template within its time limit; any failure (a plugin's ``SystemExit`` included,
    not the operator's Ctrl-C) becomes a located :class:`TemplateError`."""
    try:
        template: Template = walk.env.get_template(name)
        data = _file_data(walk.settings, data_name)
        clock.arm()
        try:
            return template.render(data)
        finally:
            clock.disarm()
    except (TemplateError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # a template or plugin failing in any way is the operator's input
        raise template_error(exc, display, walk.index, walk.settings, walk.env.globals) from None


@dataclass(frozen=True)
class _RenderOp:
    """A template to render once the walk is complete (outputs keep walk order)."""

    rel_out: PurePosixPath
    source: Path
    name: str
    data_name: str


def handle_file(walk: Walk, source: Path, name: str, rel_out: PurePosixPath, *, enforce_suffix: bool,
                 data_name: str | None = None) -> None:
    s = walk.settings
    res = walk.result
    walk.seen.add(rel_out)
    if not s.force and (s.output / rel_out).exists():
        res.skipped_existing.append(rel_out)
        return
    is_template = not enforce_suffix or source.suffix == s.jinja_suffix
    if not is_template:
        st = source.stat()
        walk.ops.append((rel_out, RenderedFile(source.read_bytes(), stat.S_IMODE(st.st_mode), source, False)))
        return
    walk.ops.append(_RenderOp(rel_out, source, name, data_name or name))


def finish(walk: Walk) -> None:
    """Compile what the walk found (in parallel when it pays), then render in walk order."""
    s = walk.settings
    res = walk.result
    precompile(walk.env, (op.name for op in walk.ops if isinstance(op, _RenderOp)), s.runtime.jobs)
    with template_clock(s.template_timeout) as clock:
        for op in walk.ops:
            if not isinstance(op, _RenderOp):
                res.files[op[0]] = op[1]
                continue
            text = _render_template(walk, clock, op.name, op.data_name, walk.index.display(str(op.source)))
            if text.strip() == "" and not s.keep_empty:
                res.skipped_empty.append(op.rel_out)
                continue
            mode = stat.S_IMODE(op.source.stat().st_mode) if s.copy_metadata else None
            res.files[op.rel_out] = RenderedFile(text.encode("utf-8"), mode, op.source, True)


def walk_dir(walk: Walk, root_index: int, root: Path) -> None:
    s = walk.settings
    enforce = bool(s.jinja_suffix)
    for pattern in s.include_patterns:
        for path in sorted(root.glob(pattern)):
            relative = PurePosixPath(path.relative_to(root).as_posix())
            rel_out = walk.output_rel(relative)
            if walk.is_excluded(path, root):
                if path.is_dir():
                    walk.excluded_dirs[path] = True
                continue
            if path.is_file() and rel_out not in walk.seen:
                data_name = name = relative.as_posix()
                if _resolved_source(walk, name) != path:
                    name = rooted_name(root_index, name)
                handle_file(walk, path, name, rel_out, enforce_suffix=enforce, data_name=data_name)
            elif path.is_dir() and rel_out not in walk.dir_sources:
                walk.dir_sources[rel_out] = path


def non_empty_dirs(walk: Walk) -> set[PurePosixPath]:
    if walk.settings.keep_empty:
        return set(walk.dir_sources)
    occupied: set[PurePosixPath] = set()
    for rel in (*walk.result.files, *walk.result.skipped_existing):
        occupied.update(rel.parents)
    return {d for d in walk.dir_sources if d in occupied}


def check_inputs(settings: Settings) -> None:
    for p in settings.inputs:
        if str(p) == "/dev/stdin" or p == Path("/dev/stdin").resolve():
            raise ConfigError("inputs: reading a template from /dev/stdin is not supported")
        if not p.exists():
            raise ConfigError(f"inputs: {p} does not exist", hint="fix 'inputs' in the settings")
    out = settings.output
    single_file = (len(settings.inputs) <= 1 and not any(p.is_dir() for p in settings.inputs)
                   and (out.suffix != "" or out.is_file()) and not out.is_dir())
    if single_file or out.is_file():
        raise ConfigError(f"output: {out} is a file; gitops-render renders into a directory",
                          hint="set output to a directory")


def check_input_symlinks(inputs: Iterable[Path]) -> None:
    """Refuse a symlink inside a template input directory that resolves outside every input directory.

    Rendering follows symlinks (the walk copies a linked file, Jinja's loader reads a linked
    template), so a link to ``/etc/passwd``, ``~/.ssh`` or the repository's ``age.key`` would put
    that file's content into the committed output. Links between input directories are fine.
    """
    dirs = [Path(p) for p in inputs if Path(p).is_dir()]
    roots = [d.resolve() for d in dirs]
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            for name in (*dirnames, *filenames):
                path = Path(dirpath) / name
                if not path.is_symlink():
                    continue
                try:
                    real = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise PathEscapeError(f"template input {path} is a broken or looping symlink",
                                          hint=f"remove {path} or point it at a file inside the template tree",
                    ) from None
                if not any(real == r or real.is_relative_to(r) for r in roots):
                    raise PathEscapeError(
                        f"template input {path} is a symlink to {real}, outside the template inputs; "
                        f"gitops-render will not copy or render it (nothing was written)",
                        hint=f"replace {path} with a real file, or point it inside {top}")
