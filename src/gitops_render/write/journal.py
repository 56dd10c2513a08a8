"""The write journal: what an apply is about to do, so a crash can be resolved.

``<state_dir>/journal.json`` is written atomically (and fsynced) in two phases:

``staging``
    written *before* any staged file is created. Staged files live in the state
    directory only (hidden names in :func:`gitops_render.core.fsio.temp_name_for`'s
    exact format), never in the output tree, so a run killed while staging leaves
    the output tree untouched and nothing in it to commit by mistake. Recovery
    **rolls back**: it deletes the staged files.
``apply``
    written once every staged file is complete and fsynced.  From here on
    the run is committed: recovery **rolls forward** (creates the missing
    directories, renames what is still staged onto its target, unlinks removals,
    removes emptied directories, sets directory modes, installs the manifest).
    Every step is idempotent: a staged file that is gone while its target already
    holds the expected sha256 counts as done.

A journal found on disk is not trusted: every output path must stay inside the output
root (:class:`gitops_render.write.targets.SafeTargets`, so never through a symlink into
``.git``), never name ``.git`` or the state directory, created and removed directories
must be parents of its own renames and removals, staged names must be single staging
names in the state directory, a staged file is renamed only when its bytes still hash to
the recorded sha256, and a file is removed only when it is listed with exactly that
sha256 in the manifest on disk (and is not an input of the run).

During the first, in-process roll forward an :class:`Undo` log records every step
(replaced files keep a hard-linked backup in the state directory), so a failing rename
can put the old tree back: the tree is all-old or all-new, never half.
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
    os_message,
    read_regular,
    temp_name_for,
)
from gitops_render.core.naming import STATE_DIR
from gitops_render.write.manifest import MANIFEST_FILE, Manifest, sha256_hex
from gitops_render.write.targets import SafeTargets, normalize_rel

__all__ = [
    "JOURNAL_FILE",
    "JOURNAL_VERSION",
    "Hook",
    "Journal",
    "Phase",
    "Removal",
    "Rename",
    "ReplayResult",
    "Undo",
    "file_has_digest",
    "roll_back",
    "roll_forward",
]

JOURNAL_FILE = "journal.json"
JOURNAL_VERSION = 2  # 2: staged files in the state directory, directory modes

#: Test hook: called as ``hook(point, index)`` at fixed points of an apply
#: (``"staged"``, ``"journal"``, ``"renamed"``, ``"removed"``, ``"rmdir"``,
#: ``"manifest"``).  Production code passes None; crash tests pass a function
#: that kills the process at a chosen point.
Hook = Callable[[str, int], None]

_NEVER = (".git", STATE_DIR)


class Phase(enum.Enum):
    """How far an apply got; see the module docstring."""

    STAGING = "staging"
    APPLY = "apply"


@dataclass(frozen=True)
class Rename:
    """Move staged file ``tmp`` (a name in the state dir) onto ``target`` (output-relative)."""

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
    created_dirs: tuple[PurePosixPath, ...] = ()  # missing when the plan was made, shallow -> deep
    renames: tuple[Rename, ...] = ()
    removals: tuple[Removal, ...] = ()
    rmdirs: tuple[PurePosixPath, ...] = ()  # remove if empty, deep -> shallow
    manifest_tmp: str | None = None  # temp name inside the state dir
    manifest_sha256: str | None = None
    dir_modes: tuple[tuple[PurePosixPath, int], ...] = ()  # copy_metadata: modes of output dirs

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
            "dir_modes": [{"path": d.as_posix(), "mode": m} for d, m in self.dir_modes],
            "manifest": None if self.manifest_tmp is None
            else {"tmp": self.manifest_tmp, "sha256": self.manifest_sha256},
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        """Write the journal atomically and durably."""
        atomic_write(path, self.dump())

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """Read the journal at ``path`` (never through a symlink); None when there is none."""
        hint = ("an interrupted gitops-render write cannot be completed automatically: "
                "check `git status`, restore or re-render the output, then delete this file")
        try:
            data = read_regular(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DataError(path, None, f"cannot read the write journal: {os_message(exc)}", hint=hint) from None
        try:
            return cls._parse(json.loads(data.decode("utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError, PathEscapeError) as exc:
            raise DataError(path, None, f"unreadable write journal ({exc})", hint=hint) from exc

    @classmethod
    def _parse(cls, doc: dict) -> Journal:  # type: ignore[type-arg]
        """Build a journal from its JSON document, validating every entry."""
        if doc["version"] != JOURNAL_VERSION:
            raise ValueError(f"journal version {doc['version']!r} is not supported (expected {JOURNAL_VERSION}); "
                             "complete it with the gitops-render version that wrote it")
        renames = []
        for item in doc["renames"]:
            tmp, target = normalize_rel(item["tmp"]), _output_path(item["target"])
            if len(tmp.parts) != 1 or not is_temp_name(tmp.name):
                raise ValueError(f"staged name {tmp} is not a gitops-render staging name")
            renames.append(Rename(tmp, target, _digest(item["sha256"])))
        removals = tuple(Removal(_output_path(r["path"]), _digest(r["sha256"])) for r in doc["removals"])
        created = tuple(_rel_dir(d) for d in doc["created_dirs"])
        rmdirs = tuple(_output_path(d) for d in doc["rmdirs"])
        dir_modes = tuple((_output_path(d["path"]), _mode(d["mode"])) for d in doc.get("dir_modes", ()))
        _subset(created, {p for r in renames for p in r.target.parents}, "created directory")
        _subset(rmdirs, {p for r in removals for p in r.path.parents}, "removed directory")
        manifest = doc.get("manifest")
        if manifest is not None and not is_temp_name(manifest["tmp"]):
            raise ValueError(f"bad staged manifest name {manifest['tmp']!r}")
        return cls(
            phase=Phase(doc["phase"]),
            output_root=str(doc["output_root"]),
            created_dirs=created,
            renames=tuple(renames),
            removals=removals,
            rmdirs=rmdirs,
            manifest_tmp=None if manifest is None else str(manifest["tmp"]),
            manifest_sha256=None if manifest is None else _digest(manifest["sha256"]),
            dir_modes=dir_modes,
        )


def _output_path(text: str) -> PurePosixPath:
    """An output-relative path of a journal: safe, and never into ``.git`` or the state directory."""
    path = normalize_rel(text)
    if path.parts[0] in _NEVER:
        raise ValueError(f"{path} lies in {path.parts[0]}/, which gitops-render never touches")
    return path


def _digest(value: object) -> str:
    text = str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{text!r} is not a sha256 hex digest")
    return text


def _mode(value: object) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ValueError(f"{value!r} is not a permission mode")
    return value


def _subset(paths: tuple[PurePosixPath, ...], allowed: set[PurePosixPath], what: str) -> None:
    for path in paths:
        if path not in allowed:
            raise ValueError(f"{what} {path} belongs to no entry of the journal")


def _rel_dir(text: str) -> PurePosixPath:
    """A created directory: output-relative, or ``.`` for the output root itself."""
    return PurePosixPath(".") if text == "." else _output_path(text)


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
    return sha256_hex(read_regular(path)) == digest


@dataclass
class _Step:
    kind: str  # "mkdir", "rmdir", "replace", "remove", "chmod"
    path: Path
    staged: Path | None = None
    backup: Path | None = None
    mode: int = 0


@dataclass
class Undo:
    """Every step of one in-process roll forward, newest last, to undo it after a failure."""

    state_dir: Path
    steps: list[_Step] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)

    def _backup(self, target: Path) -> Path | None:
        """Keep the current ``target`` (a hard link in the state dir); None when there is none."""
        if lstat_or_none(target) is None:
            return None
        backup = self.state_dir / temp_name_for(target.name)
        try:
            os.link(target, backup, follow_symlinks=False)
        except OSError:  # no hard links on this filesystem: move it aside instead
            os.replace(target, backup)
        self.backups.append(backup)
        return backup

    def replace(self, staged: Path, target: Path) -> None:
        """``os.replace(staged, target)``, keeping what it replaces."""
        backup = self._backup(target)
        try:
            os.replace(staged, target)
        except BaseException:
            if backup is not None and lstat_or_none(target) is None:
                os.replace(backup, target)  # it was moved aside: put it back
            raise
        self.steps.append(_Step("replace", target, staged, backup))

    def remove(self, target: Path) -> None:
        """Remove ``target`` by moving it to a backup."""
        backup = self.state_dir / temp_name_for(target.name)
        os.replace(target, backup)
        self.backups.append(backup)
        self.steps.append(_Step("remove", target, None, backup))

    def undo(self) -> None:
        """Put back everything, newest first; staged files return to their staged names."""
        while self.steps:
            step = self.steps[-1]
            if step.kind == "mkdir":
                os.rmdir(step.path)
            elif step.kind == "rmdir":
                os.mkdir(step.path)
                os.chmod(step.path, step.mode)
            elif step.kind == "chmod":
                os.chmod(step.path, step.mode)
            elif step.kind == "remove":
                assert step.backup is not None
                os.replace(step.backup, step.path)
            else:
                assert step.staged is not None
                os.replace(step.path, step.staged)  # the new content is staged again (a crash rolls forward)
                if step.backup is not None:
                    os.replace(step.backup, step.path)
            self.steps.pop()

    def drop_backups(self) -> None:
        """Delete the backups that are left (best effort; recovery sweeps what a crash leaves)."""
        for backup in self.backups:
            try:
                os.unlink(backup)
            except OSError:
                pass
        self.backups.clear()


def roll_forward(journal: Journal, output_root: Path, state_dir: Path, hook: Hook | None = None, *,
                 undo: Undo | None = None, owned: Manifest | None = None,
                 may_remove: Callable[[Path], bool] | None = None) -> ReplayResult:
    """Complete an ``apply``-phase journal; idempotent. OSErrors propagate to the caller.

    ``undo`` (the in-process apply) records every step. Without it (recovery of a journal
    found on disk), staged files are checked against their sha256 and a removal needs an
    entry with the same sha256 in ``owned`` (the manifest on disk) and ``may_remove``.
    """
    root, state_dir = Path(output_root), Path(state_dir)
    written: list[PurePosixPath] = []
    removed: list[PurePosixPath] = []
    removed_dirs: list[PurePosixPath] = []
    problems: list[str] = []
    touched: set[Path] = {state_dir}
    targets = SafeTargets(root)
    for rel in journal.created_dirs:
        directory = root if rel == PurePosixPath(".") else targets(rel)
        if lstat_or_none(directory) is None:
            os.mkdir(directory)
            touched.add(directory.parent)
            if undo is not None:
                undo.steps.append(_Step("mkdir", directory))
    for index, item in enumerate(journal.renames):
        target = targets(item.target)
        tmp = state_dir / item.tmp.name
        touched.add(target.parent)
        if lstat_or_none(tmp) is not None:
            if undo is not None:
                undo.replace(tmp, target)
                written.append(item.target)
            elif file_has_digest(tmp, item.sha256):
                os.replace(tmp, target)
                written.append(item.target)
            else:
                problems.append(f"{item.target}: its staged copy {item.tmp.name} does not hold the recorded content")
        elif not file_has_digest(target, item.sha256):
            problems.append(f"{item.target}: its staged copy {item.tmp.name} is gone and the file "
                            f"does not hold the new content")
        if hook:
            hook("renamed", index)
    for index, removal in enumerate(journal.removals):
        target = targets(removal.path)
        allowed = undo is not None or (owned is not None and owned.digest_of(removal.path) == removal.sha256
                                       and (may_remove is None or may_remove(target)))
        if allowed and file_has_digest(target, removal.sha256):
            if undo is not None:
                undo.remove(target)
            else:
                os.unlink(target)
            removed.append(removal.path)
            touched.add(target.parent)
        if hook:
            hook("removed", index)
    for index, rel in enumerate(journal.rmdirs):
        directory = targets(rel)
        st = lstat_or_none(directory)
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty (holds files we do not own) or busy: leave it
            else:
                removed_dirs.append(rel)
                touched.add(directory.parent)
                if undo is not None:
                    undo.steps.append(_Step("rmdir", directory, mode=stat.S_IMODE(st.st_mode)))
        if hook:
            hook("rmdir", index)
    for rel, mode in journal.dir_modes:
        directory = targets(rel)
        st = lstat_or_none(directory)
        if st is not None and stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(directory, mode)
            if undo is not None:
                undo.steps.append(_Step("chmod", directory, mode=stat.S_IMODE(st.st_mode)))
    manifest_written = False
    if journal.manifest_tmp is not None and journal.manifest_sha256 is not None:
        tmp, final = state_dir / journal.manifest_tmp, state_dir / MANIFEST_FILE
        if lstat_or_none(tmp) is not None:
            if undo is not None:
                undo.replace(tmp, final)
            else:
                os.replace(tmp, final)
            manifest_written = True
        elif not file_has_digest(final, journal.manifest_sha256):
            problems.append(f"{final}: its staged copy {journal.manifest_tmp} is gone and the file "
                            f"does not hold the new manifest")
        if hook:
            hook("manifest", 0)
    fsync_dirs(d for d in touched if lstat_or_none(d) is not None)
    return ReplayResult(tuple(written), tuple(removed), tuple(removed_dirs), manifest_written, tuple(problems))


def roll_back(journal: Journal, state_dir: Path) -> None:
    """Undo a ``staging``-phase journal: delete its staged files (the output tree was never touched).

    Errors are ignored (best effort, idempotent).
    """
    names = [item.tmp.name for item in journal.renames]
    if journal.manifest_tmp is not None:
        names.append(journal.manifest_tmp)
    for name in names:
        try:
            os.unlink(Path(state_dir) / name)
        except OSError:
            pass
