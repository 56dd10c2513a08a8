"""Key continuity: a new age key never silently takes over secrets encrypted for another one.

The second-machine trap: a fresh clone has the committed ``*.sops.*`` files and
``.sops.yaml`` but not ``age.key`` (it is never committed). Creating a new key there and
running ``configure`` would re-encrypt every secret for the new key while the cluster's
Flux decryption Secret still holds the old one: Flux stops decrypting. Everything here
reads only what sops files say about themselves (their ``sops`` metadata and, in YAML,
their plaintext keys and ``metadata``), so no decryption and no sops call is needed.

:func:`foreign_secrets` finds the committed secrets (and the committed creation rules)
that no identity of the key file can open; :class:`ForeignSecrets` explains how to
restore the key, or what to rotate in the cluster after an explicit new key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_render.core.errors import GitopsRenderError, SecretsError
from gitops_render.core.naming import STATE_DIR, is_secret_path
from gitops_render.secrets.keys import read_public_keys
from gitops_render.secrets.sops import parse_sops_config
from gitops_render.secrets.sopsfile import file_metadata, format_for

__all__ = ["FluxKeySecret", "ForeignSecrets", "foreign_secrets", "refuse_foreign", "secret_files_on_disk"]

#: directories never searched for committed secrets (tools' and gitops-render's own)
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", STATE_DIR})
_MAX_BYTES = 4 * 1024 * 1024
_SOPS_AGE_FLAG = re.compile(r"--sops-age-secret=([A-Za-z0-9][-A-Za-z0-9.]*)")
_SHOWN = 3  # file names shown in a message (the count says the rest)


@dataclass(frozen=True)
class FluxKeySecret:
    """A Secret in the cluster that holds the age identity Flux decrypts with."""

    namespace: str
    name: str
    key: str  # the data key holding the identity (Flux: ``*.agekey``)
    where: str  # how it was found (a file of the tree)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ForeignSecrets:
    """Committed secrets (or creation rules) encrypted for recipients the key file does not hold."""

    key_file: Path
    key_recipients: tuple[str, ...]  # what the key file holds (empty: there is no key file)
    files: tuple[PurePosixPath, ...]  # secrets (relative to the repository root) it cannot open
    recipients: tuple[str, ...]  # the recipients they are (or the committed rules say they are) encrypted for
    rules_file: PurePosixPath | None  # the committed .sops.yaml when its age recipients are all foreign
    flux_secrets: tuple[FluxKeySecret, ...] = ()

    @property
    def key_name(self) -> str:
        return self.key_file.name

    def what(self) -> str:
        """``12 committed secret(s) ... are encrypted for age1…`` (public information only)."""
        shown = ", ".join(p.as_posix() for p in self.files[:_SHOWN])
        more = f" and {len(self.files) - _SHOWN} more" if len(self.files) > _SHOWN else ""
        parts = []
        if self.files:
            parts.append(f"{len(self.files)} committed secret file(s) ({shown}{more})")
        if self.rules_file is not None:
            parts.append(f"the committed creation rules ({self.rules_file})")
        return f"{' and '.join(parts)} are encrypted for {', '.join(self.recipients)}"

    def cluster_secret(self) -> str:
        """The Flux decryption Secret(s), as found in the tree (or where to look)."""
        if self.flux_secrets:
            return ", ".join(f"the Secret {s} from {s.where}" for s in self.flux_secrets)
        return ("the Secret Flux decrypts with (spec.decryption.secretRef of the Kustomizations, often "
                "flux-system/sops-age)")

    def restore_hint(self, new_key_option: str) -> str:
        return (f"restore the key: copy {self.key_name} from the machine or backup that has it (its public key is "
                f"{' or '.join(self.recipients)}) to {self.key_file}, or point SOPS_AGE_KEY_FILE at it; during a "
                f"rotation keep the old and the new identity in the same file. To start over with a new key on "
                f"purpose, run `{new_key_option}` (then rotate the key in the cluster)")

    def rotation_steps(self, configure_command: str) -> list[str]:
        """What the operator must do after choosing a new key: re-encrypt, update the cluster, rotate values."""
        key = self.flux_secrets[0] if self.flux_secrets else FluxKeySecret("flux-system", "sops-age", "age.agekey", "")
        count = f"the {len(self.files)} committed" if self.files else "every"
        return [
            f"`{configure_command}` re-encrypts {count} *.sops.* file(s) for the new key "
            "(their values come from the data files and templates, not from the old ciphertext)",
            f"the cluster still decrypts with the old key: update {self.cluster_secret()}, e.g. "
            f"`kubectl -n {key.namespace} create secret generic {key.name} --from-file={key.key}={self.key_name} "
            "--dry-run=client -o yaml | kubectl apply -f -`, then commit and push the re-encrypted files",
            "the old ciphertexts stay in git history: if the old key may be in someone else's hands, also "
            "change the credentials those secrets hold",
            f"back up {self.key_name} (never commit it)",
        ]


def secret_files_on_disk(top: Path, *, skip: Iterable[Path] = ()) -> list[Path]:
    """Every ``*.sops.*`` file below ``top`` (hidden directories, template inputs and tool caches skipped)."""
    skipped = {Path(p).resolve() for p in skip}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS
                             and (here / d).resolve() not in skipped)
        found += [here / f for f in sorted(filenames) if is_secret_path(f) and not (here / f).is_symlink()]
    return found


def _metadata(path: Path) -> tuple[tuple[str, ...], bytes] | None:
    """(age recipients, bytes) of a sops-encrypted file; None when it is not one (or unreadable)."""
    try:
        if path.stat().st_size > _MAX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    meta = file_metadata(data, format_for(path.name))
    return (meta.recipients, data) if meta is not None else None


def _rules_recipients(sops_config: Path | None) -> tuple[str, ...]:
    if sops_config is None or not sops_config.is_file():
        return ()
    try:
        rules = parse_sops_config(sops_config.read_text(encoding="utf-8"))
    except (GitopsRenderError, OSError, UnicodeDecodeError):
        return ()
    return tuple(dict.fromkeys(r for rule in rules for r in rule.age))


def _docs(data: bytes) -> list[Any]:
    try:
        return list(yaml.safe_load_all(data.decode("utf-8")))
    except (yaml.YAMLError, UnicodeDecodeError):
        return []


def _key_secrets_in(rel: str, data: bytes) -> list[FluxKeySecret]:
    """Secrets of a (sops) YAML file with an ``*.agekey`` data key (key names stay plaintext in sops YAML)."""
    found = []
    for doc in _docs(data):
        if not isinstance(doc, Mapping) or doc.get("kind") != "Secret":
            continue
        meta = doc.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        keys = [k for field in ("data", "stringData") if isinstance(doc.get(field), Mapping)
                for k in doc[field] if str(k).endswith(".agekey")]
        if keys and meta.get("name"):
            found.append(FluxKeySecret(str(meta.get("namespace") or "flux-system"), str(meta["name"]),
                                       str(keys[0]), rel))
    return found


def _flux_key_secrets(root: Path, output_root: Path, sops_files: Mapping[Path, bytes]) -> tuple[FluxKeySecret, ...]:
    """The cluster Secrets Flux decrypts with, as the tree names them."""
    found: dict[tuple[str, str], FluxKeySecret] = {}

    def rel(p: Path) -> str:
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return p.as_posix()

    for path, data in sops_files.items():
        if format_for(path.name) == "yaml":
            for s in _key_secrets_in(rel(path), data):
                found.setdefault((s.namespace, s.name), s)
    for dirpath, dirnames, filenames in os.walk(output_root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in filenames:
            if not name.endswith((".yaml", ".yml")) or is_secret_path(name):
                continue
            path = Path(dirpath) / name
            try:
                data = path.read_bytes() if path.stat().st_size <= _MAX_BYTES else b""
            except OSError:
                continue
            if b"--sops-age-secret=" in data:
                for m in _SOPS_AGE_FLAG.finditer(data.decode("utf-8", "replace")):
                    found.setdefault(("flux-system", m.group(1)),
                                     FluxKeySecret("flux-system", m.group(1), "age.agekey", rel(path)))
            if b"decryption" not in data or b"secretRef" not in data:
                continue
            for doc in _docs(data):
                spec = doc.get("spec") if isinstance(doc, Mapping) and doc.get("kind") == "Kustomization" else None
                dec = spec.get("decryption") if isinstance(spec, Mapping) else None
                ref = dec.get("secretRef") if isinstance(dec, Mapping) else None
                if isinstance(ref, Mapping) and ref.get("name"):
                    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
                    ns = str(meta.get("namespace") or "flux-system")
                    found.setdefault((ns, str(ref["name"])), FluxKeySecret(ns, str(ref["name"]), "age.agekey",
                                                                           rel(path)))
    return tuple(found.values())


def _key_recipients(key_file: Path) -> tuple[str, ...] | None:
    """The key file's recipients: () when it does not exist, None when its public keys cannot be read."""
    if not key_file.is_file():
        return ()
    try:
        return tuple(read_public_keys(key_file))
    except SecretsError:
        return None


