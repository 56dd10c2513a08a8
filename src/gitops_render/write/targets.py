"""Path safety of the write stage: no output path leaves the output root.

Every output path gitops-render writes, replaces or deletes goes through
:func:`safe_target`, which refuses paths that could leave the output root:
absolute paths, ``..`` components, NUL bytes, and existing path components
inside the root that are symlinks resolving outside it, or into ``.git`` or
the state directory.  The output root
itself is trusted as given unless ``repo_root`` is passed: then the *resolved*
output root must lie inside the resolved repository root, so a symlinked
output directory cannot lead writes out of the repository.

>>> normalize_rel("kubernetes/./apps/x.yaml")
PurePosixPath('kubernetes/apps/x.yaml')
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from gitops_render.core.errors import PathEscapeError
from gitops_render.core.fsio import lstat_or_none
from gitops_render.core.naming import STATE_DIR

__all__ = ["SafeTargets", "check_output_root", "is_within", "normalize_rel", "safe_target"]

#: Directories below the output and repository roots that no symlink may lead writes into.
_NEVER_INTO = (".git", STATE_DIR)


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
    symlink must resolve inside the resolved output root, and never into ``.git``
    or the state directory (of the output root or of ``repo_root``).  Components
    that do not exist yet end the check (they are created as real directories).
    With ``repo_root``, the output root itself must resolve inside it.
    The returned path is lexical (``output_root / rel``), not resolved.
    """
    return SafeTargets(output_root, repo_root=repo_root)(rel)


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
        bases = {self.root_real} | ({_resolve(Path(repo_root))} if repo_root is not None else set())
        #: resolved directories no symlink may lead into (git's own files, gitops-render's state)
        self.forbidden = tuple(sorted(base / name for base in bases for name in _NEVER_INTO))
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
                self._check_link(Path(current))
            if i < last:
                self._checked.add(parts[: i + 1])
        return self.root / path

    def _check_link(self, link: Path) -> None:
        """A symlink component must stay in the output root and out of ``.git`` and the state dir."""
        real = _resolve(link)
        if not is_within(real, self.root_real):
            raise PathEscapeError(
                f"{link} is a symlink to {real}, outside the output directory {self.root_real}; "
                f"gitops-render will not write through it",
                hint=f"replace the symlink {link} with a real directory or file")
        for never in self.forbidden:
            if is_within(real, never):
                raise PathEscapeError(
                    f"{link} is a symlink to {real}, inside {never.name}/; "
                    f"gitops-render never writes, replaces or deletes anything there",
                    hint=f"replace the symlink {link} with a real directory or file")
