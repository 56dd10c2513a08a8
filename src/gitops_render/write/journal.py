"""The write journal: what an apply is about to do, so a crash can be resolved.

``<state_dir>/journal.json`` is written atomically (and fsynced) in two phases:

``staging``
    written *before* any staged temp file or directory is created; lists the
    temp names and the directories that may be created.  A journal still in
    this phase means the run died before the point of no return: recovery
    **rolls back** (deletes the temp files, removes the listed directories
    if empty).  The output tree was never modified.
``apply``
    written once every staged file is complete and fsynced.  From here on
    the run is committed: recovery **rolls forward** (renames what is still
    staged, unlinks removals, removes emptied directories, installs the
    manifest).  Every step is idempotent: a staged file that is gone while
    its target already holds the expected sha256 counts as done.

All output paths in the journal are relative to the output root and pass
:func:`gitops_render.paths.safe_target` again when the journal is replayed.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from gitops_render.core.errors import DataError, PathEscapeError
from gitops_render.core.fsio import (
    atomic_write,
    fsync_dirs,
    is_temp_name,
    lstat_or_none,
)
from gitops_render.write.manifest import MANIFEST_FILE, sha256_hex
from gitops_render.write.targets import SafeTargets, normalize_rel, safe_target

__all__ = [
    "JOURNAL_FILE",
    "JOURNAL_VERSION",
    "Hook",
    "Journal",
    "Phase",
    "Removal",
    "Rename",
    "ReplayResult",
    "file_has_digest",
    "roll_back",
    "roll_forward",
]

JOURNAL_FILE = "journal.json"
JOURNAL_VERSION = 1

#: Test hook: called as ``hook(point, index)`` at fixed points of an apply
#: (``"staged"``, ``"journal"``, ``"renamed"``, ``"removed"``, ``"rmdir"``,
#: ``"manifest"``).  Production code passes None; crash tests pass a function
#: that kills the process at a chosen point.
Hook = Callable[[str, int], None]


class Phase(enum.Enum):
    """How far an apply got; see the module docstring."""

    STAGING = "staging"
    APPLY = "apply"


@dataclass(frozen=True)
class Rename:
    """Move staged file ``tmp`` onto ``target`` (both output-relative); ``sha256`` of its bytes."""

    tmp: PurePosixPath
    target: PurePosixPath
    sha256: str


@dataclass(frozen=True)
class Removal:
    """Unlink ``path`` (output-relative) if it still holds bytes with ``sha256``."""

    path: PurePosixPath
    sha256: str


@dataclass(frozen=True)
class Journal:
    """One apply, as recorded on disk."""

    phase: Phase
    output_root: str  # resolved output root at apply time, to refuse replay on another tree
    created_dirs: tuple[PurePosixPath, ...] = ()  # missing when staging began, shallow -> deep
    renames: tuple[Rename, ...] = ()
    removals: tuple[Removal, ...] = ()
    rmdirs: tuple[PurePosixPath, ...] = ()  # remove if empty, deep -> shallow
    manifest_tmp: str | None = None  # temp name inside the state dir
    manifest_sha256: str | None = None

    def with_phase(self, phase: Phase) -> Journal:
        """The same journal in ``phase``."""
        return replace(self, phase=phase)

    def dump(self) -> bytes:
        """Deterministic JSON text."""
        doc = {
            "version": JOURNAL_VERSION,
            "phase": self.phase.value,
            "output_root": self.output_root,
            "created_dirs": [d.as_posix() for d in self.created_dirs],
            "renames": [{"tmp": r.tmp.as_posix(), "target": r.target.as_posix(), "sha256": r.sha256}
                        for r in self.renames],
            "removals": [{"path": r.path.as_posix(), "sha256": r.sha256} for r in self.removals],
            "rmdirs": [d.as_posix() for d in self.rmdirs],
            "manifest": None if self.manifest_tmp is None
            else {"tmp": self.manifest_tmp, "sha256": self.manifest_sha256},
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        """Write the journal atomically and durably."""
        atomic_write(path, self.dump())

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """Read the journal at ``path``; None when there is none."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return cls._parse(json.loads(data.decode("utf-8")))
        except (ValueError, KeyError, TypeError, PathEscapeError) as exc:
            raise DataError(path, None, f"unreadable write journal ({exc})",
                            hint="an interrupted gitops-render write cannot be completed automatically: "
                                 "check `git status`, restore or re-render the output, then delete this file") from exc

    @classmethod
    def _parse(cls, doc: dict) -> Journal:  # type: ignore[type-arg]
        """Build a journal from its JSON document, validating every path."""
        if doc["version"] != JOURNAL_VERSION:
            raise ValueError(f"journal version {doc['version']!r} is not supported")
        renames = []
        for item in doc["renames"]:
            tmp, target = normalize_rel(item["tmp"]), normalize_rel(item["target"])
            if tmp.parent != target.parent or not is_temp_name(tmp.name):
                raise ValueError(f"staged name {tmp} does not belong to {target}")
            renames.append(Rename(tmp, target, str(item["sha256"])))
        manifest = doc.get("manifest")
        if manifest is not None and not is_temp_name(manifest["tmp"]):
            raise ValueError(f"bad staged manifest name {manifest['tmp']!r}")
        return cls(
            phase=Phase(doc["phase"]),
            output_root=str(doc["output_root"]),
            created_dirs=tuple(_rel_dir(d) for d in doc["created_dirs"]),
            renames=tuple(renames),
            removals=tuple(Removal(normalize_rel(r["path"]), str(r["sha256"])) for r in doc["removals"]),
            rmdirs=tuple(normalize_rel(d) for d in doc["rmdirs"]),
            manifest_tmp=None if manifest is None else str(manifest["tmp"]),
            manifest_sha256=None if manifest is None else str(manifest["sha256"]),
        )


