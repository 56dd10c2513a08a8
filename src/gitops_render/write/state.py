"""The state directory ``.gitops-render/``: a real directory of the repository that tidies itself.

It holds the manifest (committed), and the lock, the journal, staged files and caches
(local). Its own ``.gitignore`` ignores everything but the manifest, so ``git add -A``
never commits a cache, the lock or a journal.

* **No symlinks.** The state directory must be a real directory (not a symlink), and
  none of its entries (lock, journal, manifest, cache, ``.gitignore``) may be a symlink:
  :func:`check_state_dir` refuses them with exit 2 before anything is opened, and every
  state file is opened with ``O_NOFOLLOW`` as well.
* **Nothing left by an early exit.** A :class:`StateSession` remembers which entries
  existed when the run began; a run that stops before writing removes what it created
  (the directory itself too, if it created it). A pending journal keeps everything.

>>> GITIGNORE_TEXT.decode().splitlines()[1:]
['*', '!manifest.json']
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gitops_render.core.errors import WriteError
from gitops_render.core.fsio import lstat_or_none, os_message, write_new_file
from gitops_render.write.journal import JOURNAL_FILE
from gitops_render.write.manifest import MANIFEST_FILE

__all__ = ["CACHE_DIR", "GITIGNORE", "GITIGNORE_TEXT", "LOCK_FILE", "StateSession", "check_state_dir"]

LOCK_FILE = "lock"
CACHE_DIR = "cache"
GITIGNORE = ".gitignore"
GITIGNORE_TEXT = f"# written by gitops-render: commit only the manifest\n*\n!{MANIFEST_FILE}\n".encode()
_ENTRIES = (LOCK_FILE, JOURNAL_FILE, MANIFEST_FILE, CACHE_DIR, GITIGNORE)


def check_state_dir(state_dir: Path) -> bool:
    """Refuse a symlinked or non-directory state dir, or symlinked state entries; True if it exists."""
    st = lstat_or_none(state_dir)
    if st is None:
        return False
    hint = f"remove it (`git rm {state_dir.name}/...` if it was committed) and run again; nothing was written"
    if stat.S_ISLNK(st.st_mode):
        raise WriteError(f"{state_dir} is a symlink; gitops-render keeps its state only in a real directory "
                         "of the repository and never follows a symlink there", hint=hint)
    if not stat.S_ISDIR(st.st_mode):
        raise WriteError(f"{state_dir} is not a directory; gitops-render keeps its state there", hint=hint)
    for name in _ENTRIES:
        entry = lstat_or_none(state_dir / name)
        if entry is not None and stat.S_ISLNK(entry.st_mode):
            raise WriteError(f"{state_dir / name} is a symlink; gitops-render never follows a symlink "
                             "to its own files (it could truncate or overwrite what it points at)",
                             hint=f"delete the symlink {state_dir / name} and run again; nothing was written")
    return True


@dataclass
class StateSession:
    """One run's use of the state directory; use as a context manager around the run.

    On a normal exit (or after :meth:`mark_written`) the directory gets its
    ``.gitignore`` when it exists without one. On an exception before anything was
    written, every entry this run created is removed again, and the directory
    itself if this run created it. The lock file goes only while the run still holds
    the lock (``RepoLock(on_error=session.discard_holding_lock)``): deleting a lock
    file another run may hold would let a third run in. A pending journal keeps all.
    """

    path: Path
    existed: bool = False
    before: frozenset[str] = frozenset()
    written: bool = False

    @classmethod
    def begin(cls, state_dir: Path) -> StateSession:
        """Check the state directory and remember what it holds now."""
        state_dir = Path(state_dir)
        existed = check_state_dir(state_dir)
        try:
            before = frozenset(os.listdir(state_dir)) if existed else frozenset()
        except OSError as exc:
            raise WriteError(f"cannot read the state directory: {os_message(exc)}",
                             hint="fix its permissions and run again; nothing was written") from None
        return cls(state_dir, existed, before)

    def mark_written(self) -> None:
        """The run has written (or started writing): nothing is discarded any more."""
        self.written = True

    def ensure_gitignore(self) -> None:
        """Give an existing state directory its ``.gitignore`` (best effort, never overwrites)."""
        if lstat_or_none(self.path / GITIGNORE) is not None or lstat_or_none(self.path) is None:
            return
        try:
            write_new_file(self.path / GITIGNORE, GITIGNORE_TEXT, None)
        except OSError:
            pass

    def discard_holding_lock(self) -> None:
        """:meth:`discard` for a run that holds the lock (its lock file goes too); see ``RepoLock.on_error``."""
        if not self.written:
            self.discard(lock_held=True)

    def discard(self, *, lock_held: bool = False) -> None:
        """Remove what this run created in the state directory (best effort)."""
        if lstat_or_none(self.path / JOURNAL_FILE) is not None:
            return  # an interrupted write is recorded: the next run needs everything
        try:
            now = set(os.listdir(self.path))
        except OSError:
            return
        for name in sorted(now - self.before):
            if name == LOCK_FILE and not lock_held:
                continue
            entry = self.path / name
            try:
                if stat.S_ISDIR(os.lstat(entry).st_mode):
                    shutil.rmtree(entry)
                else:
                    os.unlink(entry)
            except OSError:
                pass
        if not self.existed:
            try:
                os.rmdir(self.path)
            except OSError:
                pass

    def __enter__(self) -> StateSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not self.written:
            self.discard()
        else:
            self.ensure_gitignore()
