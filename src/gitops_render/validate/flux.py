"""Typed models of the Flux objects in a rendered tree, and checks of the graph they form.

:func:`build_tree` works out, statically, which objects each Flux
``Kustomization`` applies (its ``spec.path`` followed through kustomizations, see
:func:`gitops_render.kustomize.walk`) and so their effective namespace
(``targetNamespace`` > kustomization ``namespace:`` > ``metadata.namespace``).
It also applies a parent Kustomization's ``spec.patches`` to the child
Kustomizations it applies (cluster-template adds ``postBuild`` to every app that way).

:func:`check_graph` then reports, as ``flux`` findings:

* ``dependsOn`` naming a Kustomization that is neither in the tree nor provided, and cycles;
* ``sourceRef`` naming a missing source; ``spec.path`` that does not exist;
* HelmRelease ``chartRef`` / ``chart.spec.sourceRef`` naming a missing source;
* ``postBuild.substituteFrom`` naming a missing Secret/ConfigMap (unless ``optional``);
* ``${VAR}`` in an object a Kustomization substitutes that no substitution source provides
  (``${VAR:=default}`` has a default and is fine; ``$${VAR}`` is an escape).
  A provided (external) source provides the names listed for it in
  ``provided_variables``, or any name when it is not listed there (a note says so).

>>> ks = FluxKustomization.from_document({"metadata": {"name": "app"}, "spec": {
...     "path": "./kubernetes/apps/demo/app", "sourceRef": {"kind": "GitRepository", "name": "flux-system",
...     "namespace": "flux-system"}, "dependsOn": [{"name": "db"}]}}, namespace="demo")
>>> ks.key, ks.depends_on, ks.source_ref.key
('demo/app', ('demo/db',), 'flux-system/GitRepository/flux-system')
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_render.validate.kustomize import (
    GeneratedObject,
    KustomizationFile,
    WalkResult,
    walk,
)
from gitops_render.validate.model import Finding, ValidateSettings
from gitops_render.validate.yamltree import YamlDocument, YamlFile, is_kustomize_config

__all__ = [
    "FLUX_KUSTOMIZE_GROUP",
    "FluxKustomization",
    "FluxPatch",
    "FluxTree",
    "GitRepository",
    "GraphResult",
    "HelmRelease",
    "HelmRepository",
    "OCIRepository",
    "ObjectRef",
    "SubstituteRef",
    "TreeObject",
    "build_tree",
    "check_graph",
    "find_cycles",
    "find_variables",
]

FLUX_KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
_HELM_GROUP = "helm.toolkit.fluxcd.io"
_SOURCE_GROUP = "source.toolkit.fluxcd.io"
_SUBSTITUTE_DISABLED = "kustomize.toolkit.fluxcd.io/substitute"
_DEFAULT_NAMESPACE = "default"

# Kinds that have no namespace, so targetNamespace / kustomize namespace do not apply.
_CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
    "PersistentVolume", "PriorityClass", "IngressClass", "RuntimeClass", "CSIDriver", "VolumeSnapshotClass",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "APIService", "GatewayClass", "ClusterIssuer",
    "CiliumClusterwideNetworkPolicy", "CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy",
    "CiliumBGPClusterConfig", "CiliumBGPPeerConfig", "CiliumBGPAdvertisement", "ClusterSecretStore",
    "ClusterImageCatalog", "ClusterExternalSecret", "Node",
})


def _get(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or ``None`` when a level is missing or not a mapping.

    >>> _get({"a": {"b": 1}}, "a", "b"), _get({"a": 1}, "a", "b")
    (1, None)
    """
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _group(api_version: str | None) -> str:
    """The API group of an apiVersion (``""`` for the core group)."""
    return api_version.rsplit("/", 1)[0] if api_version and "/" in api_version else ""


@dataclass(frozen=True)
class ObjectRef:
    """A reference to a namespaced object by kind.

    >>> ObjectRef("OCIRepository", "app-template", "demo").key
    'demo/OCIRepository/app-template'
    """

    kind: str
    name: str
    namespace: str

    @property
    def key(self) -> str:
        """``namespace/Kind/name``, the form of ``provided_sources``."""
        return f"{self.namespace}/{self.kind}/{self.name}"

    @classmethod
    def from_spec(cls, ref: Any, default_namespace: str) -> ObjectRef | None:
        """From a ``{kind, name, namespace?}`` mapping; ``None`` when kind or name is missing."""
        kind, name = _str(_get(ref, "kind")), _str(_get(ref, "name"))
        if kind is None or name is None:
            return None
        return cls(kind, name, _str(_get(ref, "namespace")) or default_namespace)


