"""Settings: ``gitops-render.toml`` or ``makejinja.toml``, the environment, CLI overrides."""

from gitops_render.settings.config import RuntimeEnv, Settings, find_root, load_settings, resolve_key_file

__all__ = ["RuntimeEnv", "Settings", "find_root", "load_settings", "resolve_key_file"]
