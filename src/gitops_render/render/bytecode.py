"""Compiled templates: a bytecode cache keyed by the compile settings, and parallel compilation.

The cache lives in one pack file (one read instead of one open per template); code
compiled by forked workers comes back through a pipe. Rendering always happens in
the parent process, in walk order.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import marshal
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
from jinja2 import BytecodeCache, Environment
from jinja2.bccache import Bucket

from gitops_render.core.fsio import write_cache_bytes

__all__ = ["PARALLEL_THRESHOLD", "FingerprintedBytecodeCache", "compile_jobs", "precompile"]


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


class FingerprintedBytecodeCache(BytecodeCache):
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
    _FORMAT = 2  # entries hold marshalled code (bytes): unmarshalled only when a template is used

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.persistent = directory is not None
        self._fingerprints: dict[int, str] = {}
        self._memory: dict[str, tuple[str, bytes]] = {}
        self._pack: dict[str, tuple[str, bytes]] | None = None
        self._dirty = False

    def key_for(self, environment: Environment, name: str, filename: str | None) -> str:
        fp = self._fingerprints.get(id(environment))
        if fp is None:
            fp = self._fingerprints[id(environment)] = _compile_fingerprint(environment)
        return hashlib.sha1(f"{fp}\x1f{name}\x1f{filename}".encode(), usedforsecurity=False).hexdigest()

    def _load_pack(self) -> dict[str, tuple[str, bytes]]:
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
            try:
                bucket.code = marshal.loads(held[1])
            except (EOFError, ValueError, TypeError):
                return bucket  # a damaged entry: compile again
            self._memory[bucket.key] = held
        return bucket

    def set_bucket(self, bucket: Bucket) -> None:
        if bucket.code is not None:
            self.remember(bucket.key, bucket.checksum, bucket.code)

    def remember(self, key: str, checksum: str, code: CodeType) -> None:
        """Code compiled here or elsewhere (a worker process) for the bucket ``key``."""
        self._memory[key] = (checksum, marshal.dumps(code))
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

#: below this many templates to compile, compiling in this process is cheaper than forking workers
PARALLEL_THRESHOLD = 48


def compile_jobs(todo: int, configured: int | None = None) -> int:
    """How many processes compile ``todo`` templates (1 = this one alone).

    ``configured`` is ``GITOPS_RENDER_JOBS`` (``settings.runtime.jobs``), read once by the settings.
    """
    if configured is not None:
        jobs = configured
    else:
        try:
            jobs = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            jobs = os.cpu_count() or 1
        jobs = min(jobs, 8)
        if todo < PARALLEL_THRESHOLD:
            return 1
    # fork only from a single-threaded process: a lock held by another thread would be
    # inherited locked by the workers
    if jobs <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    return max(1, min(jobs, todo // 16 or 1))


def _compile_names(env: Environment, bcc: FingerprintedBytecodeCache,
                   names: Sequence[str]) -> list[tuple[str, str, CodeType]]:
    """Compile ``names``; a template that fails is left out (the render reports it as a serial run would)."""
    assert env.loader is not None
    out: list[tuple[str, str, CodeType]] = []
    for name in names:
        try:
            source, filename, _ = env.loader.get_source(env, name)
            bucket = bcc.get_bucket(env, name, filename, source)
            code = bucket.code or env.compile(source, name, filename)
            out.append((bucket.key, bucket.checksum, code))
        except Exception:  # noqa: S112 - reported by the render, in order
            continue
    return out


def _fork_worker(env: Environment, bcc: FingerprintedBytecodeCache, names: Sequence[str]) -> tuple[int, int]:
    """Fork a process that compiles ``names`` and writes the marshalled code to a pipe: ``(pid, fd)``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the caller's code
        status = 1
        try:
            os.close(read_fd)
            # Compiling allocates many short-lived objects: keep the inherited heap out of the
            # collector (no copy-on-write of the parent's pages) and collect less often.
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            with os.fdopen(write_fd, "wb") as out:
                out.write(marshal.dumps(_compile_names(env, bcc, names)))
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, fd: int) -> list[tuple[str, str, CodeType]]:
    """The worker's compiled code; nothing when it failed (the render compiles what is missing)."""
    with os.fdopen(fd, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return []
    try:
        got = marshal.loads(raw)
    except (EOFError, ValueError, TypeError):
        return []
    return got if isinstance(got, list) else []


def precompile(env: Environment, names: Iterable[str], jobs_setting: int | None = None) -> None:
    """Compile the templates ``names`` whose code is not cached, in parallel when that pays.

    The workers are forked (plugins, filters and data need not be picklable) and
    only compile; this process compiles a share itself. Rendering stays in this
    process, in walk order, so results, plugin side effects and error messages are
    those of a serial run.
    """
    bcc = env.bytecode_cache
    loader = env.loader
    if not isinstance(bcc, FingerprintedBytecodeCache) or loader is None:
        return
    todo: list[str] = []
    unique = list(dict.fromkeys(names))
    cache = env.cache
    # keep what get_template would build from cached code (saves the render a second read of the
    # source), unless the template cache is too small to hold every template of the run
    capacity = getattr(cache, "capacity", None)  # a jinja2.utils.LRUCache when bounded
    prefill = cache is not None and (capacity is None or len(unique) <= capacity)
    for name in unique:
        try:
            source, filename, uptodate = loader.get_source(env, name)
        except Exception:  # noqa: S112 - the render reports it
            continue
        code = bcc.get_bucket(env, name, filename, source).code
        if code is None:
            todo.append(name)
        elif prefill and cache is not None:  # same key as Environment._load_template
            cache[(weakref.ref(loader), name)] = env.template_class.from_code(
                env, code, env.make_globals(None), uptodate)
    jobs = compile_jobs(len(todo), jobs_setting)
    if jobs <= 1:
        return
    chunks = [todo[i::jobs] for i in range(jobs)]
    try:
        workers = [_fork_worker(env, bcc, chunk) for chunk in chunks[1:]]
    except OSError:
        return  # no workers (resource limits): the render compiles what is missing
    for key, checksum, code in _compile_names(env, bcc, chunks[0]):
        bcc.remember(key, checksum, code)
    for pid, fd in workers:
        for key, checksum, code in _collect(pid, fd):
            bcc.remember(key, checksum, code)