@dataclass(frozen=True)
class SubstituteRef:
    """One ``postBuild.substituteFrom`` entry (resolved in the Kustomization's namespace)."""

    kind: str
    name: str
    optional: bool = False


@dataclass(frozen=True)
class FluxPatch:
    """One ``spec.patches`` entry of a Flux Kustomization (strategic-merge patches only)."""

    patch: Mapping[str, Any]
    target: Mapping[str, Any]

    def applies_to(self, doc: YamlDocument, namespace: str | None) -> bool:
        """Whether ``target`` selects ``doc`` (group/version/kind, name/namespace regex, simple label selector)."""
        t = self.target
        api = doc.api_version or ""
        checks = [
            ("group", _group(api)), ("version", api.rsplit("/", 1)[-1]), ("kind", doc.kind or ""),
        ]
        for key, actual in checks:
            if isinstance(t.get(key), str) and t[key] and t[key] != actual:
                return False
        for key, actual in (("name", doc.name or ""), ("namespace", namespace or "")):
            if isinstance(t.get(key), str) and t[key] and not re.fullmatch(t[key], actual):
                return False
        selector = t.get("labelSelector")
        if isinstance(selector, str) and selector.strip():
            labels = _get(doc.data, "metadata", "labels") or {}
            for term in selector.split(","):
                key, _, value = term.strip().partition("=")
                if key and (key not in labels or (value and str(labels.get(key)) != value.lstrip("="))):
                    return False
        return True


def _merge(base: Any, patch: Any) -> Any:
    """Strategic-merge as kustomize applies it to custom resources: maps merge, lists are replaced.

    >>> _merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2], "d": None}})
    {'a': {'b': 1, 'c': [2]}}
    """
    if not isinstance(base, Mapping) or not isinstance(patch, Mapping):
        return patch
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(base.get(key), value)
    return merged


