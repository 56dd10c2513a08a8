"""A result cache for :func:`gitops_render.validate.validate_tree`.

A no-op ``configure`` (nothing changed) would otherwise run kustomize and
kubeconform over the whole tree again. The report of a validation is a pure
function of what it reads, so it is stored under a key that covers all of it:

* the sha256 of every file below the validated roots (path, kind and content;
  symlinks by their target), which includes the encrypted secret files;
* the plaintexts handed to validation in memory, as an HMAC under a key the
  caller derives from the age identity (:func:`gitops_render.keys.derive_fingerprint_key`),
  so the cache reveals nothing about secret values without the private key;
  without that key a validation with plaintexts is not cached;
* every field of :class:`~gitops_render.validate.ValidateSettings` that can change
  a result (schema locations, Kubernetes version, provided objects, delimiters ...);
* the files of the Helm values-schema folders and of local (non-``http``) schema
  locations (path, size, mtime; the static part of the location template);
* the identity of the kubeconform and kustomize binaries (resolved path, size,
  mtime) and the source of gitops-render's validation modules.

Not covered: remote inputs (``default``/``https`` schema locations, remote
kustomize resources) and files outside the roots that a kustomization reaches
with ``../``. Set ``GITOPS_RENDER_VALIDATE_CACHE=0`` to bypass the cache.

Entries live in ``<cache_dir>/validate/<key>.json`` (mode 0600, written
atomically); only the newest :data:`KEEP` entries are kept. A missing,
unreadable or foreign entry is a miss; the cache is never essential.

>>> k = ValidationKey("0" * 64, None)
>>> cached_report(k) is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["CACHE_ENV", "KEEP", "ValidationKey", "validation_key", "cached_report", "store_report"]

CACHE_ENV = "GITOPS_RENDER_VALIDATE_CACHE"
KEEP = 8
_FORMAT = 1
_SUBDIR = "validate"
_MAX_SCHEMA_FILES = 20_000
_IGNORED_SETTINGS = frozenset({"kubeconform_workers", "kustomize_parallelism", "kubeconform_cache", "timeout"})
_VALIDATION_MODULES = ("validate.py", "kubeconform.py", "kustomize.py", "flux.py", "helmvalues.py")


@dataclass(frozen=True)
class ValidationKey:
    """The digest of everything a validation reads, and where its entry is stored
    (``cache_dir`` None: caching disabled)."""

    digest: str
    cache_dir: Path | None

    @property
    def path(self) -> Path | None:
        return self.cache_dir / _SUBDIR / f"{self.digest}.json" if self.cache_dir is not None else None


# --------------------------------------------------------------------------- key


def _canonical(value: Any) -> Any:
    """JSON-able, order-independent form of a settings value (sets sorted, paths as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _tree_digest(h: Any, base: Path, *, contents: bool, limit: int | None = None) -> None:
    """Feed every entry below ``base`` into ``h`` in a stable order."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            count += 1
            if limit is not None and count > limit:
                h.update(b"\0truncated\0")
                return
            try:
                st = os.lstat(full)
                if os.path.islink(full):
                    h.update(f"L\0{rel}\0{os.readlink(full)}\0".encode())
                elif contents:
                    with open(full, "rb") as fh:
                        h.update(f"F\0{rel}\0{st.st_mode & 0o777}\0".encode())
                        h.update(hashlib.sha256(fh.read()).digest())
                else:
                    h.update(f"S\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            except OSError as exc:
                h.update(f"E\0{rel}\0{type(exc).__name__}\0".encode())


def _file_identity(path: str | Path | None) -> str:
    if not path:
        return "missing"
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _local_schema_dir(location: str, root: Path) -> Path | None:
    """The static directory part of a local ``-schema-location`` template."""
    if location == "default" or "://" in location:
        return None
    static = location.split("{{", 1)[0]
    base = Path(static) if os.path.isabs(static) else root / static
    base = base if static.endswith("/") or base.is_dir() else base.parent
    return base if base.is_dir() else None


def validation_key(
    output_root: Path,
    settings: Any,
    *,
    runner: Any,
    cache_dir: Path | None,
    plaintexts: Mapping[PurePosixPath, bytes] | None = None,
    secret_key: bytes | None = None,
    decrypting: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ValidationKey | None:
    """The cache key of ``validate_tree(output_root, settings, plaintexts=plaintexts, ...)``.

    ``settings`` is a :class:`~gitops_render.validate.ValidateSettings`, ``runner``
    the :class:`~gitops_render.runner.ToolRunner` validation will use. Returns
    None when the validation must not be cached: the cache is switched off, a
    ``decrypt`` callback would be used (its result depends on the key file), or
    plaintexts are given without ``secret_key`` to key them.
    """
    env = os.environ if environ is None else environ
    if cache_dir is None or env.get(CACHE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if decrypting or (plaintexts and secret_key is None):
        return None
    output_root = Path(output_root)
    h = hashlib.sha256(f"gitops-render validate cache v{_FORMAT}\0".encode())
    here = Path(__file__).resolve().parent
    for module in _VALIDATION_MODULES:
        try:
            h.update(hashlib.sha256((here / module).read_bytes()).digest())
        except OSError:
            h.update(b"missing")
    data = {f.name: _canonical(getattr(settings, f.name)) for f in fields(settings)
            if f.name not in _IGNORED_SETTINGS}
    h.update(json.dumps(data, sort_keys=True).encode())
    for tool in ("kubeconform", "kustomize"):
        try:
            where = runner.which(tool)
        except Exception:  # noqa: BLE001 - a missing tool is validation's error to report
            where = None
        h.update(f"\0tool {tool} {_file_identity(where)}".encode())
    for root in sorted(settings.roots):
        h.update(f"\0root {root}\0".encode())
        base = output_root / root
        if base.is_dir():
            _tree_digest(h, base, contents=True)
        elif base.exists():
            h.update(f"file {_file_identity(base)}".encode())
    repo_root = output_root
    for key, folder in sorted(dict(settings.helm_schemas).items()):
        h.update(f"\0helm {key}\0".encode())
        _tree_digest(h, Path(folder), contents=False, limit=_MAX_SCHEMA_FILES)
    for location in settings.schema_locations:
        h.update(f"\0location {location}\0".encode())
        local = _local_schema_dir(location, repo_root)
        if local is not None:
            _tree_digest(h, local, contents=False, limit=_MAX_SCHEMA_FILES)
    if plaintexts:
        assert secret_key is not None
        mac = hmac.new(secret_key, b"validate-cache-plaintexts-v1", hashlib.sha256)
        for rel in sorted(plaintexts, key=lambda p: PurePosixPath(p).as_posix()):
            mac.update(PurePosixPath(rel).as_posix().encode() + b"\0")
            mac.update(hashlib.sha256(plaintexts[rel]).digest())
        h.update(b"\0plaintexts\0" + mac.digest())
    else:
        h.update(b"\0no plaintexts\0")
    return ValidationKey(h.hexdigest(), Path(cache_dir))


# --------------------------------------------------------------------------- entries


def cached_report(key: ValidationKey | None) -> Any | None:
    """The stored :class:`~gitops_render.validate.ValidationReport` for ``key``, or None."""
    if key is None or key.path is None:
        return None
    try:
        doc = json.loads(key.path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("key") != key.digest:
        return None
    from .validate import Finding, ValidationReport

    try:
        findings = tuple(Finding(str(f["check"]), str(f["file"]), None if f["document"] is None else str(f["document"]),
                                 str(f["message"])) for f in doc["findings"])
        notes = tuple(str(n) for n in doc["notes"])
    except (KeyError, TypeError):
        return None
    return ValidationReport(findings, notes)


def _prune(directory: Path, keep: int) -> None:
    try:
        entries = sorted((p for p in directory.glob("*.json")), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for old in entries[keep:]:
        try:
            old.unlink()
        except OSError:
            pass


def store_report(key: ValidationKey | None, report: Any) -> None:
    """Store ``report`` under ``key`` (atomically, mode 0600; best effort)."""
    if key is None or key.path is None:
        return
    doc = {"format": _FORMAT, "key": key.digest,
           "findings": [{"check": f.check, "file": f.file, "document": f.document, "message": f.message}
                        for f in report.findings],
           "notes": list(report.notes)}
    directory = key.path.parent
    tmp: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".validate-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, sort_keys=True)
        os.replace(tmp, key.path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _prune(directory, KEEP)

