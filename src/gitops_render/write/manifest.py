"""The manifest: every file gitops-render generated, with the sha256 of the bytes it wrote.

The manifest lives at ``<state_dir>/manifest.json`` and is committed with the
operator's repository, so its text is deterministic: sorted keys, two-space
indent, one file per line (merges well), newline-terminated, no timestamps.

>>> m = Manifest({"b.yaml": sha256_hex(b"b"), "a.yaml": sha256_hex(b"a")})
>>> list(m.files)
['a.yaml', 'b.yaml']
>>> Manifest.parse(m.dump(), "manifest.json") == m
True
>>> m.dump().endswith(b"}\\n")
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from gitops_render.core.errors import DataError, PathEscapeError
from gitops_render.core.fsio import os_message, read_regular
from gitops_render.write.targets import normalize_rel

__all__ = ["GENERATOR", "MANIFEST_FILE", "MANIFEST_VERSION", "Manifest", "sha256_hex"]

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
GENERATOR = "gitops-render"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """Generated files: output-relative POSIX path -> sha256 hex of the bytes written.

    Keys are validated (relative, no ``..``) and stored sorted in a read-only mapping.
    """

    files: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, str] = {}
        for rel, digest in self.files.items():
            key = normalize_rel(rel).as_posix()
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ValueError(f"manifest entry {key}: {digest!r} is not a sha256 hex digest")
            clean[key] = digest
        object.__setattr__(self, "files", MappingProxyType(dict(sorted(clean.items()))))

    def __repr__(self) -> str:
        return f"Manifest(<{len(self.files)} files>)"

    def __hash__(self) -> int:
        return hash(tuple(self.files.items()))

    def __contains__(self, rel: object) -> bool:
        key = rel.as_posix() if isinstance(rel, PurePosixPath) else rel
        return key in self.files

    def digest_of(self, rel: PurePosixPath | str) -> str | None:
        """The recorded sha256 of ``rel`` or None when it is not in the manifest."""
        key = rel.as_posix() if isinstance(rel, PurePosixPath) else rel
        return self.files.get(key)

    def paths(self) -> tuple[PurePosixPath, ...]:
        """The recorded paths, sorted."""
        return tuple(PurePosixPath(k) for k in self.files)

    def dump(self) -> bytes:
        """Deterministic JSON text of the manifest (UTF-8, newline-terminated)."""
        doc = {"generator": GENERATOR, "version": MANIFEST_VERSION, "files": dict(self.files)}
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, source: str | Path) -> Manifest:
        """Parse manifest text; :class:`DataError` naming ``source`` when it is not a valid manifest."""
        hint = (f"{source} is committed with your repository: resolve merge conflicts in it, "
                f"or restore it with `git checkout -- {source}`")
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(source, None, f"not UTF-8 ({exc.reason})", hint=hint) from exc
        except json.JSONDecodeError as exc:
            raise DataError(source, exc.lineno, f"not valid JSON ({exc.msg})", hint=hint) from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
            raise DataError(source, None, "not a gitops-render manifest (no \"files\" object)", hint=hint)
        if doc.get("version") != MANIFEST_VERSION:
            raise DataError(source, None,
                            f"manifest version {doc.get('version')!r} is not supported (expected {MANIFEST_VERSION})",
                            hint="use the gitops-render version that wrote it, or delete the file "
                                 "(files generated earlier are then no longer pruned)")
        try:
            return cls(doc["files"])
        except (ValueError, PathEscapeError) as exc:
            raise DataError(source, None, f"invalid entry: {exc}", hint=hint) from exc

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read the manifest at ``path`` (never through a symlink); an absent file is an empty manifest."""
        try:
            data = read_regular(Path(path))
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise DataError(path, None, f"cannot read the manifest: {os_message(exc)}",
                            hint=f"make {path} a readable regular file (restore it with `git checkout -- {path}`) "
                                 "and run again; nothing was written") from None
        return cls.parse(data, path)
