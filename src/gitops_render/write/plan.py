"""The write plan: compare what the render wants with the disk and the manifest; nothing is written.

Decisions
---------
* **Modes.** ``DesiredFile.mode`` given: the file gets exactly that mode (a
  mode-only difference is a CHANGED file).  ``mode`` None: an existing file
  keeps its mode, a new file gets ``0o666 & ~umask``.  Secrets get no special
  mode: they hold ciphertext only, and git does not record modes anyway.
  ``dir_modes`` (``copy_metadata``, as makejinja) are set on the output
  directories that mirror a template directory.
* **Hand-edited generated file still generated**: overwritten (it is a
  generated file), with a warning naming it.
* **A file gitops-render never wrote at a generated path** (not in the
  manifest, different bytes): a warning of kind ``UNOWNED_OVERWRITTEN``;
  :func:`gitops_render.write.guard.check_plan` refuses to apply such a plan unless the operator confirmed
  it (``--yes`` or the interactive question).
* **Hand-edited generated file no longer generated**: *kept*, with a conflict
  warning; it stays in the manifest with the sha256 gitops-render wrote, so
  the warning repeats until the operator deletes the file (or reverts the
  edit, after which it is pruned) or removes its manifest line to adopt it.
* **Never pruned**, whatever the manifest says: anything under ``.git`` or the
  state directory, anything a symlink leads into them, an input of the run
  (:class:`Inputs`: settings, data, schema, templates, plugin code), and a file
  whose bytes do not hash to its manifest entry.
* **prune=False**: files no longer generated are left in place and stay in
  the manifest, so a later pruning run removes them.
* **keep**: paths left exactly as they are on disk (makejinja ``force =
  false``).  A kept path stays in the manifest only if it was there before
  (gitops-render never claims a file it did not write).
* **File <-> directory swaps** (a desired file where a directory is, or a
  desired directory where a file is) are refused at plan time with a
  :class:`WriteError`; nothing is applied.
* **Mass deletion.** :func:`gitops_render.write.guard.check_plan` refuses a plan that prunes every
  generated file, or more than half of them, or renders nothing while the
  manifest lists files, unless the operator confirmed it (``--allow-mass-prune``).

Secret files (``secret=True``) hold ciphertext only; contents are never
logged and never appear in reprs or messages.
"""

from __future__ import annotations

import enum
import itertools
import os
import stat
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from gitops_render.core.errors import PathEscapeError, WriteError
from gitops_render.core.fsio import is_temp_name, lstat_or_none, os_message, read_regular
from gitops_render.core.naming import STATE_DIR
from gitops_render.write.manifest import MANIFEST_FILE, Manifest, sha256_hex
from gitops_render.write.targets import SafeTargets, check_output_root, normalize_rel

