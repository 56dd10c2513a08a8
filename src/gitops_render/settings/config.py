"""The settings API in one import (the declaration, the loader, the hooks).

The modules: :mod:`.model` (the declaration), :mod:`.convert` (converters derived
from it), :mod:`.sources` (files, ``MAKEJINJA_*``, overrides), :mod:`.runtime` (the
environment), :mod:`.hooks` (``exec_pre``/``exec_post``), :mod:`.docs`
(``docs/configuration.md``).
"""

from __future__ import annotations

from gitops_render.settings.hooks import run_exec_hooks
from gitops_render.settings.model import (
    CLUSTER_TEMPLATE_DELIMITERS,
    UNDEFINED_MODES,
    ClusterTable,
    Delimiters,
    Internal,
    Prefix,
    SecretsTable,
    Settings,
    ValidateTable,
    Whitespace,
)
from gitops_render.settings.runtime import RuntimeEnv, resolve_key_file
from gitops_render.settings.sources import GITOPS_RENDER_FILE, MAKEJINJA_FILE, find_root, load_settings

__all__ = [
    "CLUSTER_TEMPLATE_DELIMITERS",
    "GITOPS_RENDER_FILE",
    "MAKEJINJA_FILE",
    "UNDEFINED_MODES",
    "ClusterTable",
    "Delimiters",
    "Internal",
    "Prefix",
    "RuntimeEnv",
    "SecretsTable",
    "Settings",
    "ValidateTable",
    "Whitespace",
    "find_root",
    "load_settings",
    "resolve_key_file",
    "run_exec_hooks",
]
