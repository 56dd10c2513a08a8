"""What a picture of the graph shows: highlighted nodes, and the rest collapsed.

Without changes every node is drawn. With changes (``graph --changed``, ``--base REF``,
the pull-request comment) the picture is the changed subtree: the changed nodes, their
blast radius (:meth:`~gitops_render.validate.graph.FluxGraph.blast_radius`), and their
direct neighbours for context (what they depend on, their sources, the Kustomization
applying them). Everything else is collapsed: one "+N more" node per namespace that
still shows something, and one node for the namespaces that show nothing, so a large
repository stays readable.

>>> from gitops_render.validate.graph import Changes, FluxGraph, GraphEdge, GraphNode
>>> from gitops_render.validate.model import ResourceKey
>>> ks = [ResourceKey("Kustomization", "apps", n) for n in ("db", "app", "web", "other")]
>>> g = FluxGraph.from_parts([GraphNode(k, "tree") for k in ks], [GraphEdge(ks[1], ks[0], "dependsOn")])
>>> v = make_view(g, Changes(frozenset({ks[0]})))
>>> [n.key.name for n in v.shown], [k.name for c in v.collapsed for k in c.keys], v.style(ks[1])
(['db', 'app'], ['web', 'other'], 'blast')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gitops_render.validate.graph import Changes, FluxGraph, GraphEdge, GraphNode
from gitops_render.validate.model import ResourceKey

__all__ = ["FOLD_AT", "Collapsed", "GraphView", "Style", "kind_line", "make_view", "namespace_label"]

Style = Literal["changed", "blast", "provided", "dangling"]


def namespace_label(namespace: str) -> str:
    """How a namespace is titled (``""``, cluster-scoped objects: ``(cluster)``)."""
    return namespace or "(cluster)"


@dataclass(frozen=True)
class Collapsed:
    """Nodes not drawn one by one: those of one namespace (``namespace``), or of several (``None``)."""

    namespace: str | None
    keys: tuple[ResourceKey, ...]
    namespaces: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``+5 more: 2 Kustomizations, 2 HelmReleases, 1 source`` (and the namespaces, when several)."""
        counts: dict[str, int] = {"Kustomization": 0, "HelmRelease": 0, "source": 0}
        for k in self.keys:
            role = k.kind if k.kind in ("Kustomization", "HelmRelease") else "source"
            counts[role] = counts.get(role, 0) + 1
        parts = [f"{n} {role}{'s' if n > 1 else ''}" for role, n in counts.items() if n]
        head = f"+{len(self.keys)} more" if self.namespace is not None else \
            f"{len(self.namespaces)} more namespace{'s' if len(self.namespaces) > 1 else ''}"
        text = f"{head}: {', '.join(parts)}"
        if self.namespace is None:
            names = ", ".join(namespace_label(n) for n in self.namespaces[:6])
            text += f" ({names}{', ...' if len(self.namespaces) > 6 else ''})"
        return text


@dataclass(frozen=True)
class GraphView:
    """The nodes and edges to draw, how each node is highlighted, and what is collapsed."""

    graph: FluxGraph
    shown: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    changed: frozenset[ResourceKey] = frozenset()
    blast: frozenset[ResourceKey] = frozenset()
    collapsed: tuple[Collapsed, ...] = ()
    unplaced: tuple[str, ...] = ()
    focused: bool = False
    folded: Mapping[ResourceKey, int] = field(default_factory=dict)
    """Shared sources whose ``sourceRef`` edges from Kustomizations are not drawn: how many each stands for."""

    def style(self, key: ResourceKey) -> Style | None:
        """The highlight of one node: changed, in the blast radius, provided, dangling, or none."""
        if key in self.changed:
            return "changed"
        if key in self.blast:
            return "blast"
        node = self.graph.nodes.get(key)
        if node is not None and node.origin != "tree":
            return node.origin
        return None

    def groups(self) -> list[tuple[str, list[GraphNode], Collapsed | None]]:
        """Per namespace (in the graph's order): its drawn nodes and its "+N more" node."""
        out: dict[str, tuple[list[GraphNode], list[Collapsed]]] = {}
        for node in self.shown:
            out.setdefault(node.key.namespace, ([], []))[0].append(node)
        for c in self.collapsed:
            if c.namespace is not None:
                out.setdefault(c.namespace, ([], []))[1].append(c)
        return [(ns, nodes, more[0] if more else None) for ns, (nodes, more) in sorted(out.items())]

    @property
    def others(self) -> Collapsed | None:
        """The node standing for the namespaces that show nothing (``None`` when there are none)."""
        return next((c for c in self.collapsed if c.namespace is None), None)

    @property
    def summary(self) -> str:
        """One line for a legend: how many changed, in the blast radius, collapsed."""
        hidden = sum(len(c.keys) for c in self.collapsed)
        text = f"{len(self.changed)} changed, {len(self.blast)} in the blast radius"
        return text + (f", {hidden} not involved (collapsed)" if hidden else "")


