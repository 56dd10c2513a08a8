"""Leak guard: sensitive values must only appear in ``*.sops.*`` outputs.

The app hands in the sensitive values (``path -> value``: the schema's
``x-sensitive`` fields found by :func:`gitops_render.data.schema.sensitive_values`,
and the age identity); this stage does not read the schema. :func:`find_leaks`
looks for every value in every encoding the templates can produce
(:func:`gitops_render.core.mask.encoded_forms`: as is, JSON/``tojson``/YAML
escaped, URL-encoded, HTML-escaped, base64, and base64 of a text *containing*
the value such as a basic-auth header) in every output that will be committed
in plaintext.

A value is found where it stands **as a token** (not glued to a letter or digit:
the example access key ``litellm-backup`` is not found in ``litellm-backups``), so
values shorter than :data:`DEFAULT_MIN_LENGTH` are guarded too, down to
:data:`MIN_GUARDED_LENGTH` characters. Words like ``true`` are never looked for.

Findings name the file and the field, never the value.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from gitops_render.core.errors import LeakError
from gitops_render.core.mask import encoded_forms, find_tokens
from gitops_render.core.naming import is_secret_path

__all__ = [
    "DEFAULT_MIN_LENGTH",
    "MIN_GUARDED_LENGTH",
    "Leak",
    "Needles",
    "base64_fragments",
    "check_leaks",
    "find_leaks",
    "found_in",
    "is_guarded",
    "needles_for",
]

DEFAULT_MIN_LENGTH = 8  # base64 fragments shorter than this are not looked for inside other tokens
MIN_GUARDED_LENGTH = 4  # shorter values are too ambiguous to look for (the schema should refuse them)
_NOT_SECRET_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "none", "enabled", "disabled"})


@dataclass(frozen=True)
class Leak:
    """A sensitive field's value found in a plaintext output."""

    path: PurePosixPath
    field: str
    form: str = "plain"  # "plain", "encoded" (escaped / URL-encoded) or "base64"

    def __str__(self) -> str:
        how = "" if self.form == "plain" else f" ({'escaped or URL-' if self.form == 'encoded' else 'base64-'}encoded)"
        return f"{self.path}: value of sensitive field {self.field}{how}"


def base64_fragments(value: str, min_length: int = DEFAULT_MIN_LENGTH) -> set[str]:
    """Substrings that every base64 encoding of a text *containing* ``value`` has.

    For each of the three byte alignments, the base64 characters determined
    only by ``value``'s bytes (standard and URL-safe alphabets). This catches
    ``base64(value)`` as well as ``base64("user:" + value)``.
    """
    raw = value.encode()
    out: set[str] = set()
    for offset in range(3):
        padded = b"\0" * offset + raw
        start = -(-offset * 8 // 6)  # ceil(8*offset/6)
        end = (offset + len(raw)) * 8 // 6
        for enc in (base64.b64encode(padded).decode(), base64.urlsafe_b64encode(padded).decode()):
            core = enc[start:end]
            if len(core) >= min_length:
                out.add(core)
    return out


def is_guarded(value: str) -> bool:
    """Long enough to be told apart as a token, and not a word like ``true`` that appears everywhere."""
    return len(value) >= MIN_GUARDED_LENGTH and value.strip().lower() not in _NOT_SECRET_WORDS


@dataclass(frozen=True)
class Needles:
    """What to look for, for one field."""

    field: str
    plain: bytes
    encoded: tuple[bytes, ...]  # escaped / URL-encoded forms, found as tokens
    b64: tuple[bytes, ...]  # base64 of the value, found as tokens
    fragments: tuple[bytes, ...]  # base64 of a text containing the value, found anywhere


@functools.lru_cache(maxsize=65536)  # the ciphertext check asks again for every secret file
def needles_for(field: str, value: str, min_length: int = DEFAULT_MIN_LENGTH) -> Needles:
    """Every form of ``value`` to look for (see :func:`found_in`)."""
    raw = value.encode()
    b64 = {e for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)) for e in (enc, enc.rstrip(b"="))}
    encoded = {f.encode() for f in encoded_forms(value)} - b64 - {raw}
    return Needles(field, raw, tuple(sorted(encoded)), tuple(sorted(b64)),
                   tuple(sorted(f.encode() for f in base64_fragments(value, min_length))))