def foreign_secrets(root: Path, key_file: Path, files: Iterable[Path], *, output_root: Path | None = None,
                    sops_config: Path | None = None) -> ForeignSecrets | None:
    """The committed secrets (``files``) and creation rules no identity of ``key_file`` can open.

    ``None`` when there are none (or the key file's public keys cannot be read: the secrets stage
    reports that itself). Only sops-encrypted files with age recipients count.
    """
    mine = _key_recipients(key_file)
    if mine is None:
        return None
    foreign: list[PurePosixPath] = []
    recipients: dict[str, None] = {}
    sops_files: dict[Path, bytes] = {}
    for path in files:
        found = _metadata(path)
        if found is None or not found[0]:
            continue
        sops_files[path] = found[1]
        if not set(found[0]) & set(mine):
            try:
                foreign.append(PurePosixPath(path.resolve().relative_to(root.resolve()).as_posix()))
            except ValueError:
                foreign.append(PurePosixPath(path.name))
            recipients.update(dict.fromkeys(found[0]))
    rules = _rules_recipients(sops_config)
    rules_foreign = bool(rules) and not set(rules) & set(mine)
    if not foreign and not rules_foreign:
        return None
    if rules_foreign and not foreign:
        recipients.update(dict.fromkeys(rules))
    rules_file = None
    if rules_foreign and sops_config is not None:
        try:
            rules_file = PurePosixPath(sops_config.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            rules_file = PurePosixPath(sops_config.name)
    flux = _flux_key_secrets(root, output_root or root, sops_files)
    return ForeignSecrets(key_file=key_file, key_recipients=mine, files=tuple(foreign),
                          recipients=tuple(recipients), rules_file=rules_file, flux_secrets=flux)


def refuse_foreign(root: Path, key_file: Path, files: Iterable[Path], *, output_root: Path,
                   command: str = "gitops-render configure") -> None:
    """Stop ``command`` (exit 2, nothing written) when ``key_file`` cannot open committed secrets.

    Nothing happens when every committed secret is encrypted for a recipient of the key file (or
    there is no key file: the secrets stage says so itself).
    """
    if not key_file.is_file():
        return
    found = foreign_secrets(root, key_file, files, output_root=output_root)
    if found is None or not found.files:
        return
    mine = ", ".join(found.key_recipients)
    raise SecretsError(
        f"nothing written: {found.what()}, which {found.key_name} ({mine}) cannot decrypt. {command} would "
        f"re-encrypt every one of them for the key in {found.key_name}, while the cluster still decrypts with the "
        f"old key ({found.cluster_secret()}): Flux would stop decrypting",
        hint=found.restore_hint(f"{command} --rotate-age-key"))
