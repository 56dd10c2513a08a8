"""The one snapshot of a directory tree the tests compare: "nothing changed", "only X changed".

``snapshot(root)`` records every directory, file and symlink below ``root`` without following
links: ``rel -> ("dir", mode)``, ``("file", mode, bytes)`` or ``("link", target)``, plus
``(mtime_ns, inode)`` for files and links with ``mtimes=True``. The run-time state that moves
on every run by design (the compile/validation caches, the lock file holding the last pid) and
the contents of ``.git/`` are left out unless ``skip`` says otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["RUNTIME_STATE", "Snapshot", "changed_paths", "files_holding", "snapshot"]

Snapshot = dict[str, tuple[object, ...]]
RUNTIME_STATE = (".gitops-render/cache", ".gitops-render/lock", ".git/")


def snapshot(root: Path, *, mtimes: bool = False, skip: tuple[str, ...] = RUNTIME_STATE) -> Snapshot:
    """Every directory, file and symlink below ``root`` (paths starting with ``skip`` left out)."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not (here / d).relative_to(root).as_posix().startswith(skip)]
        for name in dirnames + filenames:
            full = here / name
            rel = full.relative_to(root).as_posix()
            if rel.startswith(skip):
                continue
            st = os.lstat(full)
            when = (st.st_mtime_ns, st.st_ino) if mtimes else ()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full), *when)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))  # a directory's mtime moves with its entries
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), full.read_bytes(), *when)
    return dict(sorted(out.items()))


def changed_paths(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths added, removed or changed between two snapshots (names only: never contents)."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def files_holding(root: Path, needle: str, *, skip: tuple[str, ...] = ("cluster.yaml",)) -> list[str]:
    """Files below ``root`` whose bytes contain ``needle`` (``skip``: the inputs that legitimately hold it)."""
    raw = needle.encode()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.name not in skip and raw in p.read_bytes())
