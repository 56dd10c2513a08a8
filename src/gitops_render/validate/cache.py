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
* the files of the Helm values-schema folders, charts, chart cache and local schema
  locations (path, size, mtime; the static part of the location template);
* the identity of the kubeconform, kustomize and helm binaries (resolved path, size,
  mtime) and the source of gitops-render's validation modules.

Not covered: remote inputs (``default``/``https`` schema locations, remote
kustomize resources) and files outside the roots that a kustomization reaches
with ``../``. ``GITOPS_RENDER_VALIDATE_CACHE=0`` (``settings.runtime.validate_cache``)
makes the pipeline bypass the cache.

Entries live in ``<cache_dir>/validate/<key>.json`` (mode 0600, written
atomically); only the newest :data:`KEEP` entries are kept. A missing,
unreadable or foreign entry is a miss; the cache is never essential.

When the whole report is not cached (something changed), :class:`UnitCache`
keeps the expensive parts from being redone for what did not change:

* ``kustomize build`` of a top-level kustomization, keyed by the kustomize
  binary and the sha256 of every file the build can read: the kustomization
  files of its graph, every file they refer to (a referenced folder without a
  kustomization: its whole tree) and every file directly in their folders.
  A graph with a remote resource, a Helm chart, or a path leaving the output
  root is not cached. Timeouts and tools that fail to run are never cached.
* kubeconform's result per document, keyed by the document's content, the
  kubeconform binary, the Kubernetes version, the schema locations and the
  files of local schema locations (path, size, mtime). Valid results are
  cached; findings only when every schema location is local. Documents of
  ``*.sops.*`` files hold decrypted values: their key is an HMAC under the key
  derived from the age identity, and without that key they are not cached.

Both live in ``<cache_dir>/validate-units.json`` (mode 0600), which holds
exactly the entries of the latest validation.

>>> k = ValidationKey("0" * 64, None)
>>> cached_report(k) is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from gitops_render.core.fsio import write_cache_json
from gitops_render.core.runner import ToolRunner
from gitops_render.validate.model import (
    CheckResult,
    Finding,
    KustomizationRefs,
    ValidateSettings,
)

__all__ = ["KEEP", "UnitCache", "ValidationKey", "cached_report", "store_report", "validation_key"]

KEEP = 8
_FORMAT = 1
_SUBDIR = "validate"
_MAX_SCHEMA_FILES = 20_000
_IGNORED_SETTINGS = frozenset({"kubeconform_workers", "kustomize_parallelism", "kubeconform_cache", "timeout"})
UNITS_FILE = "validate-units.json"
_UNITS_FORMAT = 1
_KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


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


def _canonical(value: object) -> object:
    """JSON-able, order-independent form of a settings value (sets sorted, paths as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=str)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _tree_digest(h: _Hasher, base: Path, *, contents: bool, limit: int | None = None) -> None:
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


def _modules_digest() -> bytes:
    """sha256 of the source of gitops-render's validation modules."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for module in sorted(here.glob("*.py")):
        try:
            h.update(hashlib.sha256(module.read_bytes()).digest())
        except OSError:
            h.update(b"missing")
    return h.digest()


def _tool_identity(runner: ToolRunner, tool: str) -> str:
    try:
        where: str | Path | None = runner.which(tool)
    except Exception:
        where = None
    return _file_identity(where)


def _is_remote(location: str) -> bool:
    return location == "default" or location.startswith(("http://", "https://"))


def validation_key(
    output_root: Path,
    settings: ValidateSettings,
    *,
    runner: ToolRunner,
    cache_dir: Path | None,
    plaintexts: Mapping[PurePosixPath, bytes] | None = None,
    secret_key: bytes | None = None,
    decrypting: bool = False,
) -> ValidationKey | None:
    """The cache key of ``validate_tree(output_root, settings, plaintexts=plaintexts, ...)``.

    ``runner`` is the :class:`~gitops_render.core.runner.ToolRunner` validation will use. Returns
    None when the validation must not be cached: the cache is switched off
    (``cache_dir`` None: the caller's choice, e.g. ``GITOPS_RENDER_VALIDATE_CACHE=0``), a
    ``decrypt`` callback would be used (its result depends on the key file), or
    plaintexts are given without ``secret_key`` to key them.
    """
    if cache_dir is None:
        return None
    if decrypting or (plaintexts and secret_key is None):
        return None
    output_root = Path(output_root)
    h = hashlib.sha256(f"gitops-render validate cache v{_FORMAT}\0".encode())
    h.update(_modules_digest())
    data = {f.name: _canonical(getattr(settings, f.name)) for f in fields(settings)
            if f.name not in _IGNORED_SETTINGS}
    h.update(json.dumps(data, sort_keys=True).encode())
    for tool in ("kubeconform", "kustomize", "helm"):
        h.update(f"\0tool {tool} {_tool_identity(runner, tool)}".encode())
    for root in sorted(settings.roots):
        h.update(f"\0root {root}\0".encode())
        base = output_root / root
        if base.is_dir():
            _tree_digest(h, base, contents=True)
        elif base.exists():
            h.update(f"file {_file_identity(base)}".encode())
    repo_root = output_root
    charts = [*settings.helm_schemas.items(), *settings.helm_charts.items(), ("cache", settings.chart_cache)]
    for key, folder in sorted((k, Path(v)) for k, v in charts if v):  # values schemas, charts (.tgz), chart cache
        h.update(f"\0helm {key} {_file_identity(folder) if folder.is_file() else ''}\0".encode())
        _tree_digest(h, folder, contents=False, limit=_MAX_SCHEMA_FILES)
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


