"""The write stage: plan, stage, journal, atomic apply, prune, manifest, recovery.

Guarantees
----------
* A failure anywhere before the apply step leaves the output tree
  byte-for-byte as it was (staged temp files and directories created for
  them are removed again).
* Every file is replaced atomically (complete temp file beside the target,
  fsynced, then ``os.replace``); unchanged files are not rewritten (their
  mtime and inode are kept).
* A crash during the short apply step is completed by the next run's
  :func:`recover` from ``<state_dir>/journal.json``.
* Files gitops-render generated earlier (listed in the manifest) but no longer
  generates are pruned, and directories left empty by that are removed.
  Files it never generated are never touched; directories are only removed
  when empty, so a directory holding anything else stays.
* No path leaves the output root (see :mod:`gitops_render.paths`); ``.git``
  and the state directory (``.gitops-render``) are never written or pruned.

Decisions
---------
* **Modes.** ``DesiredFile.mode`` given: the file gets exactly that mode (a
  mode-only difference is a CHANGED file).  ``mode`` None: an existing file
  keeps its mode, a new file gets ``0o666 & ~umask``.  Secrets get no special
  mode: they hold ciphertext only, and git does not record modes anyway.
* **Hand-edited generated file still generated**: overwritten (it is a
  generated file), with a warning naming it.
* **Hand-edited generated file no longer generated**: *kept*, with a conflict
  warning; it stays in the manifest with the sha256 gitops-render wrote, so
  the warning repeats until the operator deletes the file (or reverts the
  edit, after which it is pruned) or removes its manifest line to adopt it.
* **prune=False**: files no longer generated are left in place and stay in
  the manifest, so a later pruning run removes them.
* **keep**: paths left exactly as they are on disk (makejinja ``force =
  false``).  A kept path stays in the manifest only if it was there before
  (gitops-render never claims a file it did not write).
* **File <-> directory swaps** (a desired file where a directory is, or a
  desired directory where a file is) are refused at plan time with a
  :class:`WriteError`; nothing is applied.

Concurrency: callers hold :class:`gitops_render.lock.RepoLock` around
:func:`recover`, :func:`make_plan` and :func:`apply_plan`.

Secret files (``secret=True``) hold ciphertext only; contents are never
logged and never appear in reprs or messages.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import AbstractSet

from gitops_render.core.errors import DataError, PathEscapeError, WriteError
from gitops_render.core.fsio import (
    fsync_dirs,
    fsync_files,
    is_temp_name,
    lstat_or_none,
    temp_name_for,
)
from gitops_render.core.fsio import write_new_file as _write_file
from gitops_render.core.naming import STATE_DIR
from gitops_render.write.journal import (
    JOURNAL_FILE,
    Hook,
    Journal,
    Phase,
    Removal,
    Rename,
    ReplayResult,
    file_has_digest,
    roll_back,
    roll_forward,
)
from gitops_render.write.lock import RepoLock
from gitops_render.write.manifest import MANIFEST_FILE, Manifest, sha256_hex
from gitops_render.write.targets import (
    SafeTargets,
    check_output_root,
    is_within,
    normalize_rel,
    safe_target,
)

__all__ = [
    "DEFAULT_PROTECTED",
    "STATE_DIR",
    "ApplyResult",
    "ChangeKind",
    "DesiredFile",
    "Manifest",
    "Plan",
    "PlanWarning",
    "PlannedChange",
    "RepoLock",
    "WarningKind",
    "apply_plan",
    "load_manifest",
    "make_plan",
    "recover",
    "safe_target",
]

#: Output-relative paths gitops-render never writes into or prunes from.
DEFAULT_PROTECTED: frozenset[PurePosixPath] = frozenset({PurePosixPath(".git"), PurePosixPath(STATE_DIR)})


# --------------------------------------------------------------------------- plan data


@dataclass(frozen=True)
class DesiredFile:
    """One file the render wants on disk. ``content`` is never shown in reprs."""

    content: bytes = field(repr=False)
    mode: int | None = None
    secret: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.content, bytes):
            raise TypeError(f"DesiredFile.content must be bytes, not {type(self.content).__name__}")
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            raise ValueError(f"DesiredFile.mode {self.mode!r} is not a permission mode")


class ChangeKind(enum.Enum):
    """What applying a plan does to one path."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PlannedChange:
    """One path of a plan. ``content`` is set for ADDED/CHANGED only and never shown in reprs."""

    path: PurePosixPath
    kind: ChangeKind
    content: bytes | None = field(default=None, repr=False)
    mode: int | None = None
    secret: bool = False

    @property
    def digest(self) -> str | None:
        """sha256 hex of ``content`` (None when there is no content)."""
        return None if self.content is None else sha256_hex(self.content)


