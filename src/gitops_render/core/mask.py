"""Masking of sensitive values in text shown to operators.

Two tools:

* :func:`mask` replaces every known sensitive value (and its base64 forms)
  in a free text -- error messages, tool stderr, diffs -- with ``***``.
* :func:`mask_yaml_values` hides every leaf value under ``data`` /
  ``stringData`` of a (decrypted) Secret while keeping the keys, and can mark
  the keys whose value differs from another version of the document, so a diff
  shows *which* keys changed without showing any value.

>>> mask("login failed for hunter2hunter2", ["hunter2hunter2"])
'login failed for ***'
>>> mask("short values like true stay", ["true"])
'short values like true stay'
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

# ruamel.yaml (round-trip masking of diffs) is imported by the functions that need it:
# masking a message (``mask``) must not pay for it.

__all__ = [
    "DEFAULT_MIN_LENGTH",
    "MASK",
    "encoded_forms",
    "mask",
    "mask_secret_pair",
    "mask_yaml_values",
]

MASK = "***"
CHANGED_MASK = "*** (changed)"
DEFAULT_MIN_LENGTH = 8
SECRET_KEYS: tuple[str, ...] = ("data", "stringData")
_UNPARSEABLE = "*** (secret document could not be parsed; contents hidden)\n"


def encoded_forms(value: str) -> list[str]:
    """The ways ``value`` commonly appears in rendered output.

    The value itself plus its standard and URL-safe base64 encodings (with and
    without padding), as a Secret ``data:`` field or a basic-auth header holds it.
    """
    raw = value.encode()
    forms = {value}
    for enc in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.add(enc)
        forms.add(enc.rstrip("="))
    return sorted(forms, key=len, reverse=True)


def _candidates(values: Iterable[str], min_length: int) -> list[str]:
    """Every form of every value long enough to mask, longest first."""
    out: set[str] = set()
    for value in values:
        if not isinstance(value, str) or len(value) < min_length:
            continue
        out.update(f for f in encoded_forms(value) if len(f) >= min_length)
    return sorted(out, key=len, reverse=True)


def mask(text: str, values: Iterable[str], *, min_length: int = DEFAULT_MIN_LENGTH) -> str:
    """Return ``text`` with every value of length >= ``min_length`` replaced by ``***``.

    Longer values are replaced first so a value that contains another one is
    hidden completely. Base64 forms of the values are masked too.
    """
    for cand in _candidates(values, min_length):
        if cand in text:
            text = text.replace(cand, MASK)
    return text


def _yaml() -> Any:
    """A round-trip YAML instance that keeps comments and key order."""
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _lookup(node: Any, path: Sequence[Any]) -> tuple[bool, Any]:
    """``(found, value)`` of ``path`` inside ``node``."""
    for part in path:
        if (isinstance(node, Mapping) and part in node) or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        else:
            return False, None
    return True, node


def _plain(value: Any) -> Any:
    """A comparable plain-Python copy of a ruamel node."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _mask_leaves(node: Any, path: tuple[Any, ...], other: Any | None) -> Any:
    """Replace every scalar under ``node`` by ``***`` / ``*** (changed)``."""
    if isinstance(node, MutableMapping):
        for key in list(node.keys()):
            node[key] = _mask_leaves(node[key], (*path, key), other)
        return node
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _mask_leaves(item, (*path, i), other)
        return node
    # one fixed style on both sides: the decrypted old side (sops' plain scalars) and the rendered
    # new side (often quoted) must give identical lines for an unchanged value
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    if other is None:
        return DoubleQuotedScalarString(MASK)
    found, before = _lookup(other, path)
    return DoubleQuotedScalarString(MASK if found and _plain(before) == _plain(node) else CHANGED_MASK)


def _mask_document(doc: Any, other: Any | None, keys: tuple[str, ...] | None) -> Any:
    """Mask one YAML document in place (and return it)."""
    if keys is None:
        return _mask_leaves(doc, (), other)
    if isinstance(doc, MutableMapping):
        for key in keys:
            if key in doc:
                doc[key] = _mask_leaves(doc[key], (key,), other)
    return doc


def mask_yaml_values(
    text: str,
    *,
    other: str | None = None,
    keys: Iterable[str] | None = SECRET_KEYS,
) -> str:
    """Hide the values of a decrypted secret document, keeping its keys.

    Every leaf under the top-level ``keys`` (default ``data`` and
    ``stringData``; ``None`` = every leaf of the document) becomes ``***``.
    With ``other`` (the other side of a diff) a leaf whose value differs from,
    or is missing in, the same place of ``other`` becomes ``*** (changed)``.
    Text that is not YAML is replaced as a whole: nothing of it is shown.
    """
    from ruamel.yaml.error import YAMLError

    key_tuple = tuple(keys) if keys is not None else None
    y = _yaml()
    try:
        docs = list(y.load_all(text))
        other_docs = list(_yaml().load_all(other)) if other is not None else None
    except YAMLError:
        return _UNPARSEABLE
    out = io.StringIO()
    masked = []
    for i, doc in enumerate(docs):
        counterpart: Any | None = None
        if other_docs is not None:
            counterpart = other_docs[i] if i < len(other_docs) else {}
        masked.append(_mask_document(doc, counterpart, key_tuple))
    if not masked:
        return text if not text.strip() else _UNPARSEABLE
    y.dump_all(masked, out)
    return out.getvalue()


def mask_secret_pair(old: str | None, new: str | None, *,
                     keys: Iterable[str] | None = SECRET_KEYS) -> tuple[str | None, str | None]:
    """Both sides of a secret's diff, masked: old values ``***``, new ones
    ``***`` or ``*** (changed)`` -- a unified diff then names exactly the keys
    that changed. ``None`` (file absent on that side) stays ``None``.
    """
    old_masked = mask_yaml_values(old, keys=keys) if old is not None else None
    new_masked = mask_yaml_values(new, other=old, keys=keys) if new is not None else None
    return old_masked, new_masked