def cached_report(key: ValidationKey | None) -> CheckResult | None:
    """The stored :class:`~gitops_render.validate.ValidationReport` for ``key``, or None."""
    if key is None or key.path is None:
        return None
    try:
        doc = json.loads(key.path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("key") != key.digest:
        return None
    try:
        findings = tuple(Finding(str(f["check"]), str(f["file"]), None if f["document"] is None else str(f["document"]),
                                 str(f["message"]), f["line"] if isinstance(f.get("line"), int) else None)
                         for f in doc["findings"])
        notes = tuple(str(n) for n in doc["notes"])
    except (KeyError, TypeError):
        return None
    return CheckResult(findings, notes)


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


def store_report(key: ValidationKey | None, report: CheckResult) -> None:
    """Store ``report`` under ``key`` (atomically, mode 0600; best effort)."""
    if key is None or key.path is None:
        return
    doc = {"format": _FORMAT, "key": key.digest,
           "findings": [{"check": f.check, "file": f.file, "document": f.document, "message": f.message,
                         "line": f.line}
                        for f in report.findings],
           "notes": list(report.notes)}
    directory = key.path.parent
    write_cache_json(key.path, doc)
    _prune(directory, KEEP)



# --------------------------------------------------------------------------- per-unit results


def _sha_file(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError as exc:
        return f"error:{type(exc).__name__}"


class _Uncacheable(Exception):
    """A kustomization graph whose inputs cannot all be keyed."""


class UnitCache:
    """Results of single ``kustomize build`` runs and single documents' schema checks.

    Create one per validation, hand it to :func:`gitops_render.validate.validate_tree`
    (``unit_cache=``, typed :class:`~gitops_render.validate.model.UnitResultCache`), then :meth:`save` it.
    Thread-safe (builds and batches run in pools).
    """

    def __init__(self, cache_dir: Path, settings: ValidateSettings, *, runner: ToolRunner, output_root: Path,
                 secret_key: bytes | None = None) -> None:
        self.path = Path(cache_dir) / UNITS_FILE
        self.output_root = Path(output_root)
        self.secret_key = secret_key
        self.findings_cacheable = not any(_is_remote(loc) for loc in settings.schema_locations)
        modules = _modules_digest()
        kc = hashlib.sha256(b"kubeconform unit v1\0" + modules)
        kc.update(f"\0{_tool_identity(runner, 'kubeconform')}\0{settings.kubernetes_version}\0".encode())
        for location in settings.schema_locations:
            kc.update(f"\0location {location}\0".encode())
            local = _local_schema_dir(location, self.output_root)
            if local is not None:
                _tree_digest(kc, local, contents=False, limit=_MAX_SCHEMA_FILES)
        self._kc_base = kc.digest()
        kz = hashlib.sha256(b"kustomize unit v1\0" + modules)
        kz.update(f"\0{_tool_identity(runner, 'kustomize')}\0".encode())
        self._kz_base = kz.digest()
        self._lock = threading.Lock()
        self._old: dict[str, dict[str, object]] = {"kustomize": {}, "kubeconform": {}}
        self._new: dict[str, dict[str, object]] = {"kustomize": {}, "kubeconform": {}}
        self.hits = {"kustomize": 0, "kubeconform": 0}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("format") == _UNITS_FORMAT:
            for kind in self._old:
                entries = doc.get(kind)
                if isinstance(entries, dict):
                    self._old[kind] = entries

    # ---------------------------------------------------------------- lookups

    def _get(self, kind: str, key: str) -> object | None:
        with self._lock:
            if key in self._new[kind]:
                return self._new[kind][key]
            value = self._old[kind].get(key)
            if value is not None:
                self._new[kind][key] = value
                self.hits[kind] += 1
            return value

    def _put(self, kind: str, key: str, value: object) -> None:
        with self._lock:
            self._new[kind][key] = value

    # ---------------------------------------------------------------- kubeconform

    def document_key(self, content: Mapping[str, Any], *, secret: bool) -> str | None:
        """Key of one document's schema result; None when it must not be cached."""
        blob = json.dumps(content, sort_keys=True, default=str, separators=(",", ":")).encode()
        if secret:
            if self.secret_key is None:
                return None
            mac = hmac.new(self.secret_key, b"validate-unit-document-v1\0" + self._kc_base, hashlib.sha256)
            mac.update(blob)
            return "h" + mac.hexdigest()
        return "s" + hashlib.sha256(self._kc_base + blob).hexdigest()

    def document_messages(self, key: str | None) -> list[str] | None:
        """Cached finding messages of a document (``[]``: valid), or None."""
        if key is None:
            return None
        value = self._get("kubeconform", key)
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            return None
        return list(value)

    def store_document(self, key: str | None, messages: list[str]) -> None:
        """Record a document's (already masked) finding messages."""
        if key is None or (messages and not self.findings_cacheable):
            return
        if any("failed downloading schema" in m for m in messages):
            return
        self._put("kubeconform", key, list(messages))

    # ---------------------------------------------------------------- kustomize

    def build_key(self, folder: PurePosixPath, kustomizations: Mapping[PurePosixPath, KustomizationRefs]
                  ) -> str | None:
        """Key of ``kustomize build folder``; None when its inputs cannot all be keyed."""
        try:
            inputs = self._build_inputs(folder, kustomizations)
        except _Uncacheable:
            return None
        h = hashlib.sha256(self._kz_base + f"\0build {folder}\0".encode())
        for rel in sorted(inputs):
            h.update(f"{rel}\0{inputs[rel]}\0".encode())
        return h.hexdigest()

    def _rel(self, path: PurePosixPath) -> PurePosixPath:
        if path.is_absolute() or (path.parts and path.parts[0] == ".."):
            raise _Uncacheable(str(path))
        return path

    def _add_dir_files(self, folder: PurePosixPath, inputs: dict[str, str]) -> None:
        """Every entry directly in ``folder`` (files by content, sub-folders by name)."""
        base = self.output_root / folder
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError as exc:
            inputs[f"{folder}/"] = f"error:{type(exc).__name__}"
            return
        names = []
        for entry in entries:
            rel = (folder / entry.name).as_posix()
            if entry.is_symlink():
                inputs[rel] = "link:" + os.readlink(entry.path)
            elif entry.is_file():
                inputs[rel] = _sha_file(Path(entry.path))
            names.append(entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else ""))
        inputs[f"{folder}/"] = "\0".join(names)

    def _build_inputs(self, start: PurePosixPath, kustomizations: Mapping[PurePosixPath, KustomizationRefs]
                      ) -> dict[str, str]:
        inputs: dict[str, str] = {}
        seen: set[PurePosixPath] = set()
        todo = [start]
        while todo:
            folder = self._rel(todo.pop())
            if folder in seen:
                continue
            seen.add(folder)
            k = kustomizations.get(folder)
            full = self.output_root / folder
            if k is None:  # a folder without a kustomization (or not parsed): everything below it
                h = hashlib.sha256()
                _tree_digest(h, full, contents=True)
                inputs[f"{folder}/**"] = h.hexdigest()
                continue
            self._add_dir_files(folder, inputs)
            try:
                text = (self.output_root / k.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            if "helmCharts" in text or "helmGlobals" in text:
                raise _Uncacheable("helm")
            for entry in (*k.resources, *k.components, *k.file_refs):
                if k.resolve(entry) is None:  # remote
                    raise _Uncacheable(entry)
            for written in k.all_refs():
                ref = self._rel(written)
                target = self.output_root / ref
                if target.is_dir():
                    todo.append(ref)
                elif ref.as_posix() not in inputs:
                    inputs[ref.as_posix()] = _sha_file(target) if target.exists() else "missing"
        return inputs

    def build_result(self, key: str | None) -> tuple[bool, str | None] | None:
        """(True, None) for a cached successful build, (True, message) for a cached failure, None: not cached."""
        if key is None:
            return None
        value = self._get("kustomize", key)
        if not isinstance(value, dict) or "error" not in value:
            return None
        error = value["error"]
        return (True, error) if error is None or isinstance(error, str) else None

    def store_build(self, key: str | None, error: str | None) -> None:
        """Record the outcome of a build that ran (``error`` None: it built)."""
        if key is not None:
            self._put("kustomize", key, {"error": error})

    # ---------------------------------------------------------------- storage

    def save(self) -> None:
        """Write the entries of this validation (atomically, mode 0600; best effort)."""
        with self._lock:
            doc = {"format": _UNITS_FORMAT, **{k: dict(v) for k, v in self._new.items()}}
        write_cache_json(self.path, doc)
