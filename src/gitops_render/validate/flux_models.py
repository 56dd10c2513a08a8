"""Typed models of the Flux objects in a rendered tree (tolerant: built from source manifests).

Every identity is a :class:`~gitops_render.validate.model.ResourceKey`.

>>> ks = FluxKustomization.from_document({"metadata": {"name": "app"}, "spec": {
...     "path": "./kubernetes/apps/demo/app", "sourceRef": {"kind": "GitRepository", "name": "flux-system",
...     "namespace": "flux-system"}, "dependsOn": [{"name": "db"}]}}, namespace="demo")
>>> ks.key.namespaced_name, [d.namespaced_name for d in ks.depends_on], str(ks.source_ref.key)
('demo/app', ['demo/db'], 'flux-system/GitRepository/flux-system')
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

import yaml

from gitops_render.validate.model import ResourceKey
from gitops_render.validate.yamltree import YamlDocument

__all__ = [
    "DEFAULT_NAMESPACE",
    "FLUX_KUSTOMIZE_GROUP",
    "HELM_GROUP",
    "SOURCE_GROUP",
    "FluxKustomization",
    "FluxPatch",
    "GitRepository",
    "HelmRelease",
    "HelmRepository",
    "OCIRepository",
    "ObjectRef",
    "SubstituteRef",
    "api_group",
    "get_path",
]

FLUX_KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
HELM_GROUP = "helm.toolkit.fluxcd.io"
SOURCE_GROUP = "source.toolkit.fluxcd.io"
DEFAULT_NAMESPACE = "default"


def get_path(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or ``None`` when a level is missing or not a mapping.

    >>> get_path({"a": {"b": 1}}, "a", "b"), get_path({"a": 1}, "a", "b")
    (1, None)
    """
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def api_group(api_version: str | None) -> str:
    """The API group of an apiVersion (``""`` for the core group)."""
    return api_version.rsplit("/", 1)[0] if api_version and "/" in api_version else ""


@dataclass(frozen=True)
class ObjectRef:
    """A reference to a namespaced object by kind.

    >>> str(ObjectRef("OCIRepository", "app-template", "demo").key)
    'demo/OCIRepository/app-template'
    """

    kind: str
    name: str
    namespace: str

    @property
    def key(self) -> ResourceKey:
        """The referenced object's identity."""
        return ResourceKey(self.kind, self.namespace, self.name)

    @classmethod
    def from_spec(cls, ref: Any, default_namespace: str) -> ObjectRef | None:
        """From a ``{kind, name, namespace?}`` mapping; ``None`` when kind or name is missing."""
        kind, name = _str(get_path(ref, "kind")), _str(get_path(ref, "name"))
        if kind is None or name is None:
            return None
        return cls(kind, name, _str(get_path(ref, "namespace")) or default_namespace)


