"""Durable and cache file writes: the one place that creates files for gitops-render.

Staged ("temporary") files get a hidden name that :func:`is_temp_name` recognises (an exact
token format), so that leftovers of a crashed run can be found and removed. The write stage
stages in its own state directory only, never in the output tree.

gitops-render's own files are read with :func:`read_regular` (``O_NOFOLLOW``, regular files
only): a committed symlink in their place is never followed.

>>> is_temp_name(temp_name_for("x.yaml", token="0123456789ab"))
True
>>> temp_name_for("x.yaml", token="0123456789ab")
'.x.yaml.gitops-render.tmp-0123456789ab'
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

TEMP_MARKER = ".gitops-render.tmp-"
_TEMP_RE = re.compile(r"^\..*\.gitops-render\.tmp-[0-9a-f]{12}$", re.DOTALL)
# Bytes of the target's name kept inside a temp name; NAME_MAX is 255 on the
# filesystems we care about and the prefix/suffix take 33 bytes.
_MAX_NAME_BYTES = 200


def lstat_or_none(path: Path) -> os.stat_result | None:
    """``os.lstat(path)`` or None when the path (or a parent) does not exist."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path``; its last component is never followed if a symlink.

    Raises ``FileNotFoundError`` when it does not exist, and ``OSError`` (``ELOOP`` for a
    symlink, ``EINVAL`` for a directory, FIFO, socket or device, or the read error) otherwise.
    Opening does not block on a FIFO.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def os_message(exc: OSError) -> str:
    """``strerror (filename)`` of an OSError, for operator messages; a refused symlink says so."""
    what = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        what = "is a symlink, and gitops-render never follows a symlink to its own or generated files"
    elif exc.errno == errno.EISDIR:
        what = "is a directory, not a regular file"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{what}{where}"


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


def _unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it exists; errors are ignored (cleanup paths only)."""
    try:
        os.unlink(path)
    except OSError:
        pass
