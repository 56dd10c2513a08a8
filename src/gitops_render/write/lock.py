"""The repository lock: one gitops-render run at a time per repository.

:class:`RepoLock` takes an exclusive ``flock`` on ``<state_dir>/lock`` and
writes the holder's pid into it (for the message a waiting run prints).  The
kernel releases a flock when its holder exits, however it exits, so a crashed
run never leaves a stale lock behind and the lock file is never deleted
(deleting it would let two runs lock two different files).

The lock is not re-entrant: a second :class:`RepoLock` on the same state
directory in the same process waits like any other run would.

The lock file is opened with ``O_NOFOLLOW`` inside a real (non-symlink) state
directory and must be a regular file: a committed ``lock`` symlink pointing at
``age.key`` is refused, never truncated.  Every failure to take the lock (a
symlink, a directory or FIFO in its place, no permission, a full disk) is a
:class:`LockError` naming the file (exit 2), with nothing written.

The holder may delete the lock file while it holds it (a run that created the
state directory removes it again when it stops early): a waiting run notices
through the inode re-check and locks the current file instead.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from gitops_render.core.errors import LockError
from gitops_render.core.fsio import os_message
from gitops_render.write.state import LOCK_FILE, check_state_dir

__all__ = ["DEFAULT_LOCK_TIMEOUT", "LOCK_FILE", "RepoLock"]

DEFAULT_LOCK_TIMEOUT = 30.0


@dataclass(eq=False)
class RepoLock:
    """Exclusive lock on ``state_dir/lock``; use as a context manager.

    Waits up to ``timeout`` seconds (0: try once) for another run to finish,
    then raises :class:`LockError` naming the holder's pid.  ``repo`` is only
    used in messages (defaults to the state directory's parent).
    """

    state_dir: Path
    timeout: float = DEFAULT_LOCK_TIMEOUT
    poll_interval: float = 0.05
    repo: Path | None = None
    #: called with the lock still held when the ``with`` block raises (a run cleaning up what it created)
    on_error: Callable[[], None] | None = field(default=None, repr=False)
    _fd: int | None = field(default=None, init=False, repr=False)

    @property
    def path(self) -> Path:
        """The lock file."""
        return Path(self.state_dir) / LOCK_FILE

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockError` after ``timeout`` seconds."""
        if self._fd is not None:
            raise RuntimeError("RepoLock is not re-entrant")
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            fd = self._open()
            if fd is None:  # the state directory was removed meanwhile: create it again
                continue
            try:
                if self._try_lock(fd):
                    try:
                        self._record_pid(fd)
                    except BaseException:
                        if self.on_error is not None:  # still locked: the run may remove what it created
                            self.on_error()
                        raise
                    self._fd = fd
                    return
                holder = _read_pid(fd)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._busy_error(holder)
            time.sleep(min(self.poll_interval, remaining))

    def _broken(self, what: str) -> LockError:
        return LockError(f"cannot take the lock {self.path}: {what}; nothing was written",
                         hint=f"remove {self.path} (it must be a regular file that gitops-render creates; "
                              "never commit it) and run again")

    def _open(self) -> int | None:
        """Open (create) the lock file without following a symlink; None when its directory vanished."""
        check_state_dir(Path(self.state_dir))
        try:
            Path(self.state_dir).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._broken(os_message(exc)) from None
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise self._broken(os_message(exc)) from None
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise self._broken("it is not a regular file (a FIFO, socket or device)")
        return fd

    def _record_pid(self, fd: int) -> None:
        """Write the holder's pid; a full disk or an I/O error is an operator error, not a crash."""
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise self._broken(os_message(exc)) from None

    def _try_lock(self, fd: int) -> bool:
        """Non-blocking flock; False when held elsewhere or the file was replaced meanwhile."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # someone deleted/replaced the lock file: lock the current one instead
            fcntl.flock(fd, fcntl.LOCK_UN)
        return same

    def _busy_error(self, holder: int | None) -> LockError:
        """The operator message for a lock held by someone else."""
        repo = self.repo if self.repo is not None else Path(self.state_dir).resolve().parent
        who = f"pid {holder}" if holder else "pid unknown"
        if holder == os.getpid():
            who += ", this very process"
        waited = f"waited {self.timeout:g}s" if self.timeout > 0 else "not waiting"
        return LockError(
            f"another gitops-render run ({who}) holds the lock on {repo} ({self.path}); {waited}",
            hint="wait for that run to finish and try again"
                 + (f", or stop it (kill {holder})" if holder and holder != os.getpid() else "")
                 + "; the lock is released automatically when that process exits, "
                   "so there is no lock file to delete")

    def release(self) -> None:
        """Release the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RepoLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is not None and self.on_error is not None and self._fd is not None:
                self.on_error()
        finally:
            self.release()


def _read_pid(fd: int) -> int | None:
    """The pid recorded in the lock file, if any."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "ignore").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