@dataclass(frozen=True)
class SubstituteRef:
    """One ``postBuild.substituteFrom`` entry (resolved in the Kustomization's namespace)."""

    kind: str
    name: str
    optional: bool = False

    def key(self, namespace: str) -> ResourceKey:
        """The source's identity when resolved in ``namespace``."""
        return ResourceKey(self.kind, namespace, self.name)


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
            ("group", api_group(api)), ("version", api.rsplit("/", 1)[-1]), ("kind", doc.kind or ""),
        ]
        for key, actual in checks:
            if isinstance(t.get(key), str) and t[key] and t[key] != actual:
                return False
        for key, actual in (("name", doc.name or ""), ("namespace", namespace or "")):
            if isinstance(t.get(key), str) and t[key] and not re.fullmatch(t[key], actual):
                return False
        selector = t.get("labelSelector")
        if isinstance(selector, str) and selector.strip():
            labels = get_path(doc.data, "metadata", "labels") or {}
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
    depends_on: tuple[ResourceKey, ...] = ()
    target_namespace: str | None = None
    post_build: bool = False
    substitute: Mapping[str, str] = field(default_factory=dict)
    substitute_from: tuple[SubstituteRef, ...] = ()
    patches: tuple[FluxPatch, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> ResourceKey:
        """This Kustomization's identity (printed ``namespace/name`` in messages)."""
        return ResourceKey("Kustomization", self.namespace, self.name)

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> FluxKustomization:
        """Model a parsed Kustomization; ``namespace`` is its effective namespace.

        >>> FluxKustomization.from_document({"metadata": {"name": "a", "namespace": "x"},
        ...     "spec": {"postBuild": {"substitute": {"A": "1"}, "substituteFrom": [{"kind": "Secret", "name": "s"}]}}}
        ... ).substitute_from
        (SubstituteRef(kind='Secret', name='s', optional=False),)
        """
        ns = namespace or _str(get_path(data, "metadata", "namespace")) or DEFAULT_NAMESPACE
        spec = get_path(data, "spec") or {}
        depends: list[ResourceKey] = []
        for dep in get_path(spec, "dependsOn") or []:
            if _str(get_path(dep, "name")):
                depends.append(ResourceKey("Kustomization", _str(get_path(dep, "namespace")) or ns, dep["name"]))
        post = get_path(spec, "postBuild")
        subst = get_path(post, "substitute")
        subst_from = tuple(
            SubstituteRef(str(ref.get("kind")), ref["name"], bool(ref.get("optional", False)))
            for ref in (get_path(post, "substituteFrom") or []) if _str(get_path(ref, "name"))
        )
        patches: list[FluxPatch] = []
        for entry in get_path(spec, "patches") or []:
            text = get_path(entry, "patch")
            try:
                parsed = yaml.safe_load(text) if isinstance(text, str) else None
            except yaml.YAMLError:
                parsed = None
            if isinstance(parsed, Mapping):
                patches.append(FluxPatch(parsed, get_path(entry, "target") or {}))
        return cls(
            name=_str(get_path(data, "metadata", "name")) or "<unnamed>",
            namespace=ns,
            path=_str(get_path(spec, "path")),
            source_ref=ObjectRef.from_spec(get_path(spec, "sourceRef"), ns),
            depends_on=tuple(depends),
            target_namespace=_str(get_path(spec, "targetNamespace")),
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
            meta = {k: v for k, v in (get_path(patch.patch, "metadata") or {}).items()
                    if k not in ("name", "namespace")}
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
    >>> str(hr.chart_ref.key), hr.values
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
    def key(self) -> ResourceKey:
        """This HelmRelease's identity."""
        return ResourceKey("HelmRelease", self.namespace, self.name)

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> HelmRelease:
        """Model a parsed HelmRelease; ``namespace`` is its effective namespace."""
        ns = namespace or _str(get_path(data, "metadata", "namespace")) or DEFAULT_NAMESPACE
        chart_spec = get_path(data, "spec", "chart", "spec")
        values = get_path(data, "spec", "values")
        version = get_path(chart_spec, "version")
        return cls(
            name=_str(get_path(data, "metadata", "name")) or "<unnamed>",
            namespace=ns,
            chart_ref=ObjectRef.from_spec(get_path(data, "spec", "chartRef"), ns),
            chart_source=ObjectRef.from_spec(get_path(chart_spec, "sourceRef"), ns),
            chart_name=_str(get_path(chart_spec, "chart")),
            chart_version=str(version) if isinstance(version, (str, int, float)) else None,
            values=values if isinstance(values, Mapping) else None,
            has_values_from=bool(get_path(data, "spec", "valuesFrom")),
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
    def key(self) -> ResourceKey:
        """This OCIRepository's identity."""
        return ResourceKey("OCIRepository", self.namespace, self.name)

    @property
    def chart_key(self) -> str | None:
        """``chart@tag`` for a chart artifact with a fixed tag, else ``None``."""
        if not self.url or not self.tag:
            return None
        return f"{self.url.rstrip('/').rsplit('/', 1)[-1]}@{self.tag}"

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, namespace: str | None = None) -> OCIRepository:
        """Model a parsed OCIRepository."""
        ref = get_path(data, "spec", "ref")
        tag = get_path(ref, "tag")
        return cls(
            name=_str(get_path(data, "metadata", "name")) or "<unnamed>",
            namespace=namespace or _str(get_path(data, "metadata", "namespace")) or DEFAULT_NAMESPACE,
            url=_str(get_path(data, "spec", "url")),
            tag=str(tag) if isinstance(tag, (str, int, float)) else None,
            semver=_str(get_path(ref, "semver")),
            digest=_str(get_path(ref, "digest")),
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
        return cls(_str(get_path(data, "metadata", "name")) or "<unnamed>",
                   namespace or _str(get_path(data, "metadata", "namespace")) or DEFAULT_NAMESPACE,
                   _str(get_path(data, "spec", "url")))


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
        return cls(_str(get_path(data, "metadata", "name")) or "<unnamed>",
                   namespace or _str(get_path(data, "metadata", "namespace")) or DEFAULT_NAMESPACE,
                   _str(get_path(data, "spec", "url")), _str(get_path(data, "spec", "type")))
