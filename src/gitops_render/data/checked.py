"""Markers of schema and data checks that passed, so a warm run does not repeat them.

A marker is an empty-ish file in ``<state>/cache/schema-checked/`` named by an HMAC (under a
random local key: the data holds secrets, so a name must say nothing about it) of what
decided the check: the checker's code (this package's schema module and jsonschema's
installed copy, found without importing it) and the exact bytes checked. A marker is only
written after a check passed; a missing or foreign marker means "check again".
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from gitops_render.core.fsio import write_cache_bytes

__all__ = ["json_blob", "marker", "record"]

FOLDER = "schema-checked"


@functools.cache
def _checker_stamp() -> bytes:
    """What besides the schema and the data decides a check: jsonschema's installed copy and the
    schema module (location and modification time change with any upgrade or edit)."""
    import importlib.util

    schema_module = Path(__file__).with_name("schema.py")
    parts = [str(schema_module), str(schema_module.stat().st_mtime_ns)]
    spec = importlib.util.find_spec("jsonschema")
    if spec is not None and spec.origin:
        parts += [spec.origin, str(Path(spec.origin).stat().st_mtime_ns)]
    return "\x1f".join(parts).encode()


def marker(cache_dir: Path | None, kind: str, *blobs: bytes) -> Path | None:
    """The cache file recording that a check of ``kind`` passed for exactly ``blobs`` (None without a cache)."""
    if cache_dir is None:
        return None
    folder = cache_dir / FOLDER
    try:
        key = (folder / "key").read_bytes()
    except OSError:
        key = b""
    if len(key) != 32:
        key = os.urandom(32)
        write_cache_bytes(folder / "key", key)
    digest = hmac.new(key, _checker_stamp(), hashlib.sha256)
    for blob in blobs:
        digest.update(hashlib.sha256(blob).digest())
    return folder / f"{kind}-{digest.hexdigest()}"


def record(path: Path | None) -> None:
    """Record that the check of ``path`` (from :func:`marker`) passed (best effort)."""
    if path is not None:
        write_cache_bytes(path, b"passed\n")


def json_blob(value: Any) -> bytes | None:
    """A deterministic encoding of loaded data or a schema (None when it has no such encoding)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=lambda o: {f"${type(o).__name__}": str(o)}).encode()
    except (TypeError, ValueError, RecursionError):
        return None
