"""Stage 3: render the templates in memory (makejinja semantics, plugins, compiled cache)."""

from gitops_render.render.engine import RenderedFile, RenderResult, render_tree

__all__ = ["RenderResult", "RenderedFile", "render_tree"]
