"""Stage 3: render the templates in memory (makejinja semantics, plugins, compiled cache)."""

from gitops_render.render.engine import RenderedFile, RenderResult, check_input_symlinks, render_tree

__all__ = ["RenderResult", "RenderedFile", "check_input_symlinks", "render_tree"]
