"""The graph as a Mermaid flowchart (GitHub renders it in markdown: READMEs, PR comments).

One subgraph per namespace. Shapes say what a node is: a box for a Kustomization, a
rounded box for a HelmRelease, a cylinder for a source. Edges: ``-->`` applies,
``==>|dependsOn|`` waits for, ``-.->`` pulls from (sourceRef). ``classDef`` styles:
``changed`` (orange), ``blast`` (the blast radius: yellow), ``provided`` (exists in the
cluster, not rendered here: grey, dashed), ``dangling`` (referenced but nowhere: red,
dashed), ``cycle`` (a dependsOn cycle: red border and red edges), ``more`` (collapsed).

>>> from gitops_render.draw.view import make_view
>>> from gitops_render.validate.graph import FluxGraph, GraphEdge, GraphNode
>>> from gitops_render.validate.model import ResourceKey
>>> a, b = ResourceKey("Kustomization", "apps", "app"), ResourceKey("Kustomization", "apps", "db")
>>> print(to_mermaid(make_view(FluxGraph.from_parts([GraphNode(a, "tree"), GraphNode(b, "provided")],
...     [GraphEdge(a, b, "dependsOn")]))).splitlines()[2])
    ks_apps_app["app<br/><i>Kustomization</i>"]
"""

from __future__ import annotations

import re

from gitops_render.draw.view import GraphView, kind_line, namespace_label
from gitops_render.validate.graph import GraphEdge, GraphNode
from gitops_render.validate.model import ResourceKey

__all__ = ["CLASS_DEFS", "LEGEND", "node_ids", "to_mermaid"]

CLASS_DEFS: dict[str, str] = {
    "ks": "fill:#e7f5ff,stroke:#1c7ed6,color:#0b2e4f",
    "hr": "fill:#ebfbee,stroke:#2f9e44,color:#0b3d17",
    "src": "fill:#f3f0ff,stroke:#7048e8,color:#2b1a66",
    "provided": "fill:#f8f9fa,stroke:#868e96,stroke-dasharray:5 3,color:#495057",
    "dangling": "fill:#fff5f5,stroke:#e03131,stroke-width:2px,stroke-dasharray:4 2,color:#c92a2a",
    "blast": "fill:#fff3bf,stroke:#f08c00,stroke-width:2px,color:#5c3c00",
    "changed": "fill:#ffa94d,stroke:#d9480f,stroke-width:3px,color:#2b1000",
    "cycle": "stroke:#e03131,stroke-width:3px",
    "more": "fill:#ffffff,stroke:#adb5bd,stroke-dasharray:2 2,color:#868e96",
}
"""The styles, in the order Mermaid applies them (a later class wins)."""

LEGEND = ("orange: changed · yellow: blast radius (waits for, pulls from or re-applies a change) · "
          "dashed grey: provided by the cluster · dashed red: dangling reference · red border: dependsOn cycle · "
          "`-->` applies · `==>` dependsOn · `-.->` sourceRef")
"""The legend printed under a picture in markdown."""

_ROLE_CLASS = {"Kustomization": "ks", "HelmRelease": "hr", "source": "src"}
_ROLE_PREFIX = {"Kustomization": "ks", "HelmRelease": "hr", "source": "src"}
_EDGE = {"applies": "-->", "dependsOn": "==>|dependsOn|", "sourceRef": "-.->"}


def _escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label (entity codes for the characters Mermaid reads)."""
    return (text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
            .replace("`", "#96;"))


def node_ids(keys: list[ResourceKey]) -> dict[ResourceKey, str]:
    """A readable, unique Mermaid id per node (``ks_flux_system_cluster_apps``)."""
    ids: dict[ResourceKey, str] = {}
    used: set[str] = set()
    for key in keys:
        role = "Kustomization" if key.kind == "Kustomization" else "HelmRelease" if key.kind == "HelmRelease" \
            else "source"
        prefix = _ROLE_PREFIX[role] if role != "source" else key.kind.lower()
        base = re.sub(r"[^A-Za-z0-9]+", "_", f"{prefix}_{key.namespace}_{key.name}").strip("_")
        ident, n = base, 2
        while ident in used:
            ident, n = f"{base}_{n}", n + 1
        used.add(ident)
        ids[key] = ident
    return ids


def _node(view: GraphView, node: GraphNode, ident: str) -> str:
    label = f"{_escape(node.key.name)}<br/><i>{_escape(kind_line(view, node))}</i>"
    if node.role == "HelmRelease":
        return f'{ident}("{label}")'
    if node.role == "source":
        return f'{ident}[("{label}")]'
    return f'{ident}["{label}"]'


def to_mermaid(view: GraphView, *, direction: str = "LR") -> str:
    """The view as a Mermaid ``flowchart`` (no markdown fence)."""
    ids = node_ids([n.key for n in view.shown])
    lines = [f"flowchart {direction}"]
    for i, (namespace, nodes, more) in enumerate(view.groups()):
        lines.append(f'  subgraph ns{i}["{_escape(namespace_label(namespace))}"]')
        for node in nodes:
            lines.append(f"    {_node(view, node, ids[node.key])}")
        if more is not None:
            lines.append(f'    more{i}[["{_escape(more.label)}"]]')
        lines.append("  end")
    others = view.others
    if others is not None:
        lines.append(f'  others[["{_escape(others.label)}"]]')
    red: list[int] = []
    edges: list[GraphEdge] = list(view.edges)
    for index, edge in enumerate(edges):
        lines.append(f"  {ids[edge.source]} {_EDGE[edge.kind]} {ids[edge.target]}")
        if edge.in_cycle or edge.dangling:
            red.append(index)
    for name, style in CLASS_DEFS.items():
        lines.append(f"  classDef {name} {style}")
    members: dict[str, list[str]] = {name: [] for name in CLASS_DEFS}
    for node in view.shown:
        members[_ROLE_CLASS[node.role]].append(ids[node.key])
        highlight = view.style(node.key)
        if highlight is not None:
            members[highlight].append(ids[node.key])
        if node.in_cycle:
            members["cycle"].append(ids[node.key])
    members["more"] += [f"more{i}" for i, (_, _, more) in enumerate(view.groups()) if more is not None]
    if others is not None:
        members["more"].append("others")
    for name, idents in members.items():
        if idents:
            lines.append(f"  class {','.join(idents)} {name}")
    if red:
        lines.append(f"  linkStyle {','.join(map(str, red))} stroke:#e03131,stroke-width:3px")
    return "\n".join(lines) + "\n"
