"""Unified diffs of what configure would change, with secret values masked.

Secrets are diffed on their decrypted content with every value replaced by
``***`` (a changed value shows as ``*** (changed)``) except what the committed
ciphertext shows in clear anyway (masking by structure: whatever keys the
creation rule encrypts), so a reviewer sees which keys changed without seeing values.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gitops_render.core import mask as mask_mod
from gitops_render.core.naming import is_secret_path
from gitops_render.write import ChangeKind, Plan

__all__ = ["FileDiff", "colorize", "plan_diffs"]


@dataclass(frozen=True)
class FileDiff:
    """The diff of one file (``text`` is a unified diff, already masked for secrets)."""

    path: PurePosixPath
    kind: ChangeKind
    text: str


def _lines(data: bytes | None) -> list[str]:
    if data is None:
        return []
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return [f"<binary file, {len(data)} bytes>\n"]


def plan_diffs(
    plan: Plan,
    output_root: Path,
    *,
    secret_plaintexts: dict[PurePosixPath, bytes],
    decrypt: Callable[[Path], bytes] | None,
    sensitive_values: Iterable[str] = (),
) -> Iterator[FileDiff]:
    """Yield a :class:`FileDiff` per added/changed/removed file of ``plan``."""
    values = list(sensitive_values)
    for change in plan.changes:
        if change.kind is ChangeKind.UNCHANGED:
            continue
        target = output_root / change.path
        old = target.read_bytes() if target.is_file() else None
        new = change.content if change.kind is not ChangeKind.REMOVED else None
        if change.secret or is_secret_path(change.path):  # *.sops.* but not .sops.yaml itself
            old_plain = None
            if old is not None and decrypt is not None:
                try:
                    old_plain = decrypt(target)
                except Exception:
                    old_plain = b"<encrypted; cannot decrypt with the available key>\n"
            new_plain = secret_plaintexts.get(change.path) if new is not None else None
            old_text, new_text = mask_mod.mask_secret_pair(
                old_plain.decode("utf-8", "replace") if old_plain is not None else None,
                new_plain.decode("utf-8", "replace") if new_plain is not None else None,
                # by structure: only what the committed ciphertext shows in clear is shown
                old_public=old.decode("utf-8", "replace") if old is not None else None,
                new_public=new.decode("utf-8", "replace") if new is not None else "",
            )
            a = old_text.splitlines(keepends=True) if old_text is not None else []
            b = new_text.splitlines(keepends=True) if new_text is not None else []
            if a == b and change.kind is ChangeKind.CHANGED:
                b = [*b, "# (re-encrypted: recipients changed)\n"]
        else:
            a, b = _lines(old), _lines(new)
        text = "".join(difflib.unified_diff(a, b, f"a/{change.path}", f"b/{change.path}"))
        yield FileDiff(change.path, change.kind, mask_mod.mask(text, values))


def colorize(text: str) -> str:
    """ANSI colours for a unified diff (for terminals)."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith(("+++", "---")):
            out.append(f"\x1b[1m{line.rstrip(chr(10))}\x1b[0m\n")
        elif line.startswith("+"):
            out.append(f"\x1b[32m{line.rstrip(chr(10))}\x1b[0m\n")
        elif line.startswith("-"):
            out.append(f"\x1b[31m{line.rstrip(chr(10))}\x1b[0m\n")
        elif line.startswith("@@"):
            out.append(f"\x1b[36m{line.rstrip(chr(10))}\x1b[0m\n")
        else:
            out.append(line)
    return "".join(out)
