"""Which values of a document sops encrypts: one reading of a creation rule's (or a file's) settings.

sops decides per key, from exactly one of ``encrypted_regex``, ``unencrypted_regex``,
``encrypted_suffix`` or ``unencrypted_suffix`` (sops refuses more than one). A key the setting
selects decides for its whole subtree; without a setting sops runs in ``unencrypted_suffix``
mode with ``_unencrypted``: everything is encrypted except keys ending in it. Both the write
stage (the ciphertext it is about to commit) and validation (the files in the tree) ask this
module, so the two can never disagree about what must be ``ENC[...]``.

>>> rule = EncryptionRule.of({"encrypted_regex": "^(data|stringData)$"})
>>> [(dotted(p), leaf) for p, leaf in rule.must_encrypt({"kind": "Secret", "stringData": {"a": "x"}})]
[('stringData.a', 'x')]
>>> EncryptionRule.of({}).describe()
"unencrypted_suffix '_unencrypted'"
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_UNENCRYPTED_SUFFIX", "SECRET_SECTIONS", "EncryptionRule", "KeyPath", "dotted", "lookup"]

DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"
"""sops' default when a rule selects nothing: every key except those ending in it is encrypted."""

SECRET_SECTIONS = ("data", "stringData")
"""The sections of a Kubernetes Secret whose values must always be encrypted, whatever the rule says."""

KeyPath = tuple[str | int, ...]

# (setting, True: a selected key is encrypted / False: a selected key is not)
_SELECTORS: tuple[tuple[str, bool], ...] = (
    ("encrypted_regex", True), ("unencrypted_regex", False), ("encrypted_suffix", True), ("unencrypted_suffix", False))


@dataclass(frozen=True)
class EncryptionRule:
    """One selecting setting of a sops creation rule or ``sops:`` metadata block."""

    setting: str
    value: str

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> EncryptionRule:
        """The rule the settings describe (an invalid regex counts as absent)."""
        for name, _ in _SELECTORS:
            value = settings.get(name)
            if isinstance(value, str) and value:
                if name.endswith("_regex"):
                    try:
                        re.compile(value)
                    except re.error:
                        continue
                return cls(name, value)
        return cls("unencrypted_suffix", DEFAULT_UNENCRYPTED_SUFFIX)

    @property
    def default(self) -> bool:
        """Whether a key the setting does not select is encrypted (top level)."""
        return self.setting.startswith("unencrypted")

    def selects(self, key: str) -> bool | None:
        """True: the subtree of ``key`` is encrypted; False: it is not; None: inherited."""
        encrypts = dict(_SELECTORS)[self.setting]
        hit = (re.search(self.value, key) is not None if self.setting.endswith("_regex")
               else key.endswith(self.value))
        return encrypts if hit else None

    def describe(self) -> str:
        """``encrypted_regex '^(data|stringData)$'`` — for messages."""
        return f"{self.setting} {self.value!r}"

    def leaves(self, node: Any, *, secret: bool = False) -> Iterator[tuple[KeyPath, Any, bool, bool]]:
        """``(path, leaf, encrypted by the rule, forced)`` of every leaf; ``forced``: a Secret section.

        The top-level ``sops`` block (the metadata itself) is skipped.
        """
        if not isinstance(node, Mapping):
            return
        for key, value in node.items():
            if key == "sops":
                continue
            chosen = self.selects(str(key))
            forced = secret and str(key) in SECRET_SECTIONS
            yield from _leaves(self, value, (str(key),), self.default if chosen is None else chosen, forced)

    def must_encrypt(self, node: Any, *, secret: bool = True) -> Iterator[tuple[KeyPath, Any]]:
        """``(path, plaintext leaf)`` of every non-empty value that must be ``ENC[...]``."""
        for path, leaf, encrypted, forced in self.leaves(node, secret=secret):
            if (encrypted or forced) and leaf is not None and leaf != "":
                yield path, leaf


def _leaves(rule: EncryptionRule, node: Any, path: KeyPath, inside: bool, forced: bool
            ) -> Iterator[tuple[KeyPath, Any, bool, bool]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            chosen = rule.selects(str(key))
            yield from _leaves(rule, value, (*path, str(key)), inside if chosen is None else chosen, forced)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(rule, value, (*path, i), inside, forced)
    else:
        yield path, node, inside, forced


def dotted(path: Sequence[str | int]) -> str:
    """``stringData.a[0]`` for a key path (``<root>`` for the empty one)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def lookup(node: Any, path: Sequence[Any]) -> tuple[bool, Any]:
    """``(found, value)`` of ``path`` inside ``node`` (mappings by key, lists by index)."""
    for part in path:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if (isinstance(node, Mapping) and part in node) or in_list:
            node = node[part]
        else:
            return False, None
    return True, node
