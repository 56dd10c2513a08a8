"""The graph as Graphviz DOT, and as SVG through the real ``dot`` (Debian: ``graphviz``).

The same picture as the Mermaid one (:mod:`gitops_render.draw.mermaid`): one cluster per
namespace, a box per Kustomization, a rounded box per HelmRelease, a cylinder per source;
the same colours for changed, blast radius, provided, dangling, cycle, collapsed. Each
node's tooltip is the file it is written in.

>>> from gitops_render.draw.view import make_view
>>> from gitops_render.validate.graph import FluxGraph, GraphNode
>>> from gitops_render.validate.model import ResourceKey
>>> text = to_dot(make_view(FluxGraph.from_parts([GraphNode(ResourceKey("Kustomization", "apps", "a"), "tree")], [])))
>>> text.splitlines()[0], '"ks_apps_a" [' in text
('digraph flux {', True)
"""

from __future__ import annotations

from html import escape

from gitops_render.core.errors import ToolMissingError
from gitops_render.core.runner import ToolRunner
from gitops_render.draw.mermaid import node_ids
from gitops_render.draw.view import Collapsed, GraphView, Style, kind_line, namespace_label
from gitops_render.validate.graph import GraphNode

__all__ = ["GRAPHVIZ_HINT", "to_dot", "to_svg"]

GRAPHVIZ_HINT = ("install Graphviz for --format svg (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                 "graphviz; or set GITOPS_RENDER_DOT), or use --format dot / mermaid")

# fill, border, text, per role and per highlight (the Mermaid classDefs' colours)
_ROLE = {"Kustomization": ("#e7f5ff", "#1c7ed6", "#0b2e4f"), "HelmRelease": ("#ebfbee", "#2f9e44", "#0b3d17"),
         "source": ("#f3f0ff", "#7048e8", "#2b1a66")}
_STYLE: dict[Style, tuple[str, str, str]] = {
    "changed": ("#ffa94d", "#d9480f", "#2b1000"), "blast": ("#fff3bf", "#f08c00", "#5c3c00"),
    "provided": ("#f8f9fa", "#868e96", "#495057"), "dangling": ("#fff5f5", "#e03131", "#c92a2a")}
_SHAPE = {"Kustomization": ("box", ""), "HelmRelease": ("box", "rounded,"), "source": ("cylinder", "")}
_EDGE = {"applies": 'color="#495057"', "dependsOn": 'color="#1c7ed6", penwidth=2, label="dependsOn"',
         "sourceRef": 'color="#7048e8", style=dashed'}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(view: GraphView, node: GraphNode, ident: str) -> str:
    style = view.style(node.key)
    fill, border, font = _STYLE[style] if style is not None else _ROLE[node.role]
    shape, rounded = _SHAPE[node.role]
    dashed = "dashed," if node.origin != "tree" else ""
    kind = kind_line(view, node)
    label = f'<<b>{escape(node.key.name)}</b><br/><font point-size="9">{escape(kind)}</font>>'
    width = 3 if style == "changed" or node.in_cycle else 2 if style in ("blast", "dangling") else 1
    color = "#e03131" if node.in_cycle else border
    tooltip = node.file or f"{node.key} ({node.origin})"
    return (f'  {_q(ident)} [label={label}, shape={shape}, style="{rounded}{dashed}filled", fillcolor="{fill}", '
            f'color="{color}", fontcolor="{font}", penwidth={width}, tooltip={_q(tooltip)}];')


def _more(ident: str, more: Collapsed) -> str:
    return (f'  {_q(ident)} [label={_q(more.label)}, shape=note, style="dashed", color="#adb5bd", '
            f'fontcolor="#868e96"];')


def to_dot(view: GraphView, *, rankdir: str = "LR") -> str:
    """The view as a Graphviz ``digraph``."""
    ids = node_ids([n.key for n in view.shown])
    lines = ["digraph flux {",
             f'  graph [rankdir={rankdir}, fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=0.7, '
             f'newrank=true, compound=true];',
             '  node [fontname="Helvetica", fontsize=11, margin="0.15,0.06"];',
             '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];']
    for i, (namespace, nodes, more) in enumerate(view.groups()):
        lines += [f"  subgraph cluster_{i} {{",
                  f'  label={_q(namespace_label(namespace))}; style="rounded"; color="#ced4da"; '
                  f'bgcolor="#fcfcfd"; fontcolor="#495057";']
        lines += [_node(view, n, ids[n.key]) for n in nodes]
        if more is not None:
            lines.append(_more(f"more{i}", more))
        lines.append("  }")
    if view.others is not None:
        lines.append(_more("others", view.others))
    for edge in view.edges:
        attrs = _EDGE[edge.kind]
        if edge.in_cycle or edge.dangling:
            attrs += ', color="#e03131", penwidth=2.5'
        lines.append(f"  {_q(ids[edge.source])} -> {_q(ids[edge.target])} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(dot_text: str, runner: ToolRunner) -> str:
    """``dot -Tsvg`` of a DOT text (the real Graphviz; :class:`ToolMissingError` with the fix without it)."""
    try:
        return str(runner.run("dot", ["-Tsvg"], input=dot_text, timeout=120).stdout)
    except ToolMissingError as exc:
        raise ToolMissingError("dot", exc.message.removeprefix("dot: "), hint=GRAPHVIZ_HINT) from None
