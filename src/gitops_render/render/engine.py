"""Render the template tree in memory, with makejinja 2.8.1's semantics.

:func:`render_tree` walks the inputs exactly as makejinja does and returns every
output as bytes (:class:`RenderResult`); nothing is written to the output tree
(``write.py`` does that, atomically, and also prunes stale outputs, which replaces
makejinja's ``clean``).

Matched makejinja behaviour:

* ``ChoiceLoader(file inputs by name, FileSystemLoader(dir inputs))``, so
  ``include``/``import`` find a name in any input, first input first;
* globals = data, then ``env`` = ``os.environ``, then the plugins (see :mod:`.plugins`);
* ordered overlay: for each input in order, ``sorted(root.glob(p))`` per include
  pattern; the first input that produces an output path wins;
* ``jinja_suffix`` is compared with the last suffix only and stripped unless
  ``keep_jinja_suffix``; file inputs are always templates;
* a template rendering to whitespace only is skipped unless ``keep_empty``;
* non-template files are copied verbatim with their permission bits (makejinja uses
  ``copy2``); rendered files get the template's bits only with ``copy_metadata``;
* with ``force = false`` an output that already exists on disk is neither rendered
  nor changed (recorded in ``skipped_existing``).

Differences, on purpose:

* ``exclude_patterns`` honour ``**`` (any number of path segments; makejinja warns
  and treats it as ``*``), and an excluded *directory* excludes everything below it
  (makejinja excludes only the directory entry, then crashes writing its files).
  The same holds for a directory rejected by a plugin path filter. Patterns match
  like ``Path.match`` against the full input path, from the right.
* A file is rendered from the input it was found in. (makejinja fetches it by name
  through the loader, so when input 1's copy is excluded, input 2's output gets
  input 1's content.)
* Template errors are a :class:`~gitops_render.errors.TemplateError` naming the
  template file and line (and the undefined variable) instead of a traceback.
* Templates are compiled once per run (unbounded ``cache_size``) and, with
  ``cache_dir``, cached as bytecode across runs. The cache key includes everything
  that changes compilation (delimiters, whitespace, extensions ...); Jinja's source
  checksum invalidates it when a template changes.
* A single output *file* (makejinja's one-input/one-output-file mode) and
  ``/dev/stdin`` are not supported; output is always a directory.
"""

from __future__ import annotations

import copy
import fnmatch
import gc
import hashlib
import inspect
import marshal
import os
import stat
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePath, PurePosixPath
from types import CodeType
from typing import Any

import jinja2
from jinja2 import (
    BaseLoader,
    BytecodeCache,
    ChainableUndefined,
    ChoiceLoader,
    DebugUndefined,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    Undefined,
)
from jinja2.bccache import Bucket

from gitops_render.core.errors import ConfigError, PathEscapeError, TemplateError
from gitops_render.core.fsio import write_cache_bytes
from gitops_render.render.plugins import (
    LoadedPlugins,
    PathFilter,
    failing_frame,
    load_plugins,
    plugin_import_paths,
)
from gitops_render.settings.config import Settings

__all__ = [
    "UNDEFINED_CLASSES",
    "ExcludeMatcher",
    "RenderResult",
    "RenderedFile",
    "build_environment",
    "check_input_symlinks",
    "render_tree",
]

UNDEFINED_CLASSES: Mapping[str, type[Undefined]] = {
    "default": Undefined,
    "chainable": ChainableUndefined,
    "debug": DebugUndefined,
    "strict": StrictUndefined,
}
_DATA_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
_ROOTED = "\x00rooted\x00"  # prefix of internal template names: "<prefix><input index>/<relpath>"


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
        return all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts[len(parts) - len(pats):], pats))
    return any(_match_parts(parts[k:], pats) for k in range(start, len(parts)))


# --------------------------------------------------------------------------- loaders and cache


