"""Which Flux Kustomization applies which object of the tree, and in which namespace.

:func:`build_tree` works out, statically, which objects each Flux ``Kustomization``
applies (its ``spec.path`` followed through kustomizations, see
:func:`gitops_render.validate.kustomize.walk`) and so their effective namespace
(``targetNamespace`` > kustomization ``namespace:`` > ``metadata.namespace``).
An object a kustomize Component adds lands in the namespace of every kustomization
that includes the component. A parent Kustomization's ``spec.patches`` are applied
to the child Kustomizations it applies (cluster-template adds ``postBuild`` to every
app that way).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gitops_render.validate.flux_models import (
    FLUX_KUSTOMIZE_GROUP,
    FluxKustomization,
    FluxPatch,
    api_group,
)
from gitops_render.validate.kustomize import GeneratedObject, KustomizationFile, WalkResult, walk
from gitops_render.validate.model import ResourceKey
from gitops_render.validate.yamltree import YamlDocument, YamlFile, is_kustomize_config

__all__ = ["CLUSTER_SCOPED", "FluxTree", "GeneratedInstance", "TreeObject", "build_tree"]

# Kinds that have no namespace, so targetNamespace / kustomize namespace do not apply.
CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
    "PersistentVolume", "PriorityClass", "IngressClass", "RuntimeClass", "CSIDriver", "VolumeSnapshotClass",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "APIService", "GatewayClass", "ClusterIssuer",
    "CiliumClusterwideNetworkPolicy", "CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy",
    "CiliumBGPClusterConfig", "CiliumBGPPeerConfig", "CiliumBGPAdvertisement", "ClusterSecretStore",
    "ClusterImageCatalog", "ClusterExternalSecret", "Node",
})


@dataclass(frozen=True)
class TreeObject:
    """One object as applied: a document, its effective namespace, and who applies it.

    A document pulled in by several kustomizations (a shared component) is one
    object per namespace it lands in.
    """

    file: PurePosixPath
    doc: YamlDocument
    namespace: str | None
    owner: ResourceKey | None = None  # the Flux Kustomization applying it

    @property
    def label(self) -> str | None:
        """``"Kind namespace/name"`` with the effective namespace."""
        return self.doc.label(self.namespace)

    def is_kind(self, group: str, kind: str) -> bool:
        """Whether this is a ``kind`` of API ``group``."""
        return self.doc.kind == kind and api_group(self.doc.api_version) == group


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
    placed: Mapping[tuple[PurePosixPath, int], tuple[TreeObject, ...]] = field(default_factory=dict)

    def namespaces(self, file: PurePosixPath, index: int) -> set[str | None]:
        """The effective namespaces of one document."""
        return set(self.by_document.get((file, index), ()))

    def label(self, file: PurePosixPath, doc: YamlDocument) -> str | None:
        """A label for findings: the effective namespace when it is unambiguous."""
        spaces = self.namespaces(file, doc.index)
        return doc.label(spaces.pop() if len(spaces) == 1 else None)

    def objects_of(self, file: PurePosixPath, index: int) -> list[TreeObject]:
        """Every object one document becomes (one per namespace / applying Kustomization)."""
        return list(self.placed.get((file, index), ()))

    def of_kind(self, group: str, kind: str) -> Iterator[TreeObject]:
        """The objects of one kind."""
        return (o for o in self.objects if o.is_kind(group, kind))


def _effective_namespace(doc: YamlDocument, *forced: str | None) -> str | None:
    """The first forced namespace that applies, else the written one (``None`` if cluster-scoped)."""
    if doc.kind in CLUSTER_SCOPED:
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
               if doc.kind == "Kustomization" and api_group(doc.api_version) == FLUX_KUSTOMIZE_GROUP]
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
    seen_objects: set[tuple[PurePosixPath, int, str | None, ResourceKey]] = set()

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
    placed: dict[tuple[PurePosixPath, int], list[TreeObject]] = {}
    for obj in objects:
        by_document.setdefault((obj.file, obj.doc.index), set()).add(obj.namespace)
        placed.setdefault((obj.file, obj.doc.index), []).append(obj)
    return FluxTree(output_root, tuple(objects), tuple(generated), tuple(models), flux_paths, reached_dirs,
                    {k: frozenset(v) for k, v in by_document.items()}, {k: tuple(v) for k, v in placed.items()})
