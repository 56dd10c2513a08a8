"""Pictures of the Flux graph (:mod:`gitops_render.validate.graph`): Mermaid, Graphviz DOT, SVG.

:func:`~gitops_render.draw.view.make_view` decides what is drawn (every node, or, for a
change, the changed nodes, their blast radius and their neighbours, the rest collapsed
into one "+N more" node per namespace); :mod:`~gitops_render.draw.mermaid` and
:mod:`~gitops_render.draw.dot` write it. Nothing here reads files or runs a stage.
"""

from __future__ import annotations

from gitops_render.draw.dot import to_dot, to_svg
from gitops_render.draw.mermaid import LEGEND, to_mermaid
from gitops_render.draw.view import Collapsed, GraphView, make_view

__all__ = ["LEGEND", "Collapsed", "GraphView", "make_view", "to_dot", "to_mermaid", "to_svg"]