def _token_in(content: bytes, forms: tuple[bytes, ...]) -> bool:
    return any(next(find_tokens(content, form), None) is not None for form in forms)


def found_in(content: bytes, needles: Needles) -> str | None:
    """How the value appears in ``content``: ``plain``, ``encoded``, ``base64`` (``None``: it does not)."""
    if _token_in(content, (needles.plain,)):
        return "plain"
    if _token_in(content, needles.encoded):
        return "encoded"
    if _token_in(content, needles.b64) or any(frag in content for frag in needles.fragments):
        return "base64"
    return None


def find_leaks(
    files: Mapping[PurePosixPath, bytes],
    sensitive: Mapping[str, str],
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
) -> list[Leak]:
    """Sensitive values (in any encoded form) in outputs that are not ``*.sops.*``.

    Values shorter than :data:`MIN_GUARDED_LENGTH` and boolean-like words are
    ignored. One finding per file and field; a plain match wins over an encoded one.
    """
    checks = [needles_for(field, value, min_length) for field, value in sorted(sensitive.items())
              if is_guarded(value)]
    forms = {id(n): (n.plain, *n.encoded, *n.b64, *n.fragments) for n in checks}
    search = _NeedleSearch(form for group in forms.values() for form in group)
    leaks: list[Leak] = []
    for path in sorted(files, key=lambda p: PurePosixPath(p).as_posix()):
        if is_secret_path(path):
            continue
        content = files[path]
        present = search.occurring_in(content)  # one pass: which forms occur at all (as substrings)
        if not present:
            continue
        for needles in checks:
            if not present.intersection(forms[id(needles)]):
                continue
            form = found_in(content, needles)  # the token-boundary rules decide
            if form is not None:
                leaks.append(Leak(PurePosixPath(path), needles.field, form))
    return leaks


class _NeedleSearch:
    """Which of many byte strings occur in a text, in one pass over the text.

    Testing each needle with ``in`` costs needles times text (8 000 sensitive values in a
    1 MB config took most of a minute); here every needle is filed under its first
    ``k`` bytes and the text is scanned once, looking each ``k``-byte window up.
    """

    #: below this many needles, one C-speed ``in`` per needle beats a Python-level scan
    SCAN_FROM = 200

    def __init__(self, needles: Iterable[bytes]) -> None:
        self.unique = {n for n in needles if n}
        self.k = min((len(n) for n in self.unique), default=0)
        self.by_prefix: dict[bytes, list[bytes]] = {}
        for n in self.unique:
            self.by_prefix.setdefault(n[:self.k], []).append(n)

    def occurring_in(self, text: bytes) -> set[bytes]:
        if len(self.unique) < self.SCAN_FROM:
            return {n for n in self.unique if n in text}
        k, index = self.k, self.by_prefix
        found: set[bytes] = set()
        if len(text) < k:
            return found
        for i in range(len(text) - k + 1):
            candidates = index.get(text[i:i + k])
            if candidates:
                found.update(n for n in candidates if text.startswith(n, i))
        return found


def check_leaks(
    files: Mapping[PurePosixPath, bytes],
    sensitive: Mapping[str, str],
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
) -> None:
    """Raise :class:`LeakError` listing every leak (file and field, never the value)."""
    leaks = find_leaks(files, sensitive, min_length=min_length)
    if leaks:
        lines = [f"{len(leaks)} sensitive value(s) found in plaintext output:"] + [f"  {leak}" for leak in leaks]
        raise LeakError("\n".join(lines),
                        hint="if a template writes the value there, move it into a *.sops.* output (a Secret) "
                             "and reference it from there; if the file only holds the same text by coincidence "
                             "(a name, a word), the sensitive value is guessable: choose another one")
