"""Names every stage agrees on: which outputs are secrets, where gitops-render keeps its state.

One predicate decides whether a path is a secret (``*.sops.*``): the renderer encrypts what it
accepts, the leak guard skips it, validation decrypts it, diff masks it. The sops creation-rules
file itself (``.sops.yaml`` / ``.sops.yml``) is configuration, not a secret.

>>> [is_secret_path(p) for p in ("a/secret.sops.yaml", ".sops.yaml", ".sops.json", "x.sops.", "a/s.sops.enc.yaml")]
[True, False, True, False, True]
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

__all__ = ["SOPS_CONFIG_NAMES", "STATE_DIR", "is_secret_path"]

STATE_DIR = ".gitops-render"
"""gitops-render's state directory, relative to the repository root."""

SOPS_CONFIG_NAMES = frozenset({".sops.yaml", ".sops.yml"})
"""File names of sops' creation-rules file (never a secret)."""

_SECRET_NAME = re.compile(r"^.*\.sops\..+$", re.DOTALL)


def is_secret_path(relpath: PurePosixPath | str) -> bool:
    """True for outputs named ``*.sops.*`` (the ones that must be encrypted)."""
    name = PurePosixPath(relpath).name
    return name not in SOPS_CONFIG_NAMES and _SECRET_NAME.match(name) is not None
