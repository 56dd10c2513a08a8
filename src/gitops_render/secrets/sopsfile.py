"""What a sops file says, read without sops: its format, its metadata, its values.

* :func:`format_for` -- sops' store for a file name (by extension, as sops decides it);
* :func:`file_metadata` / :func:`file_recipients` -- the ``sops`` metadata of a
  ciphertext (recipients, encryption settings, version) in every store;
* :func:`plaintext_mask_values` -- the strings of a plaintext to hide in any
  message about it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import yaml

from gitops_render.core.sopsrule import DEFAULT_UNENCRYPTED_SUFFIX  # re-exported: the one default

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it

__all__ = [
    "CRYPT_SETTINGS",
    "DEFAULT_UNENCRYPTED_SUFFIX",
    "FileMetadata",
    "SecretFormat",
    "file_metadata",
    "file_recipients",
    "format_for",
    "plaintext_mask_values",
]

SecretFormat = Literal["yaml", "json", "dotenv", "ini", "binary"]


CRYPT_SETTINGS: tuple[str, ...] = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)

_RECIPIENT_KEY = re.compile(r"(?:^|__)age__list_\d+__map_recipient$")


@dataclass(frozen=True)
class FileMetadata:
    """What a ciphertext file's ``sops`` metadata says."""

    recipients: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]
    version: str | None


def format_for(relpath: PurePosixPath | str) -> SecretFormat:
    """sops' store for a file name, by extension (as sops itself decides it)."""
    suffix = PurePosixPath(relpath).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    if suffix == ".env":
        return "dotenv"
    if suffix == ".ini":
        return "ini"
    return "binary"


# --------------------------------------------------------------------------- file metadata


def _flat_metadata(ciphertext: bytes, fmt: SecretFormat) -> dict[str, str]:
    """dotenv/ini metadata as flat ``key -> value`` (sops' ``__list_N__map_`` keys)."""
    text = ciphertext.decode("utf-8", "replace")
    out: dict[str, str] = {}
    if fmt == "dotenv":
        for line in text.splitlines():
            if line.startswith("sops_") and "=" in line:
                key, _, value = line.partition("=")
                out[key[len("sops_"):]] = value
        return out
    in_sops = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_sops = stripped == "[sops]"
            continue
        if in_sops and "=" in stripped:
            key, _, value = stripped.partition("=")
            out[key.strip()] = value.strip()
    return out


def _structured_metadata(ciphertext: bytes, fmt: SecretFormat) -> dict[str, Any] | None:
    """The ``sops`` mapping of a YAML/JSON/binary(JSON) ciphertext."""
    try:
        if fmt == "yaml":
            docs = [d for d in yaml.load_all(ciphertext, Loader=_LOADER) if d is not None]
        else:
            docs = [json.loads(ciphertext)]
    except (yaml.YAMLError, ValueError):
        return None
    for doc in docs:
        if isinstance(doc, Mapping) and isinstance(doc.get("sops"), Mapping):
            return dict(doc["sops"])
    return None


def _recipients_of(meta: Mapping[str, Any]) -> list[str]:
    """Age recipients in a structured ``sops`` mapping (plain and key groups)."""
    out = [str(e.get("recipient")) for e in meta.get("age") or [] if isinstance(e, Mapping)]
    for group in meta.get("key_groups") or []:
        if isinstance(group, Mapping):
            out += [str(e.get("recipient")) for e in group.get("age") or [] if isinstance(e, Mapping)]
    return out


def file_metadata(ciphertext: bytes, fmt: SecretFormat = "yaml") -> FileMetadata | None:
    """The sops metadata of a ciphertext, or ``None`` if it is not a sops file."""
    if fmt in ("dotenv", "ini"):
        flat = _flat_metadata(ciphertext, fmt)
        if "mac" not in flat or "version" not in flat:
            return None
        recipients = [v for k, v in flat.items() if _RECIPIENT_KEY.search(k)]
        settings = {k: v for k, v in flat.items() if k in CRYPT_SETTINGS or k == "mac_only_encrypted"}
        version = flat.get("version")
    else:
        meta = _structured_metadata(ciphertext, fmt)
        if meta is None or "mac" not in meta or "version" not in meta:
            return None
        recipients = _recipients_of(meta)
        settings = {k: str(meta[k]) for k in CRYPT_SETTINGS if meta.get(k)}
        if meta.get("mac_only_encrypted"):
            settings["mac_only_encrypted"] = "true"
        version = str(meta.get("version"))
    if fmt == "binary":
        settings = {}
    return FileMetadata(recipients=tuple(sorted(set(recipients))),
                        settings=tuple(sorted((k, str(v).lower() if k == "mac_only_encrypted" else str(v))
                                              for k, v in settings.items())),
                        version=version)


def file_recipients(ciphertext: bytes, fmt: SecretFormat | None = None) -> tuple[str, ...]:
    """The age recipients (``sops.age[*].recipient``) of a ciphertext, sorted.

    ``fmt`` defaults to a guess: JSON when the bytes start with ``{``,
    dotenv when they carry ``sops_`` lines, YAML otherwise.
    """
    if fmt is None:
        head = ciphertext.lstrip()[:1]
        if head == b"{":
            fmt = "json"
        elif re.search(rb"(?m)^sops_version=", ciphertext):
            fmt = "dotenv"
        elif re.search(rb"(?m)^\[sops\]\s*$", ciphertext):
            fmt = "ini"
        else:
            fmt = "yaml"
    meta = file_metadata(ciphertext, fmt)
    return meta.recipients if meta else ()



def plaintext_mask_values(plaintext: bytes, fmt: SecretFormat) -> list[str]:
    """Strings of a plaintext to hide in any message about it (leaf values, tokens)."""
    text = plaintext.decode("utf-8", "replace")
    values: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif node is not None and not isinstance(node, bool):
            values.add(str(node))

    try:
        if fmt == "yaml":
            for doc in yaml.safe_load_all(text):
                walk(doc)
        elif fmt == "json":
            walk(json.loads(text))
    except (yaml.YAMLError, ValueError):
        pass
    for line in text.splitlines():
        stripped = line.strip()
        values.add(stripped)
        if "=" in stripped:
            values.add(stripped.partition("=")[2].strip())
        if ":" in stripped:
            values.add(stripped.partition(":")[2].strip().strip("'\""))
        values.update(stripped.split())
    return [v for v in values if len(v) >= 4]
