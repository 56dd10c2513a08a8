"""Path safety and durable-file primitives of the write stage.

Every output path gitops-render writes, replaces or deletes goes through
:func:`safe_target`, which refuses paths that could leave the output root:
absolute paths, ``..`` components, NUL bytes, and existing path components
inside the root that are symlinks resolving outside it.  The output root
itself is trusted as given unless ``repo_root`` is passed: then the *resolved*
output root must lie inside the resolved repository root, so a symlinked
output directory cannot lead writes out of the repository.

Temporary ("staged") files are written beside their targets under a hidden
name that :func:`is_temp_name` recognises, so that leftovers of a crashed run
can be found and removed.

>>> normalize_rel("kubernetes/./apps/x.yaml")
PurePosixPath('kubernetes/apps/x.yaml')
>>> is_temp_name(temp_name_for("x.yaml", token="0123456789ab"))
True
>>> temp_name_for("x.yaml", token="0123456789ab")
'.x.yaml.gitops-render.tmp-0123456789ab'
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from pathlib import Path, PurePosixPath

from .errors import PathEscapeError

__all__ = [
    "write_cache_bytes",
    "write_cache_json",
    "TEMP_MARKER",
    "normalize_rel",
    "safe_target",
    "check_output_root",
    "is_within",
    "temp_name_for",
    "is_temp_name",
    "write_new_file",
    "atomic_write",
    "fsync_dir",
    "fsync_dirs",
    "lstat_or_none",
]

TEMP_MARKER = ".gitops-render.tmp-"
_TEMP_RE = re.compile(r"^\..*\.gitops-render\.tmp-[0-9a-f]{12}$", re.DOTALL)
# Bytes of the target's name kept inside a temp name; NAME_MAX is 255 on the
# filesystems we care about and the prefix/suffix take 33 bytes.
_MAX_NAME_BYTES = 200


def normalize_rel(rel: PurePosixPath | str) -> PurePosixPath:
    """Validate and normalise an output-relative POSIX path.

    Raises :class:`PathEscapeError` for empty, absolute, ``..``-containing or
    NUL-containing paths.  ``.`` components and repeated slashes are dropped.
    """
    text = rel.as_posix() if isinstance(rel, PurePosixPath) else str(rel)
    if "\x00" in text:
        raise PathEscapeError(f"output path {text!r} contains a NUL byte",
                              hint="fix the template or plugin that produces this file name")
    path = PurePosixPath(text)
    if path.is_absolute():
        raise PathEscapeError(f"output path {text} is absolute; outputs must be relative to the output directory",
                              hint="fix the template or plugin that produces this file name")
    if ".." in path.parts:
        raise PathEscapeError(f"output path {text} contains '..' and could leave the output directory",
                              hint="fix the template or plugin that produces this file name")
    if not path.parts:
        raise PathEscapeError(f"output path {text!r} is empty",
                              hint="fix the template or plugin that produces this file name")
    return path


def is_within(path: Path, root: Path) -> bool:
    """True when the (already resolved) ``path`` is ``root`` or lies below it."""
    return path == root or path.is_relative_to(root)


def _resolve(path: Path) -> Path:
    """``path.resolve()`` that reports symlink loops as :class:`PathEscapeError`."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: symlink loop on 3.11/3.12
        raise PathEscapeError(f"{path}: cannot resolve ({exc})",
                              hint="remove the symlink loop or broken link") from exc


def check_output_root(output_root: Path, repo_root: Path) -> Path:
    """Return the resolved output root; refuse one that resolves outside ``repo_root``."""
    real = _resolve(Path(output_root))
    repo_real = _resolve(Path(repo_root))
    if not is_within(real, repo_real):
        raise PathEscapeError(
            f"output directory {output_root} resolves to {real}, outside the repository {repo_real}",
            hint="set the output directory to a folder inside the repository "
                 "(a symlinked output directory must point inside it too)")
    return real


def safe_target(output_root: Path, rel: PurePosixPath | str, *, repo_root: Path | None = None) -> Path:
    """The filesystem path of output ``rel`` below ``output_root``, or :class:`PathEscapeError`.

    Every existing component of ``rel`` (including the last one) that is a
    symlink must resolve inside the resolved output root.  Components that do
    not exist yet end the check (they are created as real directories).
    With ``repo_root``, the output root itself must resolve inside it.
    The returned path is lexical (``output_root / rel``), not resolved.
    """
    path = normalize_rel(rel)
    root = Path(output_root)
    root_real = check_output_root(root, repo_root) if repo_root is not None else _resolve(root)
    current = root
    for part in path.parts:
        current = current / part
        st = lstat_or_none(current)
        if st is None:
            break
        if stat.S_ISLNK(st.st_mode):
            real = _resolve(current)
            if not is_within(real, root_real):
                raise PathEscapeError(
                    f"{current} is a symlink to {real}, outside the output directory {root_real}; "
                    f"gitops-render will not write through it",
                    hint=f"replace the symlink {current} with a real directory or file")
    return root / path