__all__ = [
    "DEFAULT_PROTECTED",
    "ApplyResult",
    "ChangeKind",
    "DesiredFile",
    "Inputs",
    "Plan",
    "PlanWarning",
    "PlannedChange",
    "WarningKind",
    "load_manifest",
    "make_plan",
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
    UNOWNED_OVERWRITTEN = "unowned-overwritten"  # never generated, exists at a generated path: needs a yes
    INPUT = "input"  # manifest lists an input of the run (template, data, settings...): never pruned
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
    #: output directories whose mode must be set (``copy_metadata``): created or differing now
    dir_modes: tuple[tuple[PurePosixPath, int], ...] = ()

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
        return (not (self.added or self.changed or self.removed or self.dir_modes)
                and self.manifest == self.previous_manifest)

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


@dataclass(frozen=True)
class Inputs:
    """What a run reads (resolved paths): never pruned, whatever the manifest says.

    ``paths`` are files or directories (everything below a directory is an input);
    ``code_dirs`` are plugin import paths, where only Python files count (an import
    path may well be the repository root).
    """

    paths: frozenset[Path] = frozenset()
    code_dirs: frozenset[Path] = frozenset()

    @classmethod
    def of(cls, paths: Iterable[Path | None], code_dirs: Iterable[Path] = ()) -> Inputs:
        """Resolve the given paths (None entries are skipped)."""
        return cls(frozenset(Path(p).resolve() for p in paths if p is not None),
                   frozenset(Path(p).resolve() for p in code_dirs))

    def holds(self, path: Path) -> bool:
        """True when ``path`` (resolved here) is an input or lies below an input directory."""
        real = path.resolve()
        if any(real == p or real.is_relative_to(p) for p in self.paths):
            return True
        return real.suffix == ".py" and any(real.is_relative_to(d) for d in self.code_dirs)


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
                raise PathEscapeError(f"output {path} would be written into {prefix}/, "
                                      "which gitops-render never touches",
                                      hint="rename the template (or its output path) that produces it")
        if any(is_temp_name(part) for part in path.parts):
            raise WriteError(f"output {path} has a name reserved for gitops-render's temporary files",
                             hint="rename the template that produces it")
    for first, second in itertools.pairwise(ordered):
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
        raise WriteError(f"{target} is not a regular file (a device, socket or pipe); "
                         "gitops-render will not replace it",
                         hint=f"remove {target} and run again; nothing was written")
    return _read_output(target)


def _read_output(target: Path) -> bytes:
    """Bytes of an existing output; an unreadable one is an operator error (exit 2), not a crash."""
    try:
        return read_regular(target)
    except OSError as exc:
        raise WriteError(f"cannot read the existing output {target}: {os_message(exc)}",
                         hint=f"fix the permissions of {target} (or remove it) and run again; "
                              "nothing was written") from None


def _plan_desired(root: Path, path: PurePosixPath, want: DesiredFile, previous: Manifest,
                  warnings: list[PlanWarning], targets: SafeTargets,
                  known_dirs: set[tuple[str, ...]] | None = None) -> PlannedChange:
    """Classify one desired file against the disk."""
    target = targets(path)
    _check_parents(root, path, known_dirs)
    st = lstat_or_none(target)
    if st is None:
        return PlannedChange(path, ChangeKind.ADDED, want.content, want.mode, want.secret)
    recorded = previous.digest_of(path)
    if stat.S_ISLNK(st.st_mode):  # a link inside the root: replaced by a real file
        if recorded is None:
            warnings.append(_unowned(path, "a symlink"))
        return PlannedChange(path, ChangeKind.CHANGED, want.content, want.mode, want.secret)
    current = _read_regular(target, path, st)
    same_mode = want.mode is None or stat.S_IMODE(st.st_mode) == want.mode
    if current == want.content and same_mode:
        return PlannedChange(path, ChangeKind.UNCHANGED, None, want.mode, want.secret)
    if recorded is None and current != want.content:
        warnings.append(_unowned(path, "a file"))
    elif recorded is not None and current != want.content and sha256_hex(current) != recorded:
        warnings.append(PlanWarning(path, WarningKind.EDITED_OVERWRITTEN,
                                    "was edited by hand since gitops-render wrote it; the edit is overwritten "
                                    "(change the template or cluster.yaml instead)"))
    return PlannedChange(path, ChangeKind.CHANGED, want.content, want.mode, want.secret)


def _unowned(path: PurePosixPath, what: str) -> PlanWarning:
    return PlanWarning(path, WarningKind.UNOWNED_OVERWRITTEN,
                       f"is {what} gitops-render did not write (it is not in {STATE_DIR}/{MANIFEST_FILE}); "
                       "the render now generates this path and would overwrite it")


def _plan_stale(targets: SafeTargets, path: PurePosixPath, recorded: str, prune: bool,
                protected: AbstractSet[PurePosixPath], inputs: Inputs,
                warnings: list[PlanWarning]) -> tuple[PlannedChange | None, bool]:
    """Decide about a manifest entry that is no longer generated: (change or None, keep in manifest)."""
    if any(_under(path, prefix) for prefix in protected):
        warnings.append(PlanWarning(path, WarningKind.PROTECTED,
                                    "is listed in the manifest but lies in a protected directory; ignored"))
        return None, False
    target = targets(path)
    st = lstat_or_none(target)
    if st is None:
        return None, False  # already gone
    if not stat.S_ISREG(st.st_mode):
        warnings.append(PlanWarning(path, WarningKind.NOT_A_FILE,
                                    "was generated earlier but is no longer a regular file; left alone "
                                    "and dropped from the manifest"))
        return None, False
    if inputs.holds(target):
        warnings.append(PlanWarning(path, WarningKind.INPUT,
                                    "is listed in the manifest but is an input of this run (settings, data, "
                                    "schema, template or plugin); never pruned, dropped from the manifest"))
        return None, False
    if not prune:
        warnings.append(PlanWarning(path, WarningKind.PRUNE_DISABLED,
                                    "is no longer generated; kept because pruning is off"))
        return None, True
    if sha256_hex(_read_output(target)) != recorded:
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
    inputs: Inputs = Inputs(),
    dir_modes: Mapping[PurePosixPath, int] = MappingProxyType({}),
) -> Plan:
    """Compare ``desired`` with the disk and ``previous`` manifest; nothing is written.

    Raises :class:`PathEscapeError` for unsafe paths and :class:`WriteError`
    for file/directory clashes, before anything is touched.  With
    ``repo_root`` the output root must resolve inside it.  ``inputs`` are never
    pruned; ``dir_modes`` are the modes output directories get (``copy_metadata``).
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
    targets = SafeTargets(root, repo_root=repo_root)
    known_dirs: set[tuple[str, ...]] = set()
    for path in sorted(wanted, key=lambda p: p.parts):
        if path in kept:
            continue
        change = _plan_desired(root, path, wanted[path], previous, warnings, targets, known_dirs)
        changes.append(change)
        files[path.as_posix()] = sha256_hex(wanted[path].content)
    for path in sorted(kept, key=lambda p: p.parts):
        target = targets(path)
        st = lstat_or_none(target)
        if st is not None and stat.S_ISREG(st.st_mode):
            changes.append(PlannedChange(path, ChangeKind.UNCHANGED, None, None, False))
            if path in previous:
                files[path.as_posix()] = sha256_hex(_read_output(target))
        elif path in wanted:  # nothing to keep: write it like any other output
            changes.append(_plan_desired(root, path, wanted[path], previous, warnings, targets))
            files[path.as_posix()] = sha256_hex(wanted[path].content)
    for path in previous.paths():
        if path in wanted or path in kept:
            continue
        stale, still_owned = _plan_stale(targets, path, previous.files[path.as_posix()], prune, protected,
                                         inputs, warnings)
        if stale is not None:
            changes.append(stale)
        if still_owned:
            files[path.as_posix()] = previous.files[path.as_posix()]
    changes.sort(key=lambda c: c.path.parts)
    modes = _dir_modes(targets, dir_modes, protected)
    return Plan(root, tuple(changes), Manifest(files), previous, tuple(warnings), modes)


def _dir_modes(targets: SafeTargets, wanted: Mapping[PurePosixPath, int],
               protected: AbstractSet[PurePosixPath]) -> tuple[tuple[PurePosixPath, int], ...]:
    """The directories whose mode must be set: missing ones, and existing ones with another mode."""
    out: list[tuple[PurePosixPath, int]] = []
    for rel, mode in sorted(wanted.items(), key=lambda item: item[0].parts):
        path = normalize_rel(rel)
        if any(_under(path, prefix) for prefix in protected):
            continue
        st = lstat_or_none(targets(path))
        if st is None or (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != mode):
            out.append((path, stat.S_IMODE(mode)))
    return tuple(out)
