"""``makejinja.config`` placeholder: plugins receive gitops-render's ``Settings`` as ``config``.

``Config`` exists so that ``from makejinja.config import Config`` (used in type
annotations) keeps working; it is never instantiated by gitops-render.
"""

from __future__ import annotations

__all__ = ["Config"]


class Config:
    """Placeholder for makejinja's ``Config``; the real object passed is ``gitops_render.config.Settings``."""
