"""A stand-in for the ``makejinja`` package, for plugins written against makejinja's API.

gitops-render registers this package as ``makejinja`` (with ``makejinja.plugin``,
``makejinja.loader`` and ``makejinja.config``) in ``sys.modules`` only when the real
makejinja cannot be imported, so that plugins doing ``from makejinja.plugin import
Plugin`` or subclassing ``makejinja.plugin.Plugin`` work without it. It provides the
plugin Protocol and type aliases, nothing that renders.
"""

from __future__ import annotations

from . import config, plugin

loader = plugin

__all__ = ["config", "loader", "plugin"]