def lstat_or_none(path: Path) -> os.stat_result | None:
    """``os.lstat(path)`` or None when the path (or a parent) does not exist."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def temp_name_for(name: str, *, token: str | None = None) -> str:
    """A hidden staging name beside ``name``: ``.<name>.gitops-render.tmp-<12 hex>``."""
    token = token if token is not None else secrets.token_hex(6)
    encoded = name.encode("utf-8", "surrogateescape")[:_MAX_NAME_BYTES]
    short = encoded.decode("utf-8", "ignore")
    return f".{short}{TEMP_MARKER}{token}"


def is_temp_name(name: str) -> bool:
    """True when ``name`` (a single path component) is a gitops-render staging name."""
    return bool(_TEMP_RE.match(name))


def write_new_file(path: Path, data: bytes, mode: int | None, *, fsync: bool = True) -> None:
    """Create ``path`` exclusively, write ``data`` completely, apply ``mode``, fsync.

    With ``mode`` None the file gets ``0o666 & ~umask`` (the kernel applies
    the umask).  On any failure the partial file is removed and the error
    re-raised.  ``fsync=False`` leaves the fsync to the caller (the write stage
    stages many files, then makes them all durable at once with :func:`fsync_files`).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666 if mode is None else 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode is not None:
                os.fchmod(fd, mode)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlink_quietly(path)
        raise


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file, fsync, rename, fsync dir)."""
    tmp = path.parent / temp_name_for(path.name)
    write_new_file(tmp, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def write_cache_bytes(path: Path, data: bytes) -> None:
    """Replace the cache file ``path`` with ``data``: atomic, mode 0600, best effort.

    Caches are never essential, so this is not fsynced and an OSError is swallowed: a
    cache can be lost, never torn or world-readable.
    """
    import tempfile

    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            _unlink_quietly(Path(tmp))


def write_cache_json(path: Path, doc: Any) -> None:
    """:func:`write_cache_bytes` of ``doc`` as compact, sorted JSON."""
    import json

    write_cache_bytes(path, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def _fsync_open(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that renames/creations/unlinks in it are durable."""
    _fsync_open(directory, os.O_DIRECTORY)


def fsync_dirs(directories: Iterable[Path]) -> None:
    """fsync every existing directory of ``directories`` once (several at a time).

    Returns when every one of them is durable; the first error is raised.
    """
    existing = [d for d in sorted(set(directories)) if os.path.isdir(d)]
    _concurrently(fsync_dir, existing)


def _fsync_file(path: Path) -> None:
    _fsync_open(path, os.O_NOFOLLOW)


def fsync_files(paths: Iterable[Path]) -> None:
    """fsync every file of ``paths`` (several at a time); returns when all of them are durable.

    fsync releases the GIL and concurrent fsyncs on one filesystem share journal
    commits, so a few hundred staged files take about as long as a few.
    The first error is raised (after every started fsync finished).
    """
    _concurrently(_fsync_file, list(paths))


#: Threads for concurrent fsyncs (I/O bound: more than the cores).
FSYNC_THREADS = 16


def _concurrently(fn: Callable[[Path], None], items: Sequence[Path]) -> None:
    """``fn(item)`` for every item, in a bounded thread pool when there are several; first error raised."""
    if len(items) <= 2:
        for item in items:
            fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(FSYNC_THREADS, len(items)), thread_name_prefix="fsync") as pool:
        futures = [pool.submit(fn, item) for item in items]
    for fut in futures:  # the pool has joined: every fsync has finished, ok or not
        fut.result()


class SafeTargets:
    """:func:`safe_target` for many paths below one output root.

    The output root is resolved once and every existing directory component is
    checked once per instance (a directory created later is checked when it is
    first met existing). Use one instance per planning or apply step.
    """

    def __init__(self, output_root: Path, *, repo_root: Path | None = None) -> None:
        self.root = Path(output_root)
        self.root_real = (check_output_root(self.root, repo_root) if repo_root is not None
                          else _resolve(self.root))
        self._checked: set[tuple[str, ...]] = set()

    def __call__(self, rel: PurePosixPath | str) -> Path:
        path = normalize_rel(rel)
        parts = path.parts
        current = str(self.root)
        last = len(parts) - 1
        for i, part in enumerate(parts):
            current = os.path.join(current, part)
            if i < last and parts[: i + 1] in self._checked:
                continue
            st = lstat_or_none(Path(current))
            if st is None:
                break
            if stat.S_ISLNK(st.st_mode):
                real = _resolve(Path(current))
                if not is_within(real, self.root_real):
                    raise PathEscapeError(
                        f"{current} is a symlink to {real}, outside the output directory {self.root_real}; "
                        f"gitops-render will not write through it",
                        hint=f"replace the symlink {current} with a real directory or file")
            if i < last:
                self._checked.add(parts[: i + 1])
        return self.root / path


def _unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it exists; errors are ignored (cleanup paths only)."""
    try:
        os.unlink(path)
    except OSError:
        pass
