"""The repository's age key file (``age.key``): create it, read it, never show it.

``age-keygen`` writes the identity file: comment lines (``# created: ...``,
``# public key: age1...``) and one ``AGE-SECRET-KEY-1...`` line per identity.
During a key rotation the operator keeps the old identity in the same file
next to the new one, so every function here accepts several identities.

Only classic X25519 identities are accepted: sops 3.11 cannot use age's
post-quantum (``-pq``) keys.

Private key material is only ever held in :class:`AgeIdentities`, whose
``repr`` hides it; nothing in this module prints or logs it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from gitops_render.core.errors import SecretsError
from gitops_render.core.runner import ToolRunner

__all__ = [
    "FINGERPRINT_LABEL",
    "NO_KEY_HINT",
    "PQ_HINT",
    "PQ_MESSAGE",
    "AgeIdentities",
    "AgeKeyInfo",
    "derive_fingerprint_key",
    "generate_key_file",
    "public_key",
    "read_identities",
    "read_public_key",
    "read_public_keys",
]

NO_KEY_HINT = "run `gitops-render init` or set SOPS_AGE_KEY_FILE"
#: why a post-quantum key is refused, and how to get a classic one (one wording everywhere)
PQ_MESSAGE = ("age key file {path} holds a post-quantum age key (age1pq1..., what `age-keygen -pq` creates): "
              "sops 3.11 cannot encrypt or decrypt with it, so "
              "gitops-render uses classic X25519 keys only")
PQ_HINT = ("create a classic key instead: move this one aside (`mv {name} {name}.pq`) and run `gitops-render init`, "
           "or run `age-keygen -o {name}` (without -pq); then run configure, which encrypts the secrets for it")
FINGERPRINT_LABEL = b"gitops-render/secrets-fingerprint/v1"

_PUBLIC_LINE = re.compile(r"^#\s*public key:\s*(age1[0-9a-z]+)\s*$", re.MULTILINE)
_CLASSIC_SECRET = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]+$")
_PQ_SECRET = re.compile(r"^AGE-SECRET-KEY-PQ-1[0-9A-Z]+$")
_PQ_PUBLIC_PREFIX = "age1pq1"


@dataclass(frozen=True)
class AgeKeyInfo:
    """Where a key file is and its (public) recipient."""

    path: Path
    public_key: str


@dataclass(frozen=True)
class AgeIdentities:
    """The private identities of a key file; ``repr`` never shows them."""

    path: Path
    identities: tuple[str, ...] = field(repr=False)

    def __repr__(self) -> str:  # explicit: dataclass repr would be fine too, belt and braces
        return f"AgeIdentities(path={str(self.path)!r}, count={len(self.identities)})"


def _read_text(path: Path) -> str:
    """Read the key file or raise an operator-readable :class:`SecretsError`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretsError(f"age key file {path.name} not found: {NO_KEY_HINT}",
                           hint=f"looked for {path}") from None
    except OSError as exc:
        raise SecretsError(f"age key file {path} cannot be read: {exc.strerror}",
                           hint="check the file's permissions") from None


def _post_quantum(path: Path) -> SecretsError:
    return SecretsError(PQ_MESSAGE.format(path=path), hint=PQ_HINT.format(name=path.name))


def read_public_keys(path: Path) -> list[str]:
    """Every recipient named by a ``# public key: age1...`` line, in file order."""
    keys = _PUBLIC_LINE.findall(_read_text(path))
    if not keys:
        raise SecretsError(f"age key file {path} has no '# public key: age1...' line",
                           hint="recreate it with age-keygen (or `gitops-render init`)")
    for key in keys:
        if key.startswith(_PQ_PUBLIC_PREFIX):
            raise _post_quantum(path)
    return keys


def read_public_key(path: Path) -> str:
    """The first recipient of the key file (the one ``age_key('public')`` renders)."""
    return read_public_keys(path)[0]


def public_key(path: Path) -> str:
    """Alias of :func:`read_public_key` (the name the CLI layer uses)."""
    return read_public_key(path)


def read_identities(path: Path) -> AgeIdentities:
    """The private identities of the key file (classic X25519 only)."""
    found: list[str] = []
    for raw in _read_text(path).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _PQ_SECRET.match(line):
            raise _post_quantum(path)
        if not _CLASSIC_SECRET.match(line):
            raise SecretsError(f"age key file {path} has a line that is not an age identity",
                               hint="the file must be written by age-keygen; comments start with '#'")
        found.append(line)
    if not found:
        raise SecretsError(f"age key file {path} holds no identity", hint=NO_KEY_HINT)
    return AgeIdentities(path=path, identities=tuple(found))


def derive_fingerprint_key(identities: AgeIdentities) -> bytes:
    """A 32-byte HMAC key for secret fingerprints, derived from the identities.

    HMAC-SHA256 keyed with the sorted identities over a fixed label: without
    the private key the fingerprints in the cache reveal nothing about the
    plaintexts, and a different key file yields unrelated fingerprints.
    """
    material = "\n".join(sorted(identities.identities)).encode()
    return hmac.new(material, FINGERPRINT_LABEL, hashlib.sha256).digest()


def _write_exclusive(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600; fail if it exists (never overwrite a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def generate_key_file(path: Path, *, runner: ToolRunner | None = None) -> AgeKeyInfo:
    """Create a new classic age identity at ``path`` with ``age-keygen``.

    The identity travels from age-keygen's stdout to the file (mode 0600)
    without being shown anywhere. An existing file is never overwritten.
    """
    if path.exists():
        raise SecretsError(f"age key file {path} already exists; not overwriting it",
                           hint="delete it first only if no secret is encrypted to it any more")
    result = (runner or ToolRunner()).run("age-keygen", [], text=True)
    content = str(result.stdout)
    if not _PUBLIC_LINE.search(content) or not any(_CLASSIC_SECRET.match(ln.strip()) for ln in content.splitlines()):
        raise SecretsError("age-keygen printed no classic age identity",
                           hint="check the age-keygen installation (scripts/install-tools.sh)")
    try:
        _write_exclusive(path, content)
    except FileExistsError:
        raise SecretsError(f"age key file {path} already exists; not overwriting it") from None
    except OSError as exc:
        raise SecretsError(f"cannot write age key file {path}: {exc.strerror}") from None
    return AgeKeyInfo(path=path, public_key=read_public_key(path))
