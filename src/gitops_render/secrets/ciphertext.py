"""What sops printed really is ciphertext: checked before anything is written.

Two checks, both on the bytes that go to the write plan:

* :func:`check_sops_output` (right after ``sops --encrypt``): UTF-8 text with sops
  metadata and ``ENC[...]`` values, not the plaintext handed back;
* :func:`check_encrypted` (for every secret of the plan, new or kept): every value
  that must be encrypted is an ``ENC[AES256_GCM,...]`` value -- the leaves under
  ``data``/``stringData`` always, and whatever the creation rule's settings
  (``encrypted_regex`` ...) select -- and no value of the plaintext data nor any
  sensitive value appears in clear anywhere in the file.

A creation rule whose ``encrypted_regex`` misses ``stringData``, or a "sops" that
echoes its input with a fake ``sops:`` block, therefore stops the run (exit 2)
with a message naming the file and the key path, never the value.
"""

from __future__ import annotations

import configparser
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import yaml

from gitops_render.core.errors import SecretsError
from gitops_render.core.mask import SHORT_LENGTH, is_encrypted_value
from gitops_render.core.sopsrule import EncryptionRule, KeyPath, dotted, lookup
from gitops_render.secrets.leak import found_in, is_guarded, needles_for
from gitops_render.secrets.sopsfile import SecretFormat

__all__ = ["check_encrypted", "check_sops_output"]

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BROKEN_SOPS_HINT = ("sops is broken or not the real sops: reinstall it with scripts/install-tools.sh "
                     "(or fix GITOPS_RENDER_SOPS / PATH) and check `sops --version`")
_RULE_HINT = ("the creation rule in .sops.yaml (templates/config/.sops.yaml.j2) that matches this file must encrypt "
              "the secret's values: e.g. encrypted_regex: '^(data|stringData)$'; if it does, sops is not the real "
              "sops (scripts/install-tools.sh)")


def check_sops_output(relpath: PurePosixPath, out: bytes, plaintext: bytes) -> None:
    """Refuse what a broken sops printed instead of an encrypted file (garbage, or the plaintext itself).

    Every sops-encrypted file, whatever its format, is UTF-8 text holding sops metadata and at least
    one ``ENC[AES256_GCM,...]`` value (the MAC).
    """
    problem = None
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        text, problem = "", "output that is not UTF-8 text"
    if problem is None and ("ENC[AES256_GCM," not in text or "sops" not in text):
        problem = "output without sops metadata (no ENC[AES256_GCM,...] values)"
    if problem is None and out.strip() == plaintext.strip():
        problem = "its input back unencrypted"
    if problem is not None:
        raise SecretsError(f"sops could not encrypt {relpath}: sops exited 0 but printed {problem}; "
                           "nothing was written", hint=_BROKEN_SOPS_HINT)


# --------------------------------------------------------------------------- what must be encrypted












def _key_paths(node: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    """The path of every mapping key of a document (sops never encrypts keys)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield (*path, str(key))
            yield from _key_paths(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _key_paths(value, (*path, i))


def _clear_strings(node: Any, path: KeyPath, plain_keys: frozenset[KeyPath] = frozenset()
                   ) -> Iterator[tuple[KeyPath, str]]:
    """Every string in clear (not ``ENC[...]``) of a ciphertext document, ``sops`` metadata excluded.

    A key the rendered plaintext has at the same place is structure, not a leak: sops leaves every
    key in clear (a value that equals such a key, ``subPath: config.yaml`` beside a ``config.yaml:``
    key, is no finding). Any other key in clear is checked like a value.
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not path and key == "sops":
                continue
            if (*path, str(key)) not in plain_keys:
                yield (*path, str(key)), str(key)
            yield from _clear_strings(value, (*path, str(key)), plain_keys)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _clear_strings(value, (*path, i), plain_keys)
    elif node is not None and not is_encrypted_value(node):
        yield path, str(node)


# --------------------------------------------------------------------------- parsing


def _load_docs(data: bytes, fmt: SecretFormat) -> list[Any]:
    text = data.decode("utf-8")
    if fmt == "yaml":
        return [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
    if fmt == "json":
        return [json.loads(text)]
    if fmt == "dotenv":
        pairs = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not line.lstrip().startswith("#") and not key.startswith("sops_"):
                pairs[key] = value
        return [pairs]
    if fmt == "ini":
        parser = configparser.RawConfigParser(interpolation=None)
        parser.read_string(text)
        return [{s: dict(parser.items(s)) for s in parser.sections() if s != "sops"}]
    return [json.loads(text)]  # binary: {"data": "ENC[...]", "sops": {...}}


def _plain_docs(plaintext: bytes, fmt: SecretFormat) -> list[Any]:
    if fmt == "binary":
        return [{"data": plaintext.decode("utf-8", "replace")}] if plaintext else [{}]
    return _load_docs(plaintext, fmt)


def _fail(relpath: PurePosixPath, what: str) -> SecretsError:
    return SecretsError(f"the encrypted {relpath} would hold {what}; nothing was written", hint=_RULE_HINT)


def check_encrypted(
    relpath: PurePosixPath,
    ciphertext: bytes,
    plaintext: bytes,
    fmt: SecretFormat,
    settings: Sequence[tuple[str, str]] = (),
    sensitive: Sequence[tuple[str, str]] = (),
) -> None:
    """Raise :class:`SecretsError` unless ``ciphertext`` encrypts every value of ``plaintext``.

    ``settings`` are the creation rule's encryption settings (``encrypted_regex`` ...),
    ``sensitive`` the run's ``(field, value)`` pairs that may appear in no clear text.
    """
    rule = EncryptionRule.of(dict(settings))
    try:
        docs = _load_docs(ciphertext, fmt)
        plain = _plain_docs(plaintext, fmt)
    except (ValueError, yaml.YAMLError, configparser.Error, UnicodeDecodeError):
        raise SecretsError(f"the encrypted {relpath} is not a readable {fmt} file; nothing was written",
                           hint=_BROKEN_SOPS_HINT) from None
    if len(docs) != len(plain):
        raise _fail(relpath, f"{len(docs)} document(s) where the rendered secret has {len(plain)}")
    looked_for: list[tuple[str, str]] = [(name, value) for name, value in sensitive if is_guarded(value)]
    for n, (doc, source) in enumerate(zip(docs, plain, strict=True)):
        where = f"document {n + 1}: " if len(docs) > 1 else ""
        for path, value in rule.must_encrypt(source):
            found, committed = lookup(doc, path)
            if not (found and is_encrypted_value(committed)):
                raise _fail(relpath, f"{where}{dotted(path)} unencrypted")
            if isinstance(value, str) and len(value) >= SHORT_LENGTH:
                looked_for.append((dotted(path), value))
        clear = list(_clear_strings(doc, (), frozenset(_key_paths(source))))
        blob = "\n".join(text for _, text in clear).encode()
        for name, value in looked_for:
            needle = needles_for(name, value)
            if found_in(blob, needle) is None:
                continue
            at = next((p for p, text in clear if found_in(text.encode(), needle) is not None), ())
            raise _fail(relpath, f"{where}the value of {name} in clear at {dotted(at)}")
