"""The Flux dependency graph of a rendered tree: what depends on what, and what a change touches.

:func:`build_graph` turns the validation stage's :class:`~gitops_render.validate.flux_tree.FluxTree`
into a typed graph; :func:`graph_of_tree` reads a rendered tree from disk first.

Nodes are Flux Kustomizations, HelmReleases and sources (GitRepository, OCIRepository,
HelmRepository, HelmChart, Bucket, ExternalArtifact). A node is ``tree`` (rendered here),
``provided`` (exists in the cluster: ``[gitops-render.cluster]`` provided_kustomizations,
provided_sources, bootstrap_sources) or ``dangling`` (referenced, but neither).

Edges: ``applies`` (a Kustomization applies the object: its ``spec.path`` holds it),
``dependsOn`` (Kustomization -> the Kustomization it waits for) and ``sourceRef``
(Kustomization ``sourceRef``, HelmRelease ``chartRef`` / ``chart.spec.sourceRef`` -> the source).
``dependsOn`` cycles are marked on their nodes and edges.

What a change touches (:meth:`FluxGraph.blast_radius`): everything that waits for a
changed node (``dependsOn``), pulls from it (``sourceRef``), re-applies it (the Kustomization
applying a changed HelmRelease or source), or gets its spec from it (what a Kustomization
whose own manifest changed applies: its ``patches``, ``postBuild`` and ``targetNamespace``
flow down), transitively.

>>> g = FluxGraph.from_parts([GraphNode(ResourceKey("Kustomization", "a", "db"), "tree"),
...     GraphNode(ResourceKey("Kustomization", "a", "app"), "tree")],
...     [GraphEdge(ResourceKey("Kustomization", "a", "app"), ResourceKey("Kustomization", "a", "db"), "dependsOn")])
>>> sorted(str(k) for k in g.blast_radius(Changes(frozenset({ResourceKey("Kustomization", "a", "db")}))))
['a/Kustomization/app']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Literal

from gitops_render.validate.flux_checks import find_cycles
from gitops_render.validate.flux_models import (
    DEFAULT_NAMESPACE,
    HELM_GROUP,
    SOURCE_GROUP,
    FluxKustomization,
    HelmRelease,
    ObjectRef,
    OCIRepository,
    api_group,
)
from gitops_render.validate.flux_tree import FluxTree, TreeObject, build_tree
from gitops_render.validate.kustomize import load_kustomizations
from gitops_render.validate.model import ResourceKey, ValidateSettings
from gitops_render.validate.yamltree import load_tree

__all__ = [
    "SOURCE_KINDS",
    "Changes",
    "EdgeKind",
    "FluxGraph",
    "GraphEdge",
    "GraphNode",
    "Origin",
    "build_graph",
    "graph_of_tree",
]

Origin = Literal["tree", "provided", "dangling"]
EdgeKind = Literal["applies", "dependsOn", "sourceRef"]

SOURCE_KINDS: frozenset[str] = frozenset({
    "GitRepository", "OCIRepository", "HelmRepository", "HelmChart", "Bucket", "ExternalArtifact"})
"""The kinds drawn as sources (``ExternalArtifact`` of any API group, the rest of Flux's source API)."""


@dataclass(frozen=True)
class GraphNode:
    """One Kustomization, HelmRelease or source.

    ``file``/``line`` say where it is written (``None`` unless ``origin`` is ``tree``);
    ``owner`` is the Kustomization that applies it; ``detail`` a short description for
    labels (the chart and version of a HelmRelease, the tag of an OCIRepository).
    """

    key: ResourceKey
    origin: Origin
    file: str | None = None
    line: int | None = None
    owner: ResourceKey | None = None
    detail: str = ""
    in_cycle: bool = False

    @property
    def role(self) -> Literal["Kustomization", "HelmRelease", "source"]:
        """How it is drawn: a Kustomization, a HelmRelease, or a source."""
        if self.key.kind == "Kustomization":
            return "Kustomization"
        return "HelmRelease" if self.key.kind == "HelmRelease" else "source"


@dataclass(frozen=True)
class GraphEdge:
    """``source`` applies / dependsOn / sourceRef ``target``; ``dangling`` when the target is dangling."""

    source: ResourceKey
    target: ResourceKey
    kind: EdgeKind
    in_cycle: bool = False
    dangling: bool = False


@dataclass(frozen=True)
class Changes:
    """What changed, as graph nodes.

    ``nodes`` changed (their own manifest, or, for a Kustomization, an object it applies
    that is not a node: a ConfigMap, a Deployment ...); ``specs`` are the Kustomizations
    whose *own* manifest changed (what they apply inherits the change); ``unplaced`` names
    changes no node of the graph holds (a file outside every Kustomization's path, a
    Kustomization that only the other side has).
    """

    nodes: frozenset[ResourceKey] = frozenset()
    specs: frozenset[ResourceKey] = frozenset()
    unplaced: tuple[str, ...] = ()

    def __or__(self, other: Changes) -> Changes:
        return Changes(self.nodes | other.nodes, self.specs | other.specs,
                       tuple(dict.fromkeys(self.unplaced + other.unplaced)))

    def __bool__(self) -> bool:
        return bool(self.nodes or self.unplaced)


@dataclass(frozen=True)
class FluxGraph:
    """Nodes by identity (in a stable order), edges, cycles, and which file holds which node."""

    nodes: Mapping[ResourceKey, GraphNode]
    edges: tuple[GraphEdge, ...]
    cycles: tuple[tuple[ResourceKey, ...], ...] = ()
    # file (relative to the output root) -> the nodes written in it / the Kustomizations applying it
    file_nodes: Mapping[str, frozenset[ResourceKey]] = field(default_factory=dict)
    file_owners: Mapping[str, frozenset[ResourceKey]] = field(default_factory=dict)
    # Kustomization -> its spec.path (normalized), for files the tree does not hold yet
    paths: Mapping[ResourceKey, PurePosixPath] = field(default_factory=dict)

    @classmethod
    def from_parts(cls, nodes: Iterable[GraphNode], edges: Iterable[GraphEdge]) -> FluxGraph:
        """A graph of given nodes and edges (cycles not computed; for tests and examples)."""
        return cls(MappingProxyType({n.key: n for n in nodes}), tuple(edges))

    def edges_from(self, key: ResourceKey, kind: EdgeKind | None = None) -> list[GraphEdge]:
        """The edges leaving ``key`` (of one kind)."""
        return [e for e in self.edges if e.source == key and (kind is None or e.kind == kind)]

    def edges_to(self, key: ResourceKey, kind: EdgeKind | None = None) -> list[GraphEdge]:
        """The edges arriving at ``key`` (of one kind)."""
        return [e for e in self.edges if e.target == key and (kind is None or e.kind == kind)]

    @property
    def dangling(self) -> list[GraphNode]:
        """The referenced nodes that are neither rendered nor provided."""
        return [n for n in self.nodes.values() if n.origin == "dangling"]

    def namespaces(self) -> list[str]:
        """Every namespace that holds a node, sorted (``""``: cluster-scoped)."""
        return sorted({k.namespace for k in self.nodes})

    def touched_by(self, path: PurePosixPath | str) -> Changes:
        """The nodes a changed file (relative to the output root) touches.

        Its own Flux objects, else the Kustomizations that apply it (a ConfigMap, a Deployment
        changed: the Kustomization is); a file the tree does
        not hold (one configure would add) goes to the Kustomization(s) whose ``spec.path``
        holds it most closely.
        """
        rel = str(PurePosixPath(path))
        own = self.file_nodes.get(rel, frozenset())
        owners = self.file_owners.get(rel, frozenset())
        if own:  # its Kustomizations re-apply it: they are in the blast radius, not changed themselves
            return Changes(own, frozenset(k for k in own if k.kind == "Kustomization"))
        if owners:
            return Changes(owners)
        p = PurePosixPath(rel)
        best = [(len(folder.parts), key) for key, folder in self.paths.items() if folder in p.parents]
        if not best:
            return Changes(unplaced=(rel,))
        depth = max(d for d, _ in best)
        return Changes(frozenset(k for d, k in best if d == depth))

    def touched_by_resource(self, unit: str, kind: str, namespace: str | None, name: str) -> Changes:
        """The node a changed built resource is: itself if it is a node, else the Kustomization ``unit`` (``ns/name``).

        ``namespace`` is the resource's as built (``None`` when kustomize left it unset:
        Flux's ``targetNamespace`` sets it, so it is looked up among what ``unit`` applies).
        """
        unit_key = ResourceKey.parse(unit, kind="Kustomization")
        if unit_key is None or unit_key not in self.nodes:
            return Changes(unplaced=(f"Kustomization {unit}",))
        if namespace:
            key = ResourceKey(kind, namespace, name)
            if key in self.nodes:
                return Changes(frozenset({key}), frozenset({key}) if kind == "Kustomization" else frozenset())
        for edge in self.edges_from(unit_key, "applies"):
            if edge.target.kind == kind and edge.target.name == name:
                specs = frozenset({edge.target}) if kind == "Kustomization" else frozenset()
                return Changes(frozenset({edge.target}), specs)
        return Changes(frozenset({unit_key}))

    def dependents(self, key: ResourceKey, *, spec_changed: bool = False) -> set[ResourceKey]:
        """The nodes one change of ``key`` reaches in one step (see the module docstring)."""
        out = {e.source for e in self.edges_to(key) if e.kind in ("dependsOn", "sourceRef")}
        node = self.nodes.get(key)
        if node is not None and node.owner is not None and key.kind != "Kustomization":
            out.add(node.owner)  # it re-applies the changed object, and its health follows it
        if spec_changed:
            out |= {e.target for e in self.edges_from(key, "applies")}
        return out

    def blast_radius(self, changes: Changes) -> frozenset[ResourceKey]:
        """Every node a change reaches (transitively), the changed nodes themselves excluded."""
        seen: set[ResourceKey] = set()
        frontier = [(k, k in changes.specs) for k in sorted(changes.nodes) if k in self.nodes]
        while frontier:
            key, spec = frontier.pop()
            for nxt in sorted(self.dependents(key, spec_changed=spec)):
                if nxt not in seen and nxt in self.nodes:
                    seen.add(nxt)
                    # a Kustomization reached through its applier inherits the spec change
                    inherited = spec and nxt.kind == "Kustomization" and self.nodes[nxt].owner == key
                    frontier.append((nxt, inherited))
        return frozenset(seen - changes.nodes)


# --------------------------------------------------------------------------- building it


def _source_detail(obj: TreeObject) -> str:
    if obj.doc.kind == "OCIRepository":
        oci = OCIRepository.from_document(obj.doc.data, namespace=obj.namespace)
        return oci.chart_key.replace("@", " ") if oci.chart_key else (oci.tag or oci.semver or "")
    return ""


def _release_detail(hr: HelmRelease, sources: Mapping[ResourceKey, TreeObject]) -> str:
    if hr.chart_name:
        return f"{hr.chart_name} {hr.chart_version}" if hr.chart_version else hr.chart_name
    if hr.chart_ref is not None and hr.chart_ref.key in sources:
        return _source_detail(sources[hr.chart_ref.key])
    return ""


@dataclass
class _Builder:
    tree: FluxTree
    settings: ValidateSettings
    nodes: dict[ResourceKey, GraphNode] = field(default_factory=dict)
    edges: dict[tuple[ResourceKey, ResourceKey, EdgeKind], GraphEdge] = field(default_factory=dict)
    file_nodes: dict[str, set[ResourceKey]] = field(default_factory=dict)
    file_owners: dict[str, set[ResourceKey]] = field(default_factory=dict)

    def place(self, obj: TreeObject, key: ResourceKey, detail: str = "") -> None:
        self.nodes.setdefault(key, GraphNode(key, "tree", str(obj.file), obj.doc.line, obj.owner, detail))
        self.file_nodes.setdefault(str(obj.file), set()).add(key)
        if obj.owner is not None:
            self.edge(obj.owner, key, "applies")

    def edge(self, source: ResourceKey, target: ResourceKey, kind: EdgeKind) -> None:
        self.edges.setdefault((source, target, kind), GraphEdge(source, target, kind))

    def reference(self, source: ResourceKey, ref: ObjectRef | ResourceKey, kind: EdgeKind,
                  provided: frozenset[ResourceKey]) -> None:
        target = ref.key if isinstance(ref, ObjectRef) else ref
        if target not in self.nodes:
            self.nodes[target] = GraphNode(target, "provided" if target in provided else "dangling")
        self.edge(source, target, kind)

    def build(self) -> FluxGraph:
        tree, settings = self.tree, self.settings
        sources: dict[ResourceKey, TreeObject] = {}
        for obj in tree.objects:  # sources first: HelmRelease labels name their chart
            kind, name = obj.doc.kind, obj.doc.name
            if kind in SOURCE_KINDS and name and (api_group(obj.doc.api_version) == SOURCE_GROUP
                                                  or kind == "ExternalArtifact"):
                key = ResourceKey(kind, obj.namespace or DEFAULT_NAMESPACE, name)
                sources.setdefault(key, obj)
        models: dict[ResourceKey, FluxKustomization] = {}
        for obj, model in tree.kustomizations:
            models.setdefault(model.key, model)
            self.place(obj, model.key)
        releases: list[HelmRelease] = []
        for obj in tree.of_kind(HELM_GROUP, "HelmRelease"):
            hr = HelmRelease.from_document(obj.doc.data, namespace=obj.namespace)
            releases.append(hr)
            self.place(obj, hr.key, _release_detail(hr, sources))
        for key, obj in sources.items():
            self.place(obj, key, _source_detail(obj))
        for obj in tree.objects:  # what each Kustomization applies that is not a node
            if obj.owner is not None:
                self.file_owners.setdefault(str(obj.file), set()).add(obj.owner)
        known_sources = settings.known_sources
        provided_ks = settings.provided_kustomizations
        for key, model in models.items():
            for dep in model.depends_on:
                self.reference(key, dep, "dependsOn", provided_ks)
            if model.source_ref is not None:
                self.reference(key, model.source_ref, "sourceRef", known_sources)
        for hr in releases:
            for ref in (hr.chart_ref, hr.chart_source):
                if ref is not None:
                    self.reference(hr.key, ref, "sourceRef", known_sources)
        depends = {k: [e.target for e in self.edges.values() if e.source == k and e.kind == "dependsOn"]
                   for k in models}
        cycles = [tuple(c) for c in find_cycles(depends)]
        cycle_nodes = {k for c in cycles for k in c}
        cycle_edges = {(a, b) for c in cycles for a, b in itertools.pairwise(c)}
        nodes = {k: GraphNode(n.key, n.origin, n.file, n.line, n.owner, n.detail, k in cycle_nodes)
                 for k, n in self.nodes.items()}
        edges = tuple(GraphEdge(e.source, e.target, e.kind,
                                e.kind == "dependsOn" and (e.source, e.target) in cycle_edges,
                                nodes[e.target].origin == "dangling")
                      for e in self.edges.values())
        return FluxGraph(
            MappingProxyType(dict(sorted(nodes.items(), key=lambda kv: _order(kv[1])))), edges, tuple(cycles),
            MappingProxyType({f: frozenset(v) for f, v in self.file_nodes.items()}),
            MappingProxyType({f: frozenset(v) for f, v in self.file_owners.items()}),
            MappingProxyType({k: m.normalized_path() for k, m in models.items()
                              if m.source_ref is None or m.source_ref.kind == "GitRepository"}),
        )


_ROLE_ORDER = {"Kustomization": 0, "HelmRelease": 1, "source": 2}


def _order(node: GraphNode) -> tuple[str, int, str, str]:
    return (node.key.namespace, _ROLE_ORDER[node.role], node.key.kind, node.key.name)


def build_graph(tree: FluxTree, settings: ValidateSettings) -> FluxGraph:
    """The Flux graph of a tree (see the module docstring)."""
    return _Builder(tree, settings).build()


def graph_of_tree(output_root: Path, settings: ValidateSettings) -> FluxGraph:
    """Read the rendered tree under ``output_root`` (the settings' roots) and build its graph."""
    files = load_tree(Path(output_root), settings.roots)
    kustomizations = load_kustomizations(files, Path(output_root))
    return build_graph(build_tree(files, kustomizations, Path(output_root)), settings)