class _FileInputLoader(BaseLoader):
    """Templates given as single files, by bare file name (makejinja's ``DictLoader``).

    Unlike a ``DictLoader`` it reports the file name, so errors and the bytecode
    cache know where a template lives. The first file input with a name wins.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self.files: dict[str, Path] = {}
        for f in files:
            self.files.setdefault(f.name, f)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        path = self.files.get(template)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), str(path), lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.files)


class _RootedLoader(BaseLoader):
    """Loads ``<_ROOTED><index>/<relpath>`` from one specific input directory."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = list(roots)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if not template.startswith(_ROOTED):
            raise jinja2.TemplateNotFound(template)
        index, _, rel = template[len(_ROOTED):].partition("/")
        path = self.roots[int(index)] / rel
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), str(path), lambda: True


def _module_digest(obj: Any) -> str:
    try:
        src = inspect.getsourcefile(obj)
    except TypeError:
        src = None
    if not src:
        return ""
    try:
        return hashlib.sha256(Path(src).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _compile_fingerprint(env: Environment) -> str:
    """Everything besides the source that changes the compiled code of a template."""
    parts = [
        env.block_start_string, env.block_end_string, env.variable_start_string, env.variable_end_string,
        env.comment_start_string, env.comment_end_string, repr(env.line_statement_prefix),
        repr(env.line_comment_prefix), repr(env.trim_blocks), repr(env.lstrip_blocks),
        repr(env.newline_sequence), repr(env.keep_trailing_newline), repr(env.optimized),
        repr(env.autoescape), repr(env.is_async), repr(env.policies.get("compiler.ascii_str")),
        jinja2.__version__, sys.version,
    ]
    for ext in sorted(env.extensions.values(), key=lambda e: (e.priority, e.identifier)):
        parts.append(f"{ext.identifier}@{_module_digest(type(ext))}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


class _FingerprintedBytecodeCache(BytecodeCache):
    """A bytecode cache keyed by the environment's compile settings, kept in one pack file.

    Jinja keys bytecode by template name and file name and checks the source
    checksum; it does not notice a changed delimiter or extension, so the
    environment's fingerprint is mixed into the key.

    ``directory`` None keeps compiled code in memory only (for the run). Otherwise
    every compiled template lives in ``directory/PACK`` (one marshal file: loading
    1 000 templates is one read instead of 1 000 opens), read on first use and
    rewritten by :meth:`flush` only when the run compiled something or stopped using
    an entry; the source checksum still invalidates an entry. Code compiled by
    worker processes is handed in with :meth:`remember`.
    """

    PACK = "templates.pack"
    _FORMAT = 1

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.persistent = directory is not None
        self._fingerprints: dict[int, str] = {}
        self._memory: dict[str, tuple[str, CodeType]] = {}
        self._pack: dict[str, tuple[str, CodeType]] | None = None
        self._dirty = False

    def key_for(self, environment: Environment, name: str, filename: str | None) -> str:
        fp = self._fingerprints.get(id(environment))
        if fp is None:
            fp = self._fingerprints[id(environment)] = _compile_fingerprint(environment)
        return hashlib.sha1(f"{fp}\x1f{name}\x1f{filename}".encode()).hexdigest()

    def _load_pack(self) -> dict[str, tuple[str, CodeType]]:
        if self._pack is None:
            self._pack = {}
            if self.directory is not None:
                try:
                    raw = (self.directory / self.PACK).read_bytes()
                    doc = marshal.loads(raw)
                    if isinstance(doc, tuple) and doc[0] == (self._FORMAT, sys.version_info[:2]):
                        self._pack = doc[1]
                except (OSError, EOFError, ValueError, TypeError, IndexError):
                    self._pack = {}  # missing or unreadable: compile again
        return self._pack

    def get_bucket(self, environment: Environment, name: str, filename: str | None, source: str) -> Bucket:
        checksum = self.get_source_checksum(source)
        bucket = Bucket(environment, self.key_for(environment, name, filename), checksum)
        held = self._memory.get(bucket.key)
        if held is None and self.persistent:
            held = self._load_pack().get(bucket.key)
        if held is not None and held[0] == checksum:
            bucket.code = held[1]
            self._memory[bucket.key] = held
        return bucket

    def set_bucket(self, bucket: Bucket) -> None:
        if bucket.code is not None:
            self.remember(bucket.key, bucket.checksum, bucket.code)

    def remember(self, key: str, checksum: str, code: CodeType) -> None:
        """Code compiled here or elsewhere (a worker process) for the bucket ``key``."""
        self._memory[key] = (checksum, code)
        self._dirty = True

    def load_bytecode(self, bucket: Bucket) -> None:  # the abstract API; get_bucket does the work
        pass

    def dump_bytecode(self, bucket: Bucket) -> None:
        pass

    def flush(self) -> None:
        """Write the pack (atomically, 0600; best effort) when this run changed what it holds."""
        if self.directory is None:
            return
        if not self._dirty and set(self._memory) == set(self._load_pack()):
            return
        write_cache_bytes(self.directory / self.PACK,
                          marshal.dumps(((self._FORMAT, sys.version_info[:2]), dict(self._memory))))


# --------------------------------------------------------------------------- parallel compilation

#: below this many templates to compile, compiling in this process is cheaper than starting workers
PARALLEL_THRESHOLD = 48
JOBS_ENV = "GITOPS_RENDER_JOBS"
_worker_env: Environment | None = None  # set only inside compile worker processes


def _compile_jobs(todo: int) -> int:
    """How many compile processes to use for ``todo`` templates (1 = compile here)."""
    raw = os.environ.get(JOBS_ENV, "").strip()
    if raw:
        try:
            jobs = int(raw)
        except ValueError:
            raise ConfigError(f"{JOBS_ENV}={raw!r} is not a number of processes") from None
    else:
        try:
            jobs = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            jobs = os.cpu_count() or 1
        jobs = min(jobs, 8)
        if todo < PARALLEL_THRESHOLD:
            return 1
    if jobs <= 1:
        return 1
    import multiprocessing  # only a compile that pays for workers loads it

    # fork only from a single-threaded process: a lock held by another thread would be
    # inherited locked by the workers
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    return max(1, min(jobs, todo // 16 or 1))


def _worker_init(env: Environment) -> None:
    global _worker_env
    _worker_env = env
    # Compiling allocates many short-lived objects: keep the inherited heap out of the
    # collector (no copy-on-write of the parent's pages) and collect less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _compile_chunk(names: Sequence[str]) -> list[tuple[str, str, bytes]]:
    """In a worker: compile ``names`` (writing the disk cache) and return their code.

    A template that fails to compile is left out; the parent compiles it again
    and reports the error exactly as a serial run would.
    """
    env = _worker_env
    assert env is not None and env.loader is not None
    bcc = env.bytecode_cache
    assert isinstance(bcc, _FingerprintedBytecodeCache)
    out: list[tuple[str, str, bytes]] = []
    for name in names:
        try:
            source, filename, _ = env.loader.get_source(env, name)
            bucket = bcc.get_bucket(env, name, filename, source)
            if bucket.code is None:
                bucket.code = env.compile(source, name, filename)  # type: ignore[assignment]
                bcc.set_bucket(bucket)
            out.append((bucket.key, bucket.checksum, marshal.dumps(bucket.code)))
        except Exception:
            continue
    return out


def _precompile(env: Environment, names: Iterable[str]) -> None:
    """Compile the templates ``names`` whose code is not cached, in parallel when that pays.

    Only compilation happens in the workers (forked, so plugins, filters and data
    need not be picklable); rendering stays in this process, in walk order, so
    results, plugin side effects and error messages are those of a serial run.
    """
    bcc = env.bytecode_cache
    loader = env.loader
    if not isinstance(bcc, _FingerprintedBytecodeCache) or loader is None:
        return
    todo: list[str] = []
    for name in dict.fromkeys(names):
        try:
            source, filename, uptodate = loader.get_source(env, name)
        except Exception:
            continue
        code = bcc.get_bucket(env, name, filename, source).code
        if code is None:
            todo.append(name)
        elif env.cache is not None:
            # what Environment.get_template would build from the cached code; keeping it saves
            # the render a second read of the source (same key as Environment._load_template)
            env.cache[(weakref.ref(loader), name)] = env.template_class.from_code(
                env, code, env.make_globals(None), uptodate)
    jobs = _compile_jobs(len(todo))
    if jobs <= 1:
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    chunks = [todo[i::jobs * 4] for i in range(jobs * 4)]
    ctx = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(env,)) as pool:
            for part in pool.map(_compile_chunk, [c for c in chunks if c]):
                for key, checksum, blob in part:
                    bcc.remember(key, checksum, marshal.loads(blob))
    except (OSError, BrokenProcessPool):
        pass  # no workers (resource limits, a killed worker): the render compiles what is missing


# --------------------------------------------------------------------------- environment


def _undefined_class(mode: str) -> type[Undefined]:
    try:
        return UNDEFINED_CLASSES[mode]
    except KeyError:
        raise ConfigError(f"undefined: unknown mode {mode!r}",
                          hint=f"use one of {', '.join(UNDEFINED_CLASSES)}") from None


def build_environment(settings: Settings, data: Mapping[str, Any], *,
                      cache_dir: Path | None = None) -> Environment:
    """The Jinja environment makejinja builds (``init_jinja_env``), without plugins.

    Globals are ``data`` then ``env`` (``os.environ``). ``cache_dir`` attaches a
    bytecode cache (attach it after plugins added extensions; :func:`render_tree`
    does). Templates stay cached for the environment's lifetime.
    """
    file_inputs = [p for p in settings.inputs if p.is_file()]
    dir_inputs = [p for p in settings.inputs if p.is_dir()]
    cache_size = settings.internal.cache_size if settings.internal.cache_size > 0 else -1
    try:
        env = Environment(
            loader=ChoiceLoader([_RootedLoader(dir_inputs), _FileInputLoader(file_inputs),
                                 FileSystemLoader(dir_inputs)]),
            extensions=list(settings.extensions),
            block_start_string=settings.delimiter.block_start,
            block_end_string=settings.delimiter.block_end,
            variable_start_string=settings.delimiter.variable_start,
            variable_end_string=settings.delimiter.variable_end,
            comment_start_string=settings.delimiter.comment_start,
            comment_end_string=settings.delimiter.comment_end,
            line_statement_prefix=settings.prefix.line_statement,
            line_comment_prefix=settings.prefix.line_comment,
            trim_blocks=settings.whitespace.trim_blocks,
            lstrip_blocks=settings.whitespace.lstrip_blocks,
            newline_sequence=settings.whitespace.newline_sequence,  # type: ignore[arg-type]
            keep_trailing_newline=settings.whitespace.keep_trailing_newline,
            optimized=settings.internal.optimized,
            undefined=_undefined_class(settings.undefined),
            finalize=None,
            autoescape=settings.internal.autoescape,
            cache_size=cache_size,
            auto_reload=settings.internal.auto_reload,
            bytecode_cache=_FingerprintedBytecodeCache(cache_dir) if cache_dir is not None else None,
            enable_async=settings.internal.enable_async,
        )
    except ImportError as exc:
        raise ConfigError(f"extensions: cannot import {exc.name or exc}",
                          hint="check the 'extensions' setting (e.g. jinja2.ext.do)") from None
    except (AttributeError, ValueError, TypeError, AssertionError) as exc:
        raise ConfigError(f"invalid Jinja environment settings: {exc}",
                          hint="check the delimiter, prefix and extensions settings") from None
    env.globals.update(data)
    env.globals["env"] = os.environ
    return env


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class _TemplateIndex:
    """Maps template file names to operator-friendly display paths."""

    root: Path
    inputs: tuple[Path, ...]

    def display(self, filename: str | None, name: str | None = None) -> str:
        if filename:
            path = Path(filename)
            for base in (self.root, *self.inputs):
                try:
                    return path.relative_to(base).as_posix()
                except ValueError:
                    continue
            return filename
        if name and name.startswith(_ROOTED):
            return name[len(_ROOTED):].partition("/")[2]
        return name or "<template>"

    def is_template_file(self, filename: str) -> bool:
        path = Path(filename)
        return any(path == base or base in path.parents for base in self.inputs)


def _source_line(filename: str | None, line: int | None) -> str:
    if not filename or not line:
        return ""
    try:
        lines = Path(filename).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    if 0 < line <= len(lines):
        return f"\n    {line} | {lines[line - 1].strip()}"
    return ""


def _undefined_hint(message: str, known: Iterable[str]) -> str:
    """Did-you-mean for an undefined name, else where names come from.

    >>> _undefined_hint("'litellm_replicass' is undefined", ["litellm_replicas", "x"])
    "did you mean 'litellm_replicas'? (names come from the data file, schema defaults and plugins)"
    """
    import difflib

    name = message.split("'")[1] if message.count("'") >= 2 else ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75) if name else []
    if close:
        return f"did you mean {close[0]!r}? (names come from the data file, schema defaults and plugins)"
    return "add it to the data file (and the schema, with its default), or fix the name in the template"


def _template_error(exc: BaseException, top: str, index: _TemplateIndex,
                    settings: Settings, known: Iterable[str] = ()) -> TemplateError:
    """Turn any exception raised while compiling/rendering into a located TemplateError."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = index.display(exc.filename, exc.name)
        hint = None if where == top else f"while rendering {top}"
        return TemplateError(where, exc.lineno, f"syntax error: {exc.message}"
                             + _source_line(exc.filename, exc.lineno), hint=hint)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if index.is_template_file(f.filename)]
    frame = frames[-1] if frames else None
    where = index.display(frame.filename) if frame else top
    line = frame.lineno if frame else None
    snippet = _source_line(frame.filename, line) if frame else ""
    hint = None if where == top else f"while rendering {top}"
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateError(where, line, f"undefined: {exc.message}{snippet}",
                             hint=hint or _undefined_hint(exc.message or "", known))
    if isinstance(exc, jinja2.TemplateNotFound):
        return TemplateError(where, line, f"template not found: {exc.name}{snippet}",
                             hint=hint or "include/import names are relative to an input directory")
    text = str(exc)
    kind = type(exc).__name__
    msg = f"{kind}: {text}" if text else kind
    if not isinstance(exc, jinja2.TemplateError):
        origin = failing_frame(exc, settings.import_paths)
        if origin and not (frame and origin == f"{frame.filename}:{frame.lineno}"):
            msg += f" (raised at {origin})"
    return TemplateError(where, line, msg + snippet, hint=hint)


# --------------------------------------------------------------------------- walk


@dataclass
class _Walk:
    """Mutable state of one render (local to :func:`render_tree`)."""

    settings: Settings
    env: Environment
    path_filters: tuple[PathFilter, ...]
    index: _TemplateIndex
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
        return self.excludes.matches(path) or any(not f(path) for f in self.path_filters)

    def _dir_excluded(self, path: Path, root: Path) -> bool:
        known = self.excluded_dirs.get(path)
        if known is None:
            parent = path.parent
            known = (parent != root and root in parent.parents and self._dir_excluded(parent, root)) \
                or self._self_excluded(path)
            self.excluded_dirs[path] = known
        return known


def _resolved_source(walk: _Walk, name: str) -> Path | None:
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


def _render_template(walk: _Walk, name: str, data_name: str, display: str) -> str:
    try:
        template: Template = walk.env.get_template(name)
        return template.render(_file_data(walk.settings, data_name))
    except TemplateError:
        raise
    except Exception as exc:
        raise _template_error(exc, display, walk.index, walk.settings, walk.env.globals) from None


@dataclass(frozen=True)
class _RenderOp:
    """A template to render once the walk is complete (outputs keep walk order)."""

    rel_out: PurePosixPath
    source: Path
    name: str
    data_name: str


def _handle_file(walk: _Walk, source: Path, name: str, rel_out: PurePosixPath, *, enforce_suffix: bool,
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


def _finish(walk: _Walk) -> None:
    """Compile what the walk found (in parallel when it pays), then render in walk order."""
    s = walk.settings
    res = walk.result
    _precompile(walk.env, (op.name for op in walk.ops if isinstance(op, _RenderOp)))
    for op in walk.ops:
        if not isinstance(op, _RenderOp):
            res.files[op[0]] = op[1]
            continue
        text = _render_template(walk, op.name, op.data_name, walk.index.display(str(op.source)))
        if text.strip() == "" and not s.keep_empty:
            res.skipped_empty.append(op.rel_out)
            continue
        mode = stat.S_IMODE(op.source.stat().st_mode) if s.copy_metadata else None
        res.files[op.rel_out] = RenderedFile(text.encode("utf-8"), mode, op.source, True)


def _walk_dir(walk: _Walk, root_index: int, root: Path) -> None:
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
                    name = f"{_ROOTED}{root_index}/{name}"
                _handle_file(walk, path, name, rel_out, enforce_suffix=enforce, data_name=data_name)
            elif path.is_dir() and rel_out not in walk.dir_sources:
                walk.dir_sources[rel_out] = path


def _non_empty_dirs(walk: _Walk) -> set[PurePosixPath]:
    if walk.settings.keep_empty:
        return set(walk.dir_sources)
    occupied: set[PurePosixPath] = set()
    for rel in (*walk.result.files, *walk.result.skipped_existing):
        occupied.update(rel.parents)
    return {d for d in walk.dir_sources if d in occupied}


def _check_inputs(settings: Settings) -> None:
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
                                          hint=f"remove {path} or point it at a file inside the template tree") from None
                if not any(real == r or real.is_relative_to(r) for r in roots):
                    raise PathEscapeError(
                        f"template input {path} is a symlink to {real}, outside the template inputs; "
                        f"gitops-render will not copy or render it (nothing was written)",
                        hint=f"replace {path} with a real file, or point it inside {top}")


def render_tree(settings: Settings, data: Mapping[str, Any], *, cache_dir: Path | None = None) -> RenderResult:
    """Render every input into memory and return the outputs; writes nothing to ``output``.

    ``data`` is deep-copied first (plugins may mutate it, as in makejinja, without
    touching the caller's copy). Plugins are loaded with ``settings.import_paths``
    prepended to ``sys.path`` for the duration of the render. Raises
    :class:`TemplateError`, :class:`PluginError` or :class:`ConfigError`.
    """
    _check_inputs(settings)
    own: MutableMapping[str, Any] = copy.deepcopy(dict(data))
    with plugin_import_paths(settings.import_paths):
        env = build_environment(settings, own)
        loaded: LoadedPlugins = load_plugins(settings, env, own)
        env.bytecode_cache = _FingerprintedBytecodeCache(Path(cache_dir) if cache_dir is not None else None)
        dir_inputs = tuple(p for p in settings.inputs if p.is_dir())
        walk = _Walk(
            settings=settings, env=env, path_filters=loaded.path_filters,
            index=_TemplateIndex(settings.root, tuple(settings.inputs)),
            dir_inputs=dir_inputs, file_inputs=tuple(p for p in settings.inputs if p.is_file()),
            excludes=ExcludeMatcher(settings.exclude_patterns),
        )
        walk.result.plugins.extend(loaded.plugins)
        for i, inp in enumerate(settings.inputs):
            if inp.is_file():
                rel_out = walk.output_rel(PurePosixPath(inp.name))
                if rel_out not in walk.seen:
                    _handle_file(walk, inp, inp.name, rel_out, enforce_suffix=False)
            else:
                _walk_dir(walk, dir_inputs.index(inp), inp)
        _finish(walk)
        if isinstance(env.bytecode_cache, _FingerprintedBytecodeCache):
            env.bytecode_cache.flush()
    walk.result.dirs.update(_non_empty_dirs(walk))
    if settings.copy_metadata:
        walk.result.dir_modes.update({d: stat.S_IMODE(walk.dir_sources[d].stat().st_mode) for d in walk.result.dirs})
    return walk.result