@dataclass(frozen=True)
class FluxKustomization:
    """A ``kustomize.toolkit.fluxcd.io`` Kustomization, as far as the graph checks need it."""

    name: str
    namespace: str
    path: str | None = None
    source_ref: ObjectRef | None = None
    depends_on: tuple[str, ...] = ()
    target_namespace: str | None = None
    post_build: bool = False
    substitute: Mapping[str, str] = field(default_factory=dict)
    substitute_from: tuple[SubstituteRef, ...] = ()
    patches: tuple[FluxPatch, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        """``namespace/name``, the form of ``provided_kustomizations`` and ``dependsOn``."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> FluxKustomization:
        """Model a parsed Kustomization; ``namespace`` is its effective namespace.

        >>> FluxKustomization.from_document({"metadata": {"name": "a", "namespace": "x"},
        ...     "spec": {"postBuild": {"substitute": {"A": "1"}, "substituteFrom": [{"kind": "Secret", "name": "s"}]}}}
        ... ).substitute_from
        (SubstituteRef(kind='Secret', name='s', optional=False),)
        """
        ns = namespace or _str(_get(data, "metadata", "namespace")) or _DEFAULT_NAMESPACE
        spec = _get(data, "spec") or {}
        depends: list[str] = []
        for dep in _get(spec, "dependsOn") or []:
            if _str(_get(dep, "name")):
                depends.append(f"{_str(_get(dep, 'namespace')) or ns}/{dep['name']}")
        post = _get(spec, "postBuild")
        subst = _get(post, "substitute")
        subst_from = tuple(
            SubstituteRef(str(ref.get("kind")), ref["name"], bool(ref.get("optional", False)))
            for ref in (_get(post, "substituteFrom") or []) if _str(_get(ref, "name"))
        )
        patches: list[FluxPatch] = []
        for entry in _get(spec, "patches") or []:
            text = _get(entry, "patch")
            try:
                parsed = yaml.safe_load(text) if isinstance(text, str) else None
            except yaml.YAMLError:
                parsed = None
            if isinstance(parsed, Mapping):
                patches.append(FluxPatch(parsed, _get(entry, "target") or {}))
        return cls(
            name=_str(_get(data, "metadata", "name")) or "<unnamed>",
            namespace=ns,
            path=_str(_get(spec, "path")),
            source_ref=ObjectRef.from_spec(_get(spec, "sourceRef"), ns),
            depends_on=tuple(depends),
            target_namespace=_str(_get(spec, "targetNamespace")),
            post_build=isinstance(post, Mapping),
            substitute={str(k): str(v) for k, v in subst.items()} if isinstance(subst, Mapping) else {},
            substitute_from=subst_from,
            patches=tuple(patches),
            data=data,
        )

    def patched(self, patches: Sequence[FluxPatch]) -> FluxKustomization:
        """This Kustomization with a parent's strategic-merge patches applied."""
        if not patches:
            return self
        data: Any = self.data
        for patch in patches:
            # with a target, the patch's own identity is ignored (kustomize sets it to each target's)
            body = {k: v for k, v in patch.patch.items() if k not in ("apiVersion", "kind", "metadata")}
            meta = {k: v for k, v in (_get(patch.patch, "metadata") or {}).items() if k not in ("name", "namespace")}
            data = _merge(data, {**body, "metadata": meta} if meta else body)
        return replace(FluxKustomization.from_document(data, namespace=self.namespace), data=data)

    def normalized_path(self) -> PurePosixPath:
        """``spec.path`` relative to the source root (``"."`` when unset).

        >>> FluxKustomization("a", "b", path="./kubernetes/apps/").normalized_path()
        PurePosixPath('kubernetes/apps')
        """
        return PurePosixPath(posixpath.normpath((self.path or ".").lstrip("/")))


@dataclass(frozen=True)
class HelmRelease:
    """A ``helm.toolkit.fluxcd.io`` HelmRelease: where its chart comes from and its values.

    >>> hr = HelmRelease.from_document({"metadata": {"name": "x"}, "spec": {"chartRef": {
    ...     "kind": "OCIRepository", "name": "app-template"}, "values": {"a": 1}}}, namespace="demo")
    >>> hr.chart_ref.key, hr.values
    ('demo/OCIRepository/app-template', {'a': 1})
    """

    name: str
    namespace: str
    chart_ref: ObjectRef | None = None
    chart_source: ObjectRef | None = None
    chart_name: str | None = None
    chart_version: str | None = None
    values: Mapping[str, Any] | None = None
    has_values_from: bool = False

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> HelmRelease:
        """Model a parsed HelmRelease; ``namespace`` is its effective namespace."""
        ns = namespace or _str(_get(data, "metadata", "namespace")) or _DEFAULT_NAMESPACE
        chart_spec = _get(data, "spec", "chart", "spec")
        values = _get(data, "spec", "values")
        version = _get(chart_spec, "version")
        return cls(
            name=_str(_get(data, "metadata", "name")) or "<unnamed>",
            namespace=ns,
            chart_ref=ObjectRef.from_spec(_get(data, "spec", "chartRef"), ns),
            chart_source=ObjectRef.from_spec(_get(chart_spec, "sourceRef"), ns),
            chart_name=_str(_get(chart_spec, "chart")),
            chart_version=str(version) if isinstance(version, (str, int, float)) else None,
            values=values if isinstance(values, Mapping) else None,
            has_values_from=bool(_get(data, "spec", "valuesFrom")),
        )


@dataclass(frozen=True)
class OCIRepository:
    """A ``source.toolkit.fluxcd.io`` OCIRepository.

    >>> OCIRepository.from_document({"metadata": {"name": "a"}, "spec": {
    ...     "url": "oci://ghcr.io/bjw-s-labs/helm/app-template", "ref": {"tag": "4.5.0"}}}, namespace="demo").chart_key
    'app-template@4.5.0'
    """

    name: str
    namespace: str
    url: str | None = None
    tag: str | None = None
    semver: str | None = None
    digest: str | None = None

    @property
    def chart_key(self) -> str | None:
        """``chart@tag`` for a chart artifact with a fixed tag, else ``None``."""
        if not self.url or not self.tag:
            return None
        return f"{self.url.rstrip('/').rsplit('/', 1)[-1]}@{self.tag}"

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> OCIRepository:
        """Model a parsed OCIRepository."""
        ref = _get(data, "spec", "ref")
        tag = _get(ref, "tag")
        return cls(
            name=_str(_get(data, "metadata", "name")) or "<unnamed>",
            namespace=namespace or _str(_get(data, "metadata", "namespace")) or _DEFAULT_NAMESPACE,
            url=_str(_get(data, "spec", "url")),
            tag=str(tag) if isinstance(tag, (str, int, float)) else None,
            semver=_str(_get(ref, "semver")),
            digest=_str(_get(ref, "digest")),
        )


@dataclass(frozen=True)
class GitRepository:
    """A ``source.toolkit.fluxcd.io`` GitRepository."""

    name: str
    namespace: str
    url: str | None = None

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> GitRepository:
        """Model a parsed GitRepository."""
        return cls(_str(_get(data, "metadata", "name")) or "<unnamed>",
                   namespace or _str(_get(data, "metadata", "namespace")) or _DEFAULT_NAMESPACE,
                   _str(_get(data, "spec", "url")))


@dataclass(frozen=True)
class HelmRepository:
    """A ``source.toolkit.fluxcd.io`` HelmRepository."""

    name: str
    namespace: str
    url: str | None = None
    type: str | None = None

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> HelmRepository:
        """Model a parsed HelmRepository."""
        return cls(_str(_get(data, "metadata", "name")) or "<unnamed>",
                   namespace or _str(_get(data, "metadata", "namespace")) or _DEFAULT_NAMESPACE,
                   _str(_get(data, "spec", "url")), _str(_get(data, "spec", "type")))


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class TreeObject:
    """One object as applied: a document, its effective namespace, and who applies it.

    A document pulled in by several kustomizations (a shared component) is one
    object per namespace it lands in.
    """

    file: PurePosixPath
    doc: YamlDocument
    namespace: str | None
    owner: str | None = None  # key of the Flux Kustomization applying it

    @property
    def label(self) -> str | None:
        """``"Kind namespace/name"`` with the effective namespace."""
        return self.doc.label(self.namespace)

    def is_kind(self, group: str, kind: str) -> bool:
        """Whether this is a ``kind`` of API ``group``."""
        return self.doc.kind == kind and _group(self.doc.api_version) == group


@dataclass(frozen=True)
class GeneratedInstance:
    """A ConfigMap/Secret a kustomize generator makes, in the namespace it lands in."""

    obj: GeneratedObject
    namespace: str | None
    file: PurePosixPath


@dataclass(frozen=True)
class FluxTree:
    """Every object of the tree with its effective namespace, and the Flux Kustomizations."""

    output_root: Path
    objects: tuple[TreeObject, ...]
    generated: tuple[GeneratedInstance, ...]
    kustomizations: tuple[tuple[TreeObject, FluxKustomization], ...]
    flux_paths: frozenset[PurePosixPath]
    reached_dirs: frozenset[PurePosixPath]
    by_document: Mapping[tuple[PurePosixPath, int], frozenset[str | None]] = field(default_factory=dict)

    def namespaces(self, file: PurePosixPath, index: int) -> set[str | None]:
        """The effective namespaces of one document."""
        return set(self.by_document.get((file, index), ()))

    def label(self, file: PurePosixPath, doc: YamlDocument) -> str | None:
        """A label for findings: the effective namespace when it is unambiguous."""
        spaces = self.namespaces(file, doc.index)
        return doc.label(spaces.pop() if len(spaces) == 1 else None)

    def of_kind(self, group: str, kind: str) -> Iterator[TreeObject]:
        """The objects of one kind."""
        return (o for o in self.objects if o.is_kind(group, kind))


def _effective_namespace(doc: YamlDocument, *forced: str | None) -> str | None:
    """The first forced namespace that applies, else the written one (``None`` if cluster-scoped)."""
    if doc.kind in _CLUSTER_SCOPED:
        return None
    return next((ns for ns in forced if ns), None) or doc.namespace


def build_tree(files: Mapping[PurePosixPath, YamlFile], kustomizations: Mapping[PurePosixPath, KustomizationFile],
               output_root: Path) -> FluxTree:
    """Work out which Flux Kustomization applies which object, and in which namespace.

    Root Kustomizations (those no other Kustomization applies, such as
    ``kubernetes/flux/cluster/ks.yaml``) are expanded first, then the ones they
    apply, breadth first, so that a child gets its parent's ``targetNamespace``
    and ``spec.patches``. Documents no Kustomization applies keep their written namespace.
    """
    ks_docs = [(rel, doc) for rel, parsed in files.items() for doc in parsed.manifests
               if doc.kind == "Kustomization" and _group(doc.api_version) == FLUX_KUSTOMIZE_GROUP]
    walks: dict[tuple[PurePosixPath, int], WalkResult] = {}
    for rel, doc in ks_docs:
        model = FluxKustomization.from_document(doc.data)
        if model.source_ref is None or model.source_ref.kind == "GitRepository":
            walks[(rel, doc.index)] = walk(model.normalized_path(), kustomizations, files)
        else:  # the path is inside an OCI artifact / bucket, not in this repository
            walks[(rel, doc.index)] = WalkResult((), (), frozenset())
    reached_by: dict[PurePosixPath, set[tuple[PurePosixPath, int]]] = {}
    for origin, result in walks.items():
        for r in result.files:
            reached_by.setdefault(r.file, set()).add(origin)

    objects: list[TreeObject] = []
    generated: list[GeneratedInstance] = []
    models: list[tuple[TreeObject, FluxKustomization]] = []
    done: set[tuple[PurePosixPath, int, str | None]] = set()
    applied_files: set[PurePosixPath] = set()
    queue: list[tuple[TreeObject, Sequence[FluxPatch]]] = []

    def enqueue(obj: TreeObject, patches: Sequence[FluxPatch]) -> None:
        ident = (obj.file, obj.doc.index, obj.namespace)
        if ident not in done:
            done.add(ident)
            queue.append((obj, patches))

    def drain() -> None:
        while queue:
            obj, patches = queue.pop(0)
            model = FluxKustomization.from_document(obj.doc.data, namespace=obj.namespace)
            model = model.patched([p for p in patches if p.applies_to(obj.doc, obj.namespace)])
            models.append((obj, model))
            result = walks[(obj.file, obj.doc.index)]
            for r in result.files:
                applied_files.add(r.file)
                for doc in files[r.file].manifests:
                    if is_kustomize_config(r.file, doc):
                        continue
                    child = TreeObject(r.file, doc, _effective_namespace(doc, model.target_namespace, r.namespace),
                                       model.key)
                    if (r.file, doc.index) in walks:
                        enqueue(child, model.patches)
                    elif (r.file, doc.index, child.namespace, model.key) not in seen_objects:
                        seen_objects.add((r.file, doc.index, child.namespace, model.key))
                        objects.append(child)
            for gen, forced, kfile in result.generated:
                ns = model.target_namespace or forced or gen.namespace
                generated.append(GeneratedInstance(gen, ns, kfile))

    seen_objects: set[tuple[PurePosixPath, int, str | None, str]] = set()
    for rel, doc in ks_docs:  # roots: applied by no other Kustomization
        if not (reached_by.get(rel, set()) - {(rel, doc.index)}):
            enqueue(TreeObject(rel, doc, _effective_namespace(doc)), ())
    drain()
    for rel, doc in ks_docs:  # Kustomizations only reachable from a cycle
        if not any(o.file == rel and o.doc.index == doc.index for o, _ in models):
            enqueue(TreeObject(rel, doc, _effective_namespace(doc)), ())
            drain()
    objects.extend(o for o, _ in models)
    for rel, parsed in files.items():
        if rel in applied_files:
            continue
        for doc in parsed.manifests:
            if (rel, doc.index) not in walks and not is_kustomize_config(rel, doc):
                objects.append(TreeObject(rel, doc, _effective_namespace(doc)))
    flux_paths = frozenset(m.normalized_path() for _, m in models)
    reached_dirs = frozenset(d for result in walks.values() for d in result.dirs)
    by_document: dict[tuple[PurePosixPath, int], set[str | None]] = {}
    for obj in objects:
        by_document.setdefault((obj.file, obj.doc.index), set()).add(obj.namespace)
    return FluxTree(output_root, tuple(objects), tuple(generated), tuple(models), flux_paths, reached_dirs,
                    {k: frozenset(v) for k, v in by_document.items()})


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class GraphResult:
    """Findings and notes of :func:`check_graph`."""

    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()


_VAR = re.compile(r"(?<!\$)\$\{(#?)([_a-zA-Z][_a-zA-Z0-9]*)([^}]*)\}")


def find_variables(data: Any) -> set[str]:
    """Names of ``${VAR}`` without a default in the keys and string values of ``data``.

    >>> sorted(find_variables({"a": "${A}.${B:=x}.$${C}", "${D}": ["${E:-y}", "${F/x/y}", 3]}))
    ['A', 'D', 'F']
    """
    found: set[str] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "${" in item:
            for match in _VAR.finditer(item):
                rest = match.group(3)
                if not rest.startswith((":=", ":-", "=", "-")):
                    found.add(match.group(2))
    return found


def find_cycles(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each dependency cycle once, as a path that starts and ends at its smallest node.

    >>> find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"], "e": ["a"]})
    [['a', 'b', 'c', 'a'], ['d', 'd']]
    """
    cycles: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                i = cycle.index(min(cycle))
                cycles.add(tuple(cycle[i:] + cycle[:i]))
            elif nxt not in state and nxt in edges:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return [list(c) + [c[0]] for c in sorted(cycles)]


def _substitution_disabled(doc: YamlDocument) -> bool:
    meta = _get(doc.data, "metadata") or {}
    return any(isinstance(m, Mapping) and m.get(_SUBSTITUTE_DISABLED) == "disabled"
               for m in (meta.get("annotations"), meta.get("labels")))


def _data_keys(data: Any) -> set[str]:
    """Keys of a Secret/ConfigMap (``data``, ``stringData``, ``binaryData``)."""
    keys: set[str] = set()
    for section in ("data", "stringData", "binaryData"):
        value = _get(data, section)
        if isinstance(value, Mapping):
            keys.update(str(k) for k in value)
    return keys


@dataclass
class _Checker:
    """Runs the graph checks over one tree (mutable only while it runs)."""

    tree: FluxTree
    settings: ValidateSettings
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, set[str] | None] = field(default_factory=dict)

    def add(self, obj: TreeObject, message: str) -> None:
        self.findings.append(Finding("flux", str(obj.file), obj.label, message))

    def index(self, group: str | None, kinds: Sequence[str]) -> dict[str, TreeObject]:
        """Objects of ``kinds`` keyed by ``namespace/Kind/name``."""
        out: dict[str, TreeObject] = {}
        for o in self.tree.objects:
            if o.doc.kind in kinds and (group is None or _group(o.doc.api_version) == group) and o.doc.name:
                out.setdefault(f"{o.namespace or _DEFAULT_NAMESPACE}/{o.doc.kind}/{o.doc.name}", o)
        return out

    def run(self) -> GraphResult:
        self.sources = self.substitution_sources()
        self.check_kustomizations()
        self.check_helm_releases()
        return GraphResult(tuple(self.findings), tuple(self.notes))

    def check_kustomizations(self) -> None:
        models = self.tree.kustomizations
        known = {m.key for _, m in models} | set(self.settings.provided_kustomizations)
        sources = set(self.index(_SOURCE_GROUP, ("GitRepository", "OCIRepository", "Bucket"))) | set(
            self.settings.provided_sources) | {k for k in self.index(None, ("ExternalArtifact",))}
        edges: dict[str, list[str]] = {}
        first: dict[str, TreeObject] = {}
        for obj, model in models:
            first.setdefault(model.key, obj)
            edges.setdefault(model.key, [])
            for dep in model.depends_on:
                edges[model.key].append(dep)
                if dep not in known:
                    self.add(obj, f"dependsOn {dep} names a Kustomization that is neither in the tree nor in "
                                  f"[gitops-render.cluster] provided_kustomizations")
            self.check_source_and_path(obj, model, sources)
            self.check_substitutions(obj, model)
        for cycle in find_cycles(edges):
            self.add(first[cycle[0]],
                     "dependsOn cycle: " + " -> ".join(cycle) + " (none of them can ever become ready)")

    def check_source_and_path(self, obj: TreeObject, model: FluxKustomization, sources: set[str]) -> None:
        ref = model.source_ref
        if ref is not None and ref.key not in sources:
            self.add(obj, f"sourceRef {ref.key} names a source that is neither in the tree nor in "
                          f"[gitops-render.cluster] provided_sources")
        if ref is not None and ref.kind == "GitRepository":
            path = model.normalized_path()
            if not (self.tree.output_root / path).is_dir():
                self.add(obj, f"spec.path {model.path} does not exist (it is relative to the repository root)")

    def substitution_sources(self) -> dict[str, set[str] | None]:
        """Known substitution sources ``namespace/Kind/name`` -> their keys (``None``: any)."""
        out: dict[str, set[str] | None] = {}
        for key, obj in self.index("", ("Secret", "ConfigMap")).items():
            out[key] = _data_keys(obj.doc.data) | (out.get(key) or set())
        for gen in self.tree.generated:
            key = f"{gen.namespace or _DEFAULT_NAMESPACE}/{gen.obj.kind}/{gen.obj.name}"
            out[key] = None if gen.obj.keys is None else set(gen.obj.keys)
        for key in self.settings.provided_substitutions:
            if key not in out:
                listed = self.settings.provided_variables.get(key)
                out[key] = set(listed) if listed is not None else None
        return out

    def check_substitutions(self, obj: TreeObject, model: FluxKustomization) -> None:
        if not model.post_build:
            return
        available: set[str] = set(model.substitute)
        open_ended: list[str] = []
        sources = self.sources
        for ref in model.substitute_from:
            key = f"{model.namespace}/{ref.kind}/{ref.name}"
            if key not in sources:
                if not ref.optional:
                    self.add(obj, f"postBuild.substituteFrom names {ref.kind} {model.namespace}/{ref.name}, "
                                  f"which is neither rendered in the tree nor in [gitops-render.cluster] "
                                  f"provided_substitutions")
                continue
            keys = sources[key]
            if keys is None:
                open_ended.append(key)
            else:
                available |= keys
        missing: dict[str, list[TreeObject]] = {}
        for child in self.tree.objects:
            if child.owner != model.key or _substitution_disabled(child.doc):
                continue
            for var in find_variables(child.doc.data) - available:
                missing.setdefault(var, []).append(child)
        if open_ended and missing:
            names = ", ".join(f"${{{var}}}" for var in sorted(missing))
            self.notes.append(f"Kustomization {model.key}: {names} assumed to come from "
                              f"{', '.join(open_ended)}, whose keys are unknown (list them in "
                              f"[gitops-render.cluster.provided_variables] to check them)")
            return
        for var, users in sorted(missing.items()):
            for child in users:
                self.findings.append(Finding(
                    "flux", str(child.file), child.label,
                    f"${{{var}}} has no value: Kustomization {model.key} substitutes it, but neither "
                    f"postBuild.substitute nor its substituteFrom sources define {var} (give it a default "
                    f"with ${{{var}:=value}}, or escape it as $${{{var}}})"))

    def check_helm_releases(self) -> None:
        charts = set(self.index(_SOURCE_GROUP, ("OCIRepository", "HelmChart")))
        chart_sources = set(self.index(_SOURCE_GROUP, ("HelmRepository", "GitRepository", "Bucket")))
        provided = set(self.settings.provided_sources)
        for obj in self.tree.of_kind(_HELM_GROUP, "HelmRelease"):
            hr = HelmRelease.from_document(obj.doc.data, namespace=obj.namespace)
            if hr.chart_ref is None and hr.chart_source is None:
                self.add(obj, "has neither spec.chartRef nor spec.chart.spec.sourceRef, so Flux cannot find its chart")
            for ref, pool, field_name in ((hr.chart_ref, charts, "spec.chartRef"),
                                          (hr.chart_source, chart_sources, "spec.chart.spec.sourceRef")):
                if ref is not None and ref.key not in pool and ref.key not in provided:
                    self.add(obj, f"{field_name} {ref.key} names a source that is neither in the tree (in that "
                                  f"namespace) nor in [gitops-render.cluster] provided_sources")


def check_graph(tree: FluxTree, settings: ValidateSettings) -> GraphResult:
    """All ``flux`` findings of the tree (see the module docstring)."""
    return _Checker(tree, settings).run()