def _rel_dir(text: str) -> PurePosixPath:
    """A created directory: output-relative, or ``.`` for the output root itself."""
    return PurePosixPath(".") if text == "." else normalize_rel(text)


@dataclass(frozen=True)
class ReplayResult:
    """What replaying a journal did."""

    written: tuple[PurePosixPath, ...] = ()
    removed: tuple[PurePosixPath, ...] = ()
    removed_dirs: tuple[PurePosixPath, ...] = ()
    manifest_written: bool = False
    problems: tuple[str, ...] = field(default=())


def file_has_digest(path: Path, digest: str) -> bool:
    """True when ``path`` is a regular file (not a symlink) whose bytes hash to ``digest``."""
    st = lstat_or_none(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return False
    return sha256_hex(path.read_bytes()) == digest


def _target(root: Path, rel: PurePosixPath) -> Path:
    """Output path for ``rel`` (``.`` is the root itself), re-checked for escapes."""
    return root if rel == PurePosixPath(".") else safe_target(root, rel)


def roll_forward(journal: Journal, output_root: Path, state_dir: Path, hook: Hook | None = None) -> ReplayResult:
    """Complete an ``apply``-phase journal; idempotent. OSErrors propagate to the caller."""
    root = Path(output_root)
    written: list[PurePosixPath] = []
    removed: list[PurePosixPath] = []
    removed_dirs: list[PurePosixPath] = []
    problems: list[str] = []
    touched: set[Path] = {Path(state_dir)}
    targets = SafeTargets(root)
    for index, item in enumerate(journal.renames):
        target = targets(item.target)
        tmp = target.parent / item.tmp.name  # _parse checked: same directory as the target
        touched.add(target.parent)
        if lstat_or_none(tmp) is not None:
            os.replace(tmp, target)
            written.append(item.target)
        elif not file_has_digest(target, item.sha256):
            problems.append(f"{item.target}: its staged copy {item.tmp.name} is gone and the file "
                            f"does not hold the new content")
        if hook:
            hook("renamed", index)
    for index, removal in enumerate(journal.removals):
        target = targets(removal.path)
        if file_has_digest(target, removal.sha256):
            os.unlink(target)
            removed.append(removal.path)
            touched.add(target.parent)
        if hook:
            hook("removed", index)
    for index, rel in enumerate(journal.rmdirs):
        directory = safe_target(root, rel)
        st = lstat_or_none(directory)
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty (holds files we do not own) or busy: leave it
            else:
                removed_dirs.append(rel)
                touched.add(directory.parent)
        if hook:
            hook("rmdir", index)
    manifest_written = False
    if journal.manifest_tmp is not None and journal.manifest_sha256 is not None:
        tmp, final = Path(state_dir) / journal.manifest_tmp, Path(state_dir) / MANIFEST_FILE
        if lstat_or_none(tmp) is not None:
            os.replace(tmp, final)
            manifest_written = True
        elif not file_has_digest(final, journal.manifest_sha256):
            problems.append(f"{final}: its staged copy {journal.manifest_tmp} is gone and the file "
                            f"does not hold the new manifest")
        if hook:
            hook("manifest", 0)
    fsync_dirs(d for d in touched if lstat_or_none(d) is not None)
    return ReplayResult(tuple(written), tuple(removed), tuple(removed_dirs), manifest_written, tuple(problems))


def roll_back(journal: Journal, output_root: Path, state_dir: Path) -> None:
    """Undo a ``staging``-phase journal: delete staged temps, remove created dirs if empty.

    Never touches a target file; errors are ignored (best effort, idempotent).
    """
    root = Path(output_root)
    for item in journal.renames:
        try:
            os.unlink(safe_target(root, item.tmp))
        except (OSError, PathEscapeError):
            pass
    if journal.manifest_tmp is not None:
        try:
            os.unlink(Path(state_dir) / journal.manifest_tmp)
        except OSError:
            pass
    for rel in reversed(journal.created_dirs):
        try:
            os.rmdir(_target(root, rel))
        except (OSError, PathEscapeError):
            pass