class WarningKind(enum.Enum):
    """Why a plan warns about a path."""

    EDITED_OVERWRITTEN = "edited-overwritten"  # generated, edited by hand, regenerated: overwritten
    EDITED_KEPT = "edited-kept"  # generated, edited by hand, no longer generated: kept (conflict)
    NOT_A_FILE = "not-a-file"  # generated earlier, now a directory/symlink/...: left alone
    PROTECTED = "protected"  # manifest lists a path under .git / the state dir: ignored
    PRUNE_DISABLED = "prune-disabled"  # no longer generated, kept because prune=False


@dataclass(frozen=True)
class PlanWarning:
    """Something the operator should know about a path; never holds file contents."""

    path: PurePosixPath
    kind: WarningKind
    message: str

    @property
    def is_conflict(self) -> bool:
        """True when the operator must decide what happens to the file."""
        return self.kind in (WarningKind.EDITED_KEPT, WarningKind.NOT_A_FILE)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Plan:
    """Everything applying would do to ``output_root``; ``manifest`` is the manifest after apply."""

    output_root: Path
    changes: tuple[PlannedChange, ...]
    manifest: Manifest
    previous_manifest: Manifest = field(default_factory=Manifest)
    warnings: tuple[PlanWarning, ...] = ()

    def _of(self, kind: ChangeKind) -> tuple[PlannedChange, ...]:
        return tuple(c for c in self.changes if c.kind is kind)

    @property
    def added(self) -> tuple[PlannedChange, ...]:
        """Files that do not exist yet."""
        return self._of(ChangeKind.ADDED)

    @property
    def changed(self) -> tuple[PlannedChange, ...]:
        """Files whose bytes or mode change."""
        return self._of(ChangeKind.CHANGED)

    @property
    def removed(self) -> tuple[PlannedChange, ...]:
        """Generated files no longer generated, to be pruned."""
        return self._of(ChangeKind.REMOVED)

    @property
    def unchanged(self) -> tuple[PlannedChange, ...]:
        """Files already as desired (not rewritten)."""
        return self._of(ChangeKind.UNCHANGED)

    @property
    def conflicts(self) -> tuple[PlanWarning, ...]:
        """Warnings that need an operator decision (files kept instead of pruned)."""
        return tuple(w for w in self.warnings if w.is_conflict)

    @property
    def is_noop(self) -> bool:
        """True when applying would change neither the tree nor the manifest."""
        return not (self.added or self.changed or self.removed) and self.manifest == self.previous_manifest

    def summary(self) -> str:
        """``"3 added, 1 changed, 2 removed, 40 unchanged"`` (+ kept conflicts when there are any)."""
        text = (f"{len(self.added)} added, {len(self.changed)} changed, "
                f"{len(self.removed)} removed, {len(self.unchanged)} unchanged")
        if self.conflicts:
            text += f", {len(self.conflicts)} kept (edited by hand)"
        return text


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply_plan` did (output-relative paths)."""

    written: tuple[PurePosixPath, ...] = ()
    removed: tuple[PurePosixPath, ...] = ()
    created_dirs: tuple[PurePosixPath, ...] = ()
    removed_dirs: tuple[PurePosixPath, ...] = ()
    manifest_written: bool = False
    warnings: tuple[PlanWarning, ...] = ()


# --------------------------------------------------------------------------- planning


def load_manifest(state_dir: Path) -> Manifest:
    """The manifest stored in ``state_dir`` (empty when there is none)."""
    return Manifest.load(Path(state_dir) / MANIFEST_FILE)


def _under(path: PurePosixPath, prefix: PurePosixPath) -> bool:
    """True when ``path`` is ``prefix`` or below it."""
    return path.parts[: len(prefix.parts)] == prefix.parts


def _check_desired_paths(paths: Iterable[PurePosixPath], protected: AbstractSet[PurePosixPath]) -> None:
    """Refuse protected targets, staging-like names and file/directory clashes inside the desired set."""
    ordered = sorted(paths, key=lambda p: p.parts)
    for path in ordered:
        for prefix in protected:
            if _under(path, prefix):
                raise PathEscapeError(f"output {path} would be written into {prefix}/, which gitops-render never touches",
                                      hint="rename the template (or its output path) that produces it")
        if any(is_temp_name(part) for part in path.parts):
            raise WriteError(f"output {path} has a name reserved for gitops-render's temporary files",
                             hint="rename the template that produces it")
    for first, second in zip(ordered, ordered[1:]):
        if _under(second, first):
            raise WriteError(f"the render wants both a file {first} and a file {second} below it",
                             hint="rename one of the two templates")


def _check_parents(root: Path, path: PurePosixPath, known_dirs: set[tuple[str, ...]] | None = None) -> None:
    """Every existing ancestor of ``path`` below the root must be a directory.

    ``known_dirs`` (one set per plan) remembers ancestors already found to be directories.
    """
    current = root
    parts = path.parts
    for depth, part in enumerate(parts[:-1], start=1):
        current = current / part
        if known_dirs is not None and parts[:depth] in known_dirs:
            continue
        try:
            st = os.stat(current)  # follows symlinks; safe_target already vetted them
        except (FileNotFoundError, NotADirectoryError):
            return
        if not stat.S_ISDIR(st.st_mode):
            raise WriteError(f"{current} is a file, but the render now puts {path} below it (needs a directory there)",
                             hint=f"move or delete {current} and run again; nothing was written")
        if known_dirs is not None:
            known_dirs.add(parts[:depth])


def _read_regular(target: Path, path: PurePosixPath, st: os.stat_result) -> bytes:
    """Bytes of an existing output; refuses directories and special files."""
    if stat.S_ISDIR(st.st_mode):
        raise WriteError(f"{target} is a directory, but the render now produces a file {path} there",
                         hint=f"move or delete the directory {target} and run again; nothing was written")
    if not stat.S_ISREG(st.st_mode):
        raise WriteError(f"{target} is not a regular file (a device, socket or pipe); gitops-render will not replace it",
                         hint=f"remove {target} and run again; nothing was written")
    return target.read_bytes()


def _plan_desired(root: Path, path: PurePosixPath, want: DesiredFile, previous: Manifest,
                  warnings: list[PlanWarning], targets: SafeTargets | None = None,
                  known_dirs: set[tuple[str, ...]] | None = None) -> PlannedChange:
    """Classify one desired file against the disk."""
    target = targets(path) if targets is not None else safe_target(root, path)
    _check_parents(root, path, known_dirs)
    st = lstat_or_none(target)
    if st is None:
        return PlannedChange(path, ChangeKind.ADDED, want.content, want.mode, want.secret)
    if stat.S_ISLNK(st.st_mode):  # a link inside the root: replaced by a real file
        return PlannedChange(path, ChangeKind.CHANGED, want.content, want.mode, want.secret)
    current = _read_regular(target, path, st)
    same_mode = want.mode is None or stat.S_IMODE(st.st_mode) == want.mode
    if current == want.content and same_mode:
        return PlannedChange(path, ChangeKind.UNCHANGED, None, want.mode, want.secret)
    recorded = previous.digest_of(path)
    if recorded is not None and current != want.content and sha256_hex(current) != recorded:
        warnings.append(PlanWarning(path, WarningKind.EDITED_OVERWRITTEN,
                                    "was edited by hand since gitops-render wrote it; the edit is overwritten "
                                    "(change the template or cluster.yaml instead)"))
    return PlannedChange(path, ChangeKind.CHANGED, want.content, want.mode, want.secret)


def _plan_stale(root: Path, path: PurePosixPath, recorded: str, prune: bool,
                protected: AbstractSet[PurePosixPath], warnings: list[PlanWarning]) -> tuple[PlannedChange | None, bool]:
    """Decide about a manifest entry that is no longer generated: (change or None, keep in manifest)."""
    if any(_under(path, prefix) for prefix in protected):
        warnings.append(PlanWarning(path, WarningKind.PROTECTED,
                                    "is listed in the manifest but lies in a protected directory; ignored"))
        return None, False
    target = safe_target(root, path)
    st = lstat_or_none(target)
    if st is None:
        return None, False  # already gone
    if not stat.S_ISREG(st.st_mode):
        warnings.append(PlanWarning(path, WarningKind.NOT_A_FILE,
                                    "was generated earlier but is no longer a regular file; left alone "
                                    "and dropped from the manifest"))
        return None, False
    if not prune:
        warnings.append(PlanWarning(path, WarningKind.PRUNE_DISABLED,
                                    "is no longer generated; kept because pruning is off"))
        return None, True
    if sha256_hex(target.read_bytes()) != recorded:
        warnings.append(PlanWarning(path, WarningKind.EDITED_KEPT,
                                    "is no longer generated but was edited by hand since gitops-render wrote it; "
                                    "kept. Delete it if the edit is not needed, or remove its line from "
                                    f"{STATE_DIR}/{MANIFEST_FILE} to keep it as your own file"))
        return None, True
    return PlannedChange(path, ChangeKind.REMOVED), False


def make_plan(
    output_root: Path,
    desired: Mapping[PurePosixPath, DesiredFile] | Mapping[str, DesiredFile],
    previous: Manifest,
    *,
    keep: AbstractSet[PurePosixPath] | AbstractSet[str] = frozenset(),
    prune: bool = True,
    protected: AbstractSet[PurePosixPath] = DEFAULT_PROTECTED,
    repo_root: Path | None = None,
) -> Plan:
    """Compare ``desired`` with the disk and ``previous`` manifest; nothing is written.

    Raises :class:`PathEscapeError` for unsafe paths and :class:`WriteError`
    for file/directory clashes, before anything is touched.  With
    ``repo_root`` the output root must resolve inside it.
    """
    root = Path(output_root)
    if repo_root is not None:
        check_output_root(root, repo_root)
    wanted: dict[PurePosixPath, DesiredFile] = {}
    for key, value in desired.items():
        path = normalize_rel(key)
        if path in wanted:
            raise WriteError(f"the render produces {path} twice", hint="rename one of the templates")
        wanted[path] = value
    kept = {normalize_rel(k) for k in keep}
    _check_desired_paths(wanted, protected)
    warnings: list[PlanWarning] = []
    changes: list[PlannedChange] = []
    files: dict[str, str] = {}
    targets = SafeTargets(root)
    known_dirs: set[tuple[str, ...]] = set()
    for path in sorted(wanted, key=lambda p: p.parts):
        if path in kept:
            continue
        change = _plan_desired(root, path, wanted[path], previous, warnings, targets, known_dirs)
        changes.append(change)
        files[path.as_posix()] = sha256_hex(wanted[path].content)
    for path in sorted(kept, key=lambda p: p.parts):
        target = safe_target(root, path)
        st = lstat_or_none(target)
        if st is not None and stat.S_ISREG(st.st_mode):
            changes.append(PlannedChange(path, ChangeKind.UNCHANGED, None, None, False))
            if path in previous:
                files[path.as_posix()] = sha256_hex(target.read_bytes())
        elif path in wanted:  # nothing to keep: write it like any other output
            changes.append(_plan_desired(root, path, wanted[path], previous, warnings))
            files[path.as_posix()] = sha256_hex(wanted[path].content)
    for path in previous.paths():
        if path in wanted or path in kept:
            continue
        stale, still_owned = _plan_stale(root, path, previous.files[path.as_posix()], prune, protected, warnings)
        if stale is not None:
            changes.append(stale)
        if still_owned:
            files[path.as_posix()] = previous.files[path.as_posix()]
    changes.sort(key=lambda c: c.path.parts)
    return Plan(root, tuple(changes), Manifest(files), previous, tuple(warnings))


# --------------------------------------------------------------------------- applying


def _missing_dirs(root: Path, paths: Iterable[PurePosixPath]) -> tuple[PurePosixPath, ...]:
    """Directories (output-relative, shallow -> deep; ``.`` = the root) that do not exist yet."""
    missing: set[PurePosixPath] = set()
    if lstat_or_none(root) is None:
        missing.add(PurePosixPath("."))
    seen: set[tuple[str, ...]] = set()
    for path in paths:
        for depth in range(1, len(path.parts)):
            prefix = path.parts[:depth]
            if prefix in seen:
                continue
            seen.add(prefix)
            if lstat_or_none(root.joinpath(*prefix)) is None:
                missing.add(PurePosixPath(*prefix))
    return tuple(sorted(missing, key=lambda p: (len(p.parts), p.parts)))  # "." has no parts: first


def _prune_dirs(paths: Iterable[PurePosixPath]) -> tuple[PurePosixPath, ...]:
    """Parent directories of removed files (never the root), deepest first."""
    dirs = {PurePosixPath(*p.parts[:depth]) for p in paths for depth in range(1, len(p.parts))}
    return tuple(sorted(dirs, key=lambda p: (-len(p.parts), p.parts)))


def _check_state_dir(plan: Plan, state_dir: Path) -> None:
    """The plan must not write or prune inside the state directory."""
    root_real, state_real = plan.output_root.resolve(), Path(state_dir).resolve()
    if not is_within(state_real, root_real):
        return
    rel = state_real.relative_to(root_real)
    if rel == Path("."):
        raise WriteError(f"the state directory {state_dir} is the output directory itself",
                         hint=f"keep gitops-render's state in a sub-directory such as {STATE_DIR}/")
    prefix = PurePosixPath(rel.as_posix())
    for change in plan.changes:
        if change.kind is not ChangeKind.UNCHANGED and _under(change.path, prefix):
            raise PathEscapeError(f"output {change.path} lies in the state directory {state_dir}",
                                  hint="rename the template (or its output path) that produces it")


def write_new_file(path: Path, data: bytes, mode: int | None) -> None:
    """Stage one file: create ``path`` exclusively and write ``data`` completely, without fsync.

    :func:`_stage` makes every staged file durable at once (concurrent fsyncs) before
    the journal reaches its ``apply`` phase. On failure the partial file is removed.
    """
    _write_file(path, data, mode, fsync=False)


#: Staging writes run in a thread pool above this many files (file creation releases the GIL
#: and the filesystem creates files in different directories in parallel).
STAGE_POOL_MIN = 16
_STAGE_THREADS = 8


def _write_staged(jobs: list[tuple[Path, bytes, int | None]], hook: Hook | None) -> None:
    """``write_new_file`` for every job; ``hook("staged", i)`` in index order after file ``i`` is written.

    Many files are written by a bounded thread pool. On the first failure nothing more
    is started, every write already started finishes, and that failure is raised (the
    caller's rollback then deletes every staged file).
    """
    if len(jobs) <= STAGE_POOL_MIN:
        for index, (tmp, content, mode) in enumerate(jobs):
            write_new_file(tmp, content, mode)
            if hook:
                hook("staged", index)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=_STAGE_THREADS, thread_name_prefix="stage")
    try:
        futures = [pool.submit(write_new_file, tmp, content, mode) for tmp, content, mode in jobs]
        for index, fut in enumerate(futures):
            try:
                fut.result()
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
            if hook:
                hook("staged", index)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stage(plan: Plan, journal: Journal, writes: tuple[PlannedChange, ...], state_dir: Path,
           manifest_bytes: bytes, hook: Hook | None) -> list[PurePosixPath]:
    """Create missing directories, write every staged file completely and make all of it durable.

    Returns the created directories. When this returns, every staged file, the staged
    manifest and the directory entries of all of them are on disk (fsynced).
    """
    root = plan.output_root
    targets = SafeTargets(root)
    created: list[PurePosixPath] = []
    for rel in journal.created_dirs:
        directory = root if rel == PurePosixPath(".") else targets(rel)
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not directory.is_dir():
                raise WriteError(f"{directory} appeared as a file while staging", hint="run again") from None
            continue
        created.append(rel)
    for removal in journal.removals:  # the plan is stale if a pruned file changed meanwhile
        if not file_has_digest(targets(removal.path), removal.sha256):
            raise WriteError(f"{removal.path} changed while gitops-render was running; nothing was written",
                             hint="run gitops-render again")
    jobs: list[tuple[Path, bytes, int | None]] = []
    for change, item in zip(writes, journal.renames):
        target = targets(change.path)
        st = lstat_or_none(target)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise WriteError(f"{target} became a directory while gitops-render was running; nothing was written",
                             hint="run gitops-render again")
        mode = change.mode
        if mode is None and st is not None and stat.S_ISREG(st.st_mode):
            mode = stat.S_IMODE(st.st_mode)
        assert change.content is not None
        jobs.append((target.parent / item.tmp.name, change.content, mode))  # beside the target: vetted dir
    _write_staged(jobs, hook)
    staged = [tmp for tmp, _, _ in jobs]
    if journal.manifest_tmp is not None:
        write_new_file(state_dir / journal.manifest_tmp, manifest_bytes, None)
        staged.append(state_dir / journal.manifest_tmp)
    fsync_files(staged)  # every staged byte durable ...
    parents = {tmp.parent for tmp in staged}
    parents |= {(root / rel).parent for rel in created}
    fsync_dirs(parents | {state_dir})  # ... and every staged name; only then may the journal say `apply`
    return created


def _rollback(journal: Journal, journal_path: Path, root: Path, state_dir: Path) -> None:
    """Undo staging after a failure before the point of no return (best effort)."""
    staging = journal.with_phase(Phase.STAGING)
    try:  # make sure no `apply` journal survives while the temps go away
        on_disk = Journal.load(journal_path)
        if on_disk is not None and on_disk.phase is Phase.APPLY:
            staging.save(journal_path)
    except (OSError, DataError):
        pass
    roll_back(staging, root, state_dir)
    try:
        os.unlink(journal_path)
    except OSError:
        pass


def _os_message(exc: OSError) -> str:
    """``strerror (filename)`` of an OSError, for operator messages."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _finish(journal: Journal, journal_path: Path, root: Path, state_dir: Path, hook: Hook | None) -> ReplayResult:
    """Roll a committed journal forward and delete it; keeps the journal on failure."""
    hint = "fix the cause and run gitops-render again: it completes this interrupted write first"
    try:
        result = roll_forward(journal, root, state_dir, hook)
    except OSError as exc:
        raise WriteError(f"applying the write plan stopped half-way: {_os_message(exc)}; "
                         f"the journal {journal_path} records what is left to do", hint=hint) from exc
    if result.problems:
        raise WriteError("the interrupted write cannot be completed:\n  " + "\n  ".join(result.problems),
                         hint=f"check `git status` in {root}, restore or re-render the files above, "
                              f"then delete {journal_path}")
    os.unlink(journal_path)
    try:  # the tree is complete; if this unlink is lost, recovery finds nothing left to do
        fsync_dirs([state_dir])
    except OSError:
        pass
    return result


def apply_plan(plan: Plan, state_dir: Path, *, hook: Hook | None = None) -> ApplyResult:
    """Apply ``plan``: stage, journal, rename/unlink/rmdir, write the manifest, drop the journal.

    Any failure before the journal reaches its ``apply`` phase removes every
    staged file and created directory and raises :class:`WriteError`; the
    tree is unchanged.  A failure after that raises :class:`WriteError` and
    keeps the journal for :func:`recover`.  ``hook`` is a test hook (see
    :data:`gitops_render.journal.Hook`); leave it None.
    """
    state_dir = Path(state_dir)
    root = plan.output_root
    journal_path = state_dir / JOURNAL_FILE
    _check_state_dir(plan, state_dir)
    if lstat_or_none(journal_path) is not None:
        raise WriteError(f"an interrupted gitops-render write is pending ({journal_path})",
                         hint="run gitops-render again: it completes the interrupted write first")
    writes = plan.added + plan.changed
    manifest_bytes = plan.manifest.dump()
    manifest_path = state_dir / MANIFEST_FILE
    manifest_current = manifest_path.read_bytes() if manifest_path.is_file() else None
    if not writes and not plan.removed and manifest_current == manifest_bytes:
        return ApplyResult(warnings=plan.warnings)
    previous = plan.previous_manifest
    journal = Journal(
        phase=Phase.STAGING,
        output_root=str(root.resolve()),
        created_dirs=_missing_dirs(root, (c.path for c in writes)),
        renames=tuple(Rename(c.path.parent / temp_name_for(c.path.name), c.path, sha256_hex(c.content or b""))
                      for c in writes),
        removals=tuple(Removal(c.path, previous.files[c.path.as_posix()]) for c in plan.removed),
        rmdirs=_prune_dirs(c.path for c in plan.removed),
        manifest_tmp=None if manifest_current == manifest_bytes else temp_name_for(MANIFEST_FILE),
        manifest_sha256=sha256_hex(manifest_bytes),
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        journal.save(journal_path)
        created = _stage(plan, journal, writes, state_dir, manifest_bytes, hook)
        journal.with_phase(Phase.APPLY).save(journal_path)
    except BaseException as exc:
        _rollback(journal, journal_path, root, state_dir)
        if isinstance(exc, OSError):
            raise WriteError(f"staging the output failed: {_os_message(exc)}; nothing was changed",
                             hint="fix the cause (disk full? permissions?) and run again") from exc
        raise
    if hook:
        hook("journal", 0)
    result = _finish(journal.with_phase(Phase.APPLY), journal_path, root, state_dir, hook)
    return ApplyResult(result.written, result.removed, tuple(created), result.removed_dirs,
                       result.manifest_written, plan.warnings)


# --------------------------------------------------------------------------- recovery


def _sweep_dirs(state_dir: Path, root: Path, journal: Journal | None) -> set[Path]:
    """Directories that may hold stale staged files: state dir, root, manifest and journal parents."""
    rels: set[PurePosixPath] = set()
    try:
        rels |= {p.parent for p in load_manifest(state_dir).paths()}
    except DataError:
        pass  # planning reports a broken manifest; sweeping is best effort
    if journal is not None:
        rels |= {r.target.parent for r in journal.renames}
    dirs = {Path(state_dir), root}
    for rel in rels:
        if rel == PurePosixPath("."):
            continue
        try:
            dirs.add(safe_target(root, rel))
        except PathEscapeError:
            continue
    return dirs


def _sweep(dirs: Iterable[Path]) -> bool:
    """Delete regular files with a staging name in ``dirs``; True if any were deleted."""
    found = False
    for directory in dirs:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    found = True
                except FileNotFoundError:
                    pass
    return found


def recover(state_dir: Path, output_root: Path) -> bool:
    """Resolve an interrupted apply; True when anything was recovered or cleaned up.

    An ``apply``-phase journal is rolled forward (the tree reaches the new
    state); a ``staging``-phase journal is rolled back (the tree was never
    touched).  Stale staged temp files in the state dir, the output root and
    the manifest's directories are deleted.  Call it with the
    :class:`RepoLock` held: it deletes staged files of a concurrent run.
    """
    state_dir, root = Path(state_dir), Path(output_root)
    journal_path = state_dir / JOURNAL_FILE
    journal = Journal.load(journal_path)
    recovered = False
    if journal is not None:
        if journal.output_root != str(root.resolve()):
            raise WriteError(f"the interrupted write in {journal_path} was for {journal.output_root}, "
                             f"not {root.resolve()}",
                             hint="run gitops-render from the original location to complete it, "
                                  "or delete the journal after checking `git status`")
        if journal.phase is Phase.STAGING:
            roll_back(journal, root, state_dir)
            os.unlink(journal_path)
        else:
            _finish(journal, journal_path, root, state_dir, None)
        recovered = True
    swept = _sweep(_sweep_dirs(state_dir, root, journal))
    return recovered or swept

