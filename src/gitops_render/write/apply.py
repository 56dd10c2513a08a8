"""The write stage's apply: stage, journal, atomic apply with undo, manifest, recovery.

Guarantees
----------
* Staging never touches the output tree: every new file is written completely into
  the state directory (hidden staging names), fsynced, and only then renamed into
  place. A failure or a kill before the apply step leaves the output tree byte for
  byte as it was, with nothing in it that a commit could pick up.
* Every file is replaced atomically (``os.replace`` from the state directory, which
  must be on the output tree's filesystem); unchanged files are not rewritten (their
  mtime and inode are kept).
* A failure *during* the apply step (a rename refused, a full disk) puts the old
  tree back from the backups the apply kept, and says so: the tree is all-old or
  all-new. Only when even that fails does the journal stay, and the error (exit 3)
  says that the tree is partly written and the next run completes it.
* A crash during the short apply step is completed by the next run's
  :func:`recover` from ``<state_dir>/journal.json``, which validates every entry
  (see :mod:`gitops_render.write.journal`).
* Files gitops-render generated earlier (listed in the manifest) but no longer
  generates are pruned, and directories left empty by that are removed
  (see :mod:`gitops_render.write.plan` for what is never pruned).
* No path leaves the output root (see :mod:`gitops_render.write.targets`); ``.git``
  and the state directory (``.gitops-render``) are never written or pruned.

Concurrency: callers hold :class:`gitops_render.write.lock.RepoLock` around
:func:`recover`, :func:`make_plan` and :func:`apply_plan`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from gitops_render.core.errors import DataError, PathEscapeError, WriteError
from gitops_render.core.fsio import (
    fsync_dirs,
    fsync_files,
    is_temp_name,
    lstat_or_none,
    os_message,
    read_regular,
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
    Undo,
    file_has_digest,
    roll_back,
    roll_forward,
)
from gitops_render.write.manifest import MANIFEST_FILE, Manifest, sha256_hex
from gitops_render.write.plan import (
    ApplyResult,
    ChangeKind,
    Plan,
    PlannedChange,
    _under,
    load_manifest,
)
from gitops_render.write.state import GITIGNORE, GITIGNORE_TEXT, check_state_dir
from gitops_render.write.targets import SafeTargets, is_within

__all__ = ["IncompleteWriteError", "apply_plan", "recover", "write_new_file"]


class IncompleteWriteError(WriteError):
    """The apply step stopped with the tree partly written; the journal records what is left (exit 3)."""

    exit_code = 3


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
    """The state directory must be real, and the plan must not write or prune inside it."""
    check_state_dir(state_dir)
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


def _check_same_filesystem(root: Path, state_dir: Path, rels: Iterable[PurePosixPath]) -> None:
    """Staged files are renamed from the state dir: every target directory must be on its filesystem."""
    state_dev = os.stat(state_dir).st_dev
    seen: dict[Path, int] = {}
    for rel in rels:
        directory = (root / rel).parent
        while lstat_or_none(directory) is None and directory != directory.parent:
            directory = directory.parent
        if directory not in seen:
            seen[directory] = os.stat(directory).st_dev
        if seen[directory] != state_dev:
            raise WriteError(f"{directory} is on another filesystem than the state directory {state_dir}: "
                             "gitops-render stages every file there and renames it into place",
                             hint="keep the output directory on the repository's filesystem; nothing was written")


def write_new_file(path: Path, data: bytes, mode: int | None) -> None:
    """Stage one file: create ``path`` exclusively and write ``data`` completely, without fsync.

    :func:`_stage` makes every staged file durable at once (concurrent fsyncs) before
    the journal reaches its ``apply`` phase. On failure the partial file is removed.
    """
    _write_file(path, data, mode, fsync=False)


#: Staging writes run in a thread pool above this many files (file creation releases the GIL).
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
           manifest_bytes: bytes, hook: Hook | None) -> None:
    """Write every staged file completely into the state directory and make it durable.

    The output tree is only read. When this returns, every staged file, the staged
    manifest and their directory entries are on disk (fsynced).
    """
    targets = SafeTargets(plan.output_root)
    for removal in journal.removals:  # the plan is stale if a pruned file changed meanwhile
        if not file_has_digest(targets(removal.path), removal.sha256):
            raise WriteError(f"{removal.path} changed while gitops-render was running; nothing was written",
                             hint="run gitops-render again")
    jobs: list[tuple[Path, bytes, int | None]] = []
    for change, item in zip(writes, journal.renames, strict=True):
        target = targets(change.path)
        st = lstat_or_none(target)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise WriteError(f"{target} became a directory while gitops-render was running; nothing was written",
                             hint="run gitops-render again")
        mode = change.mode
        if mode is None and st is not None and stat.S_ISREG(st.st_mode):
            mode = stat.S_IMODE(st.st_mode)
        assert change.content is not None
        jobs.append((state_dir / item.tmp.name, change.content, mode))
    _write_staged(jobs, hook)
    staged = [tmp for tmp, _, _ in jobs]
    if journal.manifest_tmp is not None:
        write_new_file(state_dir / journal.manifest_tmp, manifest_bytes, None)
        staged.append(state_dir / journal.manifest_tmp)
    fsync_files(staged)  # every staged byte durable ...
    fsync_dirs([state_dir])  # ... and every staged name; only then may the journal say `apply`


def _rollback(journal: Journal, journal_path: Path, state_dir: Path) -> None:
    """Undo staging after a failure before the point of no return (best effort)."""
    staging = journal.with_phase(Phase.STAGING)
    try:  # make sure no `apply` journal survives while the staged files go away
        on_disk = Journal.load(journal_path)
        if on_disk is not None and on_disk.phase is Phase.APPLY:
            staging.save(journal_path)
    except (OSError, DataError):
        pass
    roll_back(staging, state_dir)
    try:
        os.unlink(journal_path)
    except OSError:
        pass


def _finish(journal: Journal, journal_path: Path, root: Path, state_dir: Path, hook: Hook | None, *,
            undo: Undo | None = None, owned: Manifest | None = None,
            may_remove: Callable[[Path], bool] | None = None) -> ReplayResult:
    """Roll a committed journal forward and delete it.

    With ``undo`` (the in-process apply) a failure puts the old tree back and raises
    :class:`WriteError` (nothing changed); without it, or when undoing fails, the
    journal stays and :class:`IncompleteWriteError` says the tree is partly written.
    """
    hint = "fix the cause and run gitops-render again: it completes this interrupted write first"
    try:
        result = roll_forward(journal, root, state_dir, hook, undo=undo, owned=owned, may_remove=may_remove)
    except OSError as exc:
        if undo is not None and _undo(undo, journal, journal_path, state_dir):
            raise WriteError(f"applying the write plan failed: {os_message(exc)}; every change was undone, "
                             "nothing was changed",
                             hint="fix the cause (disk full? permissions?) and run again") from exc
        raise IncompleteWriteError(f"applying the write plan stopped half-way: {os_message(exc)}; the tree is "
                                   f"partly written and the journal {journal_path} records what is left to do",
                                   hint=hint) from exc
    if result.problems:
        raise IncompleteWriteError("the interrupted write cannot be completed:\n  " + "\n  ".join(result.problems),
                                   hint=f"check `git status` in {root}, restore or re-render the files above, "
                                        f"then delete {journal_path}")
    os.unlink(journal_path)
    try:  # the tree is complete; if this unlink is lost, recovery finds nothing left to do
        fsync_dirs([state_dir])
    except OSError:
        pass
    if undo is not None:
        undo.drop_backups()
    return result


def _undo(undo: Undo, journal: Journal, journal_path: Path, state_dir: Path) -> bool:
    """Put the old tree back after a failed in-process apply; True when it worked (journal gone)."""
    touched = {step.path.parent for step in undo.steps} | {state_dir}
    try:
        undo.undo()
        fsync_dirs(d for d in touched if lstat_or_none(d) is not None)
    except OSError:
        return False
    _rollback(journal, journal_path, state_dir)
    undo.drop_backups()
    return True


def _ensure_gitignore(state_dir: Path) -> None:
    if lstat_or_none(state_dir / GITIGNORE) is None:
        _write_file(state_dir / GITIGNORE, GITIGNORE_TEXT, None)


def _current_manifest(state_dir: Path) -> bytes | None:
    """The manifest's bytes on disk (never through a symlink); None when there is none."""
    try:
        return read_regular(state_dir / MANIFEST_FILE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WriteError(f"cannot read the manifest: {os_message(exc)}",
                         hint="make it a readable regular file and run again; nothing was written") from None


def apply_plan(plan: Plan, state_dir: Path, *, hook: Hook | None = None) -> ApplyResult:
    """Apply ``plan``: stage, journal, rename/unlink/rmdir, write the manifest, drop the journal.

    Any failure before the journal reaches its ``apply`` phase removes every
    staged file and raises :class:`WriteError`; the tree is unchanged. A failure
    after that is undone when possible (:class:`WriteError`, tree unchanged), else
    :class:`IncompleteWriteError` keeps the journal for :func:`recover`.
    ``hook`` is a test hook (see :data:`gitops_render.write.journal.Hook`); leave it None.
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
    manifest_current = _current_manifest(state_dir)
    if not writes and not plan.removed and not plan.dir_modes and manifest_current == manifest_bytes:
        return ApplyResult(warnings=plan.warnings)
    previous = plan.previous_manifest
    journal = Journal(
        phase=Phase.STAGING,
        output_root=str(root.resolve()),
        created_dirs=_missing_dirs(root, (c.path for c in writes)),
        renames=tuple(Rename(PurePosixPath(temp_name_for(c.path.name)), c.path, sha256_hex(c.content or b""))
                      for c in writes),
        removals=tuple(Removal(c.path, previous.files[c.path.as_posix()]) for c in plan.removed),
        rmdirs=_prune_dirs(c.path for c in plan.removed),
        manifest_tmp=None if manifest_current == manifest_bytes else temp_name_for(MANIFEST_FILE),
        manifest_sha256=sha256_hex(manifest_bytes),
        dir_modes=plan.dir_modes,
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        _ensure_gitignore(state_dir)
        _check_same_filesystem(root, state_dir, [c.path for c in writes + plan.removed])
        journal.save(journal_path)
        _stage(plan, journal, writes, state_dir, manifest_bytes, hook)
        journal.with_phase(Phase.APPLY).save(journal_path)
    except BaseException as exc:
        _rollback(journal, journal_path, state_dir)
        if isinstance(exc, OSError):
            raise WriteError(f"staging the output failed: {os_message(exc)}; nothing was changed",
                             hint="fix the cause (disk full? permissions?) and run again") from exc
        raise
    if hook:
        hook("journal", 0)
    result = _finish(journal.with_phase(Phase.APPLY), journal_path, root, state_dir, hook, undo=Undo(state_dir))
    return ApplyResult(result.written, result.removed, journal.created_dirs, result.removed_dirs,
                       result.manifest_written, plan.warnings)


# --------------------------------------------------------------------------- recovery


def _sweep(state_dir: Path) -> bool:
    """Delete regular files with an exact staging name in the state directory; True if any were deleted.

    Staged files and apply backups live there only, so the output tree is never swept:
    a hand-written file with a staging-like name in the tree is never deleted.
    """
    found = False
    try:
        entries = list(os.scandir(state_dir))
    except (FileNotFoundError, NotADirectoryError):
        return False
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                found = True
            except FileNotFoundError:
                pass
    return found


def recover(state_dir: Path, output_root: Path, *, may_remove: Callable[[Path], bool] | None = None) -> bool:
    """Resolve an interrupted apply; True when anything was recovered or cleaned up.

    An ``apply``-phase journal is rolled forward (the tree reaches the new
    state); a ``staging``-phase journal is rolled back (the tree was never
    touched).  Stale staged files and backups in the state directory are deleted.
    A journal's removal is done only for a file the manifest on disk lists with
    the same sha256 and that ``may_remove`` accepts (the app passes "not an input
    of the run"). Call it with the :class:`RepoLock` held.
    """
    state_dir, root = Path(state_dir), Path(output_root)
    check_state_dir(state_dir)
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
            roll_back(journal, state_dir)
            os.unlink(journal_path)
        else:
            _finish(journal, journal_path, root, state_dir, None, owned=load_manifest(state_dir),
                    may_remove=may_remove)
        recovered = True
    swept = _sweep(state_dir)
    return recovered or swept
