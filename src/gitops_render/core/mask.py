"""The one masker: sensitive values never appear in text shown to operators.

One policy, used by every message (schema, template, plugin, tool stderr, diff)
and by the leak guard:

* a value is searched for in **every encoding the templates can produce**
  (:func:`encoded_forms`): as is, JSON/``tojson``-escaped, Python-repr- and
  YAML-quoted, URL-encoded (``quote``/``quote_plus``), HTML-escaped, base64;
* a value is found where one of its forms stands **as a token**: not glued to a
  letter or digit (:func:`find_tokens`). Messages additionally hide a value of
  :data:`SHORT_LENGTH` characters or more wherever it occurs, even inside a word;
* there is **no minimum length** for messages: a 1-character secret is masked
  where it stands alone.

:func:`mask_yaml_values` hides the values of a decrypted secret document (by
structure, keeping the keys) for diffs.

>>> mask("login failed for hunter2hunter2", ["hunter2hunter2"])
'login failed for ***'
>>> mask("'dict object' has no attribute 'pw1234'", ["pw1234"])
"'dict object' has no attribute '***'"
>>> mask("pw1234567 is not pw1234", ["pw1234"])
'pw1234567 is not ***'
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, quote_plus

from gitops_render.core.sopsrule import lookup

# ruamel.yaml (round-trip masking of diffs) is imported by the functions that need it:
# masking a message (``mask``) must not pay for it.

__all__ = [
    "MASK",
    "SHORT_LENGTH",
    "encoded_forms",
    "find_tokens",
    "is_encrypted_value",
    "mask",
    "mask_secret_pair",
    "mask_yaml_values",
]

MASK = "***"
CHANGED_MASK = "*** (changed)"
SHORT_LENGTH = 8
SECRET_KEYS: tuple[str, ...] = ("data", "stringData")
ENC_PREFIX = "ENC[AES256_GCM,"
_UNPARSEABLE = "*** (secret document could not be parsed; contents hidden)\n"
_HTMLSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}


def _json_inner(value: str, *, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)[1:-1]


def encoded_forms(value: str) -> list[str]:
    """Every way ``value`` can appear in rendered output or a message, longest first.

    As is; JSON-escaped (``ensure_ascii`` on and off) and Jinja ``tojson``-escaped
    (``<>&'`` as ``\\u00xx``); inside a Python repr (either quote) and a YAML
    single-quoted scalar; URL-encoded (``quote`` with ``safe=""`` and ``"/"``,
    ``quote_plus``); HTML-escaped; standard and URL-safe base64 with and without
    padding (a Secret ``data:`` field, a basic-auth header).
    """
    if not value:
        return []
    forms = {value}
    for ascii_only in (True, False):
        inner = _json_inner(value, ascii_only=ascii_only)
        forms.add(inner)
        forms.add("".join(_HTMLSAFE.get(c, c) for c in inner))
    forms.add(repr(value)[1:-1])
    forms.add(value.replace("\\", "\\\\").replace("'", "\\'"))
    forms.add(value.replace("\\", "\\\\").replace('"', '\\"'))
    forms.add(value.replace("'", "''"))
    forms.update((quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="")))
    forms.add(html.escape(value))
    raw = value.encode()
    for enc in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.add(enc)
        forms.add(enc.rstrip("="))
    return sorted((f for f in forms if f), key=lambda f: (-len(f), f))


def _is_word_byte(b: int) -> bool:
    """A letter, a digit or a byte of a non-ASCII character: part of a token."""
    return b >= 0x80 or 48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122


def find_tokens(haystack: bytes, needle: bytes) -> Iterator[int]:
    """Offsets where ``needle`` occurs in ``haystack`` as a token.

    A match must not continue a word: where the needle starts (ends) with a letter
    or digit, the byte before (after) it must not be one. ``litellm-backup`` is
    found in ``bucket: litellm-backup`` but not in ``litellm-backups``.
    """
    if not needle:
        return
    check_start, check_end = _is_word_byte(needle[0]), _is_word_byte(needle[-1])
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        before_ok = not check_start or start == 0 or not _is_word_byte(haystack[start - 1])
        after_ok = not check_end or end == len(haystack) or not _is_word_byte(haystack[end])
        if before_ok and after_ok:
            yield start
        start = haystack.find(needle, start + 1)


def _replace_tokens(text: str, form: str) -> str:
    """``text`` with every token occurrence of ``form`` replaced by ``***``."""
    raw, needle = text.encode(), form.encode()
    hits = list(find_tokens(raw, needle))
    if not hits:
        return text
    out, last = bytearray(), 0
    for hit in hits:
        if hit < last:
            continue
        out += raw[last:hit] + MASK.encode()
        last = hit + len(needle)
    out += raw[last:]
    return out.decode("utf-8", "replace")


def mask(text: str, values: Iterable[Any]) -> str:
    """Return ``text`` with every sensitive value, in every encoded form, replaced by ``***``.

    Longer forms are replaced first so a value that contains another one is hidden
    completely. Forms of :data:`SHORT_LENGTH` or more characters are replaced
    wherever they occur; shorter ones where they stand as a token (so a 1-character
    secret does not eat every word of the message).
    """
    forms: set[str] = set()
    for value in values:
        if value is None or isinstance(value, bool):
            continue
        forms.update(encoded_forms(str(value)))
    for form in sorted(forms, key=lambda f: (-len(f), f)):
        if form not in text:
            continue
        text = text.replace(form, MASK) if len(form) >= SHORT_LENGTH else _replace_tokens(text, form)
    return text


def is_encrypted_value(value: Any) -> bool:
    """A sops-encrypted scalar (``ENC[AES256_GCM,data:...,type:...]``)."""
    return isinstance(value, str) and value.startswith(ENC_PREFIX) and value.endswith("]")


def _yaml() -> Any:
    """A round-trip YAML instance that keeps comments and key order."""
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y




def _plain(value: Any) -> Any:
    """A comparable plain-Python copy of a ruamel node."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


_ABSENT = object()


def _masked_scalar(node: Any, path: tuple[Any, ...], other: Any | None) -> Any:
    """``***``, or ``*** (changed)`` when ``other`` holds something else at ``path``."""
    # one fixed style on both sides: the decrypted old side (sops' plain scalars) and the rendered
    # new side (often quoted) must give identical lines for an unchanged value
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    if other is None:
        return DoubleQuotedScalarString(MASK)
    found, before = lookup(other, path)
    return DoubleQuotedScalarString(MASK if found and _plain(before) == _plain(node) else CHANGED_MASK)


def _is_public(node: Any, path: tuple[Any, ...], public: Any) -> bool:
    """The committed ciphertext shows this very value in clear at ``path``."""
    if public is _ABSENT or (path and path[0] in SECRET_KEYS):
        return False
    found, committed = lookup(public, path)
    return found and not isinstance(committed, (Mapping, list)) and not is_encrypted_value(committed) \
        and _plain(committed) == _plain(node)


def _mask_leaves(node: Any, path: tuple[Any, ...], other: Any | None, public: Any = _ABSENT) -> Any:
    """Replace every scalar under ``node`` by ``***`` / ``*** (changed)`` (unless public)."""
    if isinstance(node, MutableMapping):
        for key in list(node.keys()):
            node[key] = _mask_leaves(node[key], (*path, key), other, public)
        return node
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _mask_leaves(item, (*path, i), other, public)
        return node
    if _is_public(node, path, public):
        return node
    return _masked_scalar(node, path, other)


def _mask_document(doc: Any, other: Any | None, keys: tuple[str, ...] | None, public: Any = _ABSENT) -> Any:
    """Mask one YAML document in place (and return it)."""
    if keys is None or public is not _ABSENT:
        return _mask_leaves(doc, (), other, public)
    if isinstance(doc, MutableMapping):
        for key in keys:
            if key in doc:
                doc[key] = _mask_leaves(doc[key], (key,), other)
    return doc


def _public_docs(public: str | None) -> list[Any] | None:
    """The documents of a committed ciphertext (``[]`` when it does not parse)."""
    if public is None:
        return None
    import yaml

    try:
        return list(yaml.safe_load_all(public))
    except yaml.YAMLError:
        return []


def mask_yaml_values(
    text: str,
    *,
    other: str | None = None,
    keys: Iterable[str] | None = SECRET_KEYS,
    public: str | None = None,
) -> str:
    """Hide the values of a decrypted secret document, keeping its keys.

    Every leaf under the top-level ``keys`` (default ``data`` and
    ``stringData``; ``None`` = every leaf of the document) becomes ``***``.
    With ``public`` (the committed ciphertext of this side) masking is **by
    structure**: every leaf is hidden except one that ``public`` shows in clear,
    with the same value, at the same place -- whatever the creation rule
    encrypts (``data``/``stringData`` are hidden always).
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
    public_docs = _public_docs(public)
    out = io.StringIO()
    masked = []
    for i, doc in enumerate(docs):
        counterpart: Any | None = None
        if other_docs is not None:
            counterpart = other_docs[i] if i < len(other_docs) else {}
        committed: Any = _ABSENT
        if public_docs is not None:
            committed = public_docs[i] if i < len(public_docs) else {}
        masked.append(_mask_document(doc, counterpart, key_tuple, committed))
    if not masked:
        return text if not text.strip() else _UNPARSEABLE
    y.dump_all(masked, out)
    return out.getvalue()


def mask_secret_pair(old: str | None, new: str | None, *,
                     keys: Iterable[str] | None = SECRET_KEYS,
                     old_public: str | None = None,
                     new_public: str | None = None) -> tuple[str | None, str | None]:
    """Both sides of a secret's diff, masked: old values ``***``, new ones
    ``***`` or ``*** (changed)`` -- a unified diff then names exactly the keys
    that changed. ``None`` (file absent on that side) stays ``None``.
    ``old_public``/``new_public`` (the ciphertexts) switch to masking by structure
    (see :func:`mask_yaml_values`).
    """
    old_masked = mask_yaml_values(old, keys=keys, public=old_public) if old is not None else None
    new_masked = mask_yaml_values(new, other=old, keys=keys, public=new_public) if new is not None else None
    return old_masked, new_masked