def kind_line(view: GraphView, node: GraphNode) -> str:
    """The second line of a node's label: its kind, and what it is (provided, missing, chart, shared source)."""
    kind = node.key.kind
    if node.origin == "provided":
        text = f"{kind} (provided)"
    elif node.origin == "dangling":
        text = f"{kind}: MISSING"
    else:
        text = f"{kind} · {node.detail}" if node.detail else kind
    if node.key in view.folded:
        text += f" · source of {view.folded[node.key]} Kustomizations"
    return text


def _context(graph: FluxGraph, focus: Iterable[ResourceKey]) -> set[ResourceKey]:
    """The direct neighbours of ``focus``: what it applies, depends on and pulls from, and who applies it."""
    out: set[ResourceKey] = set()
    for key in focus:
        out |= {e.target for e in graph.edges_from(key)}
        node = graph.nodes.get(key)
        if node is not None and node.owner is not None:
            out.add(node.owner)
    return out


@dataclass
class _Collapser:
    graph: FluxGraph
    keep: set[ResourceKey]
    collapsed: list[Collapsed] = field(default_factory=list)

    def run(self) -> list[Collapsed]:
        hidden: dict[str, list[ResourceKey]] = {}
        for key in self.graph.nodes:
            if key not in self.keep:
                hidden.setdefault(key.namespace, []).append(key)
        shown_ns = {k.namespace for k in self.keep}
        elsewhere: list[ResourceKey] = []
        for ns, keys in sorted(hidden.items()):
            if ns in shown_ns:
                self.collapsed.append(Collapsed(ns, tuple(keys)))
            else:
                elsewhere.extend(keys)
        if elsewhere:
            self.collapsed.append(Collapsed(None, tuple(elsewhere), tuple(sorted({k.namespace for k in elsewhere}))))
        return self.collapsed


FOLD_AT = 4
"""A source that this many Kustomizations or more pull from (the bootstrap GitRepository) gets no edge from each."""


def _fold(edges: Iterable[GraphEdge]) -> tuple[tuple[GraphEdge, ...], dict[ResourceKey, int]]:
    """The edges without the Kustomization -> shared-source ones, and how many each shared source stood for."""
    edges = tuple(edges)
    users: dict[ResourceKey, int] = {}
    for e in edges:
        if e.kind == "sourceRef" and e.source.kind == "Kustomization" and not e.dangling:
            users[e.target] = users.get(e.target, 0) + 1
    shared = {k: n for k, n in users.items() if n >= FOLD_AT}
    kept = tuple(e for e in edges if not (e.kind == "sourceRef" and e.source.kind == "Kustomization"
                                          and e.target in shared))
    return kept, shared


def make_view(graph: FluxGraph, changes: Changes | None = None, *, collapse: bool = True) -> GraphView:
    """What to draw: everything, or, given ``changes``, the changed subtree with the rest collapsed.

    The ``sourceRef`` edges from Kustomizations to a source that :data:`FOLD_AT` or more of
    the drawn ones use (the bootstrap ``flux-system`` GitRepository, typically) are folded
    into that source's label ("source of 14 Kustomizations") instead of crossing the picture.
    """
    if changes is None or not changes.nodes:  # nothing to highlight: the whole graph
        edges, folded = _fold(graph.edges)
        unplaced = changes.unplaced if changes is not None else ()
        return GraphView(graph, tuple(graph.nodes.values()), edges, folded=folded, unplaced=unplaced,
                         focused=changes is not None)
    changed = frozenset(k for k in changes.nodes if k in graph.nodes)
    blast = graph.blast_radius(changes)
    if collapse:
        keep = set(changed | blast)
        keep |= _context(graph, keep)
    else:
        keep = set(graph.nodes)
    shown = tuple(n for k, n in graph.nodes.items() if k in keep)
    edges, folded = _fold(e for e in graph.edges if e.source in keep and e.target in keep)
    collapsed = tuple(_Collapser(graph, keep).run()) if collapse else ()
    return GraphView(graph, shown, edges, changed, blast, collapsed, changes.unplaced, focused=True, folded=folded)
