"""Settings: ``gitops-render.toml`` or ``makejinja.toml``, the environment, CLI overrides."""

from gitops_render.settings.config import Settings, load_settings

__all__ = ["Settings", "load_settings"]
