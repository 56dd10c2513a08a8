"""Checks of the Flux object graph, and the variables each Kustomization substitutes.

:func:`check_graph` reports, as ``flux`` findings:

* ``dependsOn`` naming a Kustomization that is neither in the tree nor provided, and cycles;
* ``sourceRef`` naming a missing source (the bootstrap source, ``flux-system``
  GitRepository/OCIRepository, exists by default); ``spec.path`` that does not exist;
* HelmRelease ``chartRef`` / ``chart.spec.sourceRef`` naming a missing source;
* ``postBuild.substituteFrom`` naming a missing Secret/ConfigMap (unless ``optional``);
* ``${VAR}`` in an object a Kustomization substitutes that no substitution source provides
  (``${VAR:=default}`` has a default and is fine; ``$${VAR}`` is an escape).
  A provided (external) source provides the names listed for it in
  ``provided_variables``, or any name when it is not listed there (a note says so).

:func:`kustomization_variables` gives, per Kustomization, the values Flux would
substitute (``postBuild.substitute`` over its ``substituteFrom`` sources, later sources
over earlier ones), read from the tree: ConfigMaps as written, Secrets from their
plaintext (held in memory only). The schema check substitutes them before it runs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

from gitops_render.core.naming import is_secret_path
from gitops_render.validate.flux_models import (
    DEFAULT_NAMESPACE,
    HELM_GROUP,
    SOURCE_GROUP,
    FluxKustomization,
    HelmRelease,
    api_group,
    get_path,
)
from gitops_render.validate.flux_tree import FluxTree, TreeObject
from gitops_render.validate.model import CheckResult, Finding, ResourceKey, ValidateSettings
from gitops_render.validate.substitute import find_variables, substitution_disabled
from gitops_render.validate.yamltree import YamlFile

__all__ = ["Variables", "check_graph", "find_cycles", "kustomization_variables"]

T = TypeVar("T")


def find_cycles(edges: Mapping[T, Sequence[T]]) -> list[list[T]]:
    """Each dependency cycle once, as a path that starts and ends at its smallest node.

    >>> find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"], "e": ["a"]})
    [['a', 'b', 'c', 'a'], ['d', 'd']]
    """
    cycles: set[tuple[Any, ...]] = set()
    state: dict[T, int] = {}  # 1 = on the stack, 2 = done
    stack: list[T] = []

    def visit(node: T) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                i = cycle.index(min(cycle))  # type: ignore[type-var]  # keys are orderable
                cycles.add(tuple(cycle[i:] + cycle[:i]))
            elif nxt not in state and nxt in edges:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):  # type: ignore[type-var]
        if node not in state:
            visit(node)
    return [[*c, c[0]] for c in sorted(cycles)]


def _data_keys(data: Any) -> set[str]:
    """Keys of a Secret/ConfigMap (``data``, ``stringData``, ``binaryData``)."""
    keys: set[str] = set()
    for section in ("data", "stringData", "binaryData"):
        value = get_path(data, section)
        if isinstance(value, Mapping):
            keys.update(str(k) for k in value)
    return keys


def _data_values(data: Any, *, secret: bool) -> dict[str, str]:
    """The string values of a ConfigMap's ``data`` or a Secret's ``data`` (base64) and ``stringData``."""
    values: dict[str, str] = {}
    section = get_path(data, "data")
    if isinstance(section, Mapping):
        for key, value in section.items():
            if not secret:
                values[str(key)] = value if isinstance(value, str) else str(value)
                continue
            try:
                values[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
    string_data = get_path(data, "stringData") if secret else None
    if isinstance(string_data, Mapping):
        values.update({str(k): v if isinstance(v, str) else str(v) for k, v in string_data.items()})
    return values


@dataclass(frozen=True)
class _Source:
    """A substitution source: the names it holds (``None``: any) and the values known here."""

    keys: frozenset[str] | None
    values: Mapping[str, str]
    secret: bool


@dataclass(frozen=True)
class Variables:
    """What one Kustomization substitutes.

    ``values`` are those known here; ``secret`` names the ones read from a Secret (their
    values are never printed); ``unknown`` names a source holds whose value is not known
    here (an encrypted Secret without its plaintext, a generator, an external source);
    ``open_ended`` is true when an external source may hold any name.
    """

    values: Mapping[str, str] = field(default_factory=dict)
    secret: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()
    open_ended: bool = False

    def lookup(self, name: str) -> str | None:
        """The value of ``name`` (``None`` when it has none here)."""
        return self.values.get(name)


def _index(tree: FluxTree, group: str | None, kinds: Sequence[str]) -> dict[ResourceKey, TreeObject]:
    """Objects of ``kinds`` (of API ``group``; ``None``: any group), by identity."""
    out: dict[ResourceKey, TreeObject] = {}
    for o in tree.objects:
        kind, name = o.doc.kind, o.doc.name
        if kind in kinds and kind is not None and name and (group is None or api_group(o.doc.api_version) == group):
            out.setdefault(ResourceKey(kind, o.namespace or DEFAULT_NAMESPACE, name), o)
    return out


def _plain_data(obj: TreeObject, plaintexts: Mapping[PurePosixPath, YamlFile]) -> Any:
    """The document's data with secret values in clear when known; ``None`` for an encrypted one without."""
    if not is_secret_path(obj.file):
        return obj.doc.data
    plain = plaintexts.get(obj.file)
    doc = next((d for d in plain.documents if d.index == obj.doc.index), None) if plain is not None else None
    return doc.data if doc is not None else None


def _sources(tree: FluxTree, settings: ValidateSettings,
             plaintexts: Mapping[PurePosixPath, YamlFile]) -> dict[ResourceKey, _Source]:
    """Every substitution source the tree renders, generates or the settings provide."""
    out: dict[ResourceKey, _Source] = {}
    for key, obj in _index(tree, "", ("Secret", "ConfigMap")).items():
        secret = key.kind == "Secret"
        plain = _plain_data(obj, plaintexts)
        values = _data_values(plain, secret=secret) if plain is not None else {}
        out[key] = _Source(frozenset(_data_keys(obj.doc.data)), values, secret)
    for gen in tree.generated:
        key = ResourceKey(gen.obj.kind, gen.namespace or DEFAULT_NAMESPACE, gen.obj.name)
        out[key] = _Source(gen.obj.keys, {}, gen.obj.kind == "Secret")
    for key in settings.provided_substitutions:
        if key not in out:
            listed = settings.provided_variables.get(key)
            out[key] = _Source(listed, {}, key.kind == "Secret")
    return out


def _variables(model: FluxKustomization, sources: Mapping[ResourceKey, _Source]) -> Variables:
    values: dict[str, str] = {}
    secret: set[str] = set()
    unknown: set[str] = set()
    open_ended = False
    for ref in model.substitute_from:
        source = sources.get(ref.key(model.namespace))
        if source is None:
            continue
        if source.keys is None:
            open_ended = True
        for name in source.keys or ():
            if name in source.values:
                values[name] = source.values[name]
                unknown.discard(name)
                (secret.add if source.secret else secret.discard)(name)
            else:
                values.pop(name, None)
                unknown.add(name)
    values.update(model.substitute)
    secret -= set(model.substitute)
    unknown -= set(model.substitute)
    return Variables(values, frozenset(secret), frozenset(unknown), open_ended)


def kustomization_variables(tree: FluxTree, settings: ValidateSettings,
                            plaintexts: Mapping[PurePosixPath, YamlFile] | None = None
                            ) -> dict[ResourceKey, Variables]:
    """The variables of every Kustomization with ``postBuild``, by its identity."""
    sources = _sources(tree, settings, plaintexts or {})
    return {model.key: _variables(model, sources) for _, model in tree.kustomizations if model.post_build}


@dataclass
class _Checker:
    """Runs the graph checks over one tree (mutable only while it runs)."""

    tree: FluxTree
    settings: ValidateSettings
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[ResourceKey, _Source] = field(default_factory=dict)

    def add(self, obj: TreeObject, message: str) -> None:
        self.findings.append(Finding("flux", str(obj.file), obj.label, message, obj.doc.line))

    def run(self) -> CheckResult:
        self.sources = _sources(self.tree, self.settings, {})
        self.check_kustomizations()
        self.check_helm_releases()
        return CheckResult(tuple(self.findings), tuple(self.notes))

    def check_kustomizations(self) -> None:
        models = self.tree.kustomizations
        known = {m.key for _, m in models} | set(self.settings.provided_kustomizations)
        sources = (set(_index(self.tree, SOURCE_GROUP, ("GitRepository", "OCIRepository", "Bucket")))
                   | set(self.settings.known_sources) | set(_index(self.tree, None, ("ExternalArtifact",))))
        edges: dict[ResourceKey, list[ResourceKey]] = {}
        first: dict[ResourceKey, TreeObject] = {}
        for obj, model in models:
            first.setdefault(model.key, obj)
            edges.setdefault(model.key, [])
            for dep in model.depends_on:
                edges[model.key].append(dep)
                if dep not in known:
                    self.add(obj, f"dependsOn {dep.namespaced_name} names a Kustomization that is neither in the "
                                  f"tree nor in [gitops-render.cluster] provided_kustomizations")
            self.check_source_and_path(obj, model, sources)
            self.check_substitutions(obj, model)
        for cycle in find_cycles(edges):
            self.add(first[cycle[0]], "dependsOn cycle: " + " -> ".join(k.namespaced_name for k in cycle)
                     + " (none of them can ever become ready)")

    def check_source_and_path(self, obj: TreeObject, model: FluxKustomization, sources: set[ResourceKey]) -> None:
        ref = model.source_ref
        if ref is not None and ref.key not in sources:
            self.add(obj, f"sourceRef {ref.key} names a source that is neither in the tree nor in "
                          f"[gitops-render.cluster] provided_sources (or bootstrap_sources)")
        if ref is not None and ref.kind == "GitRepository":
            path = model.normalized_path()
            if not (self.tree.output_root / path).is_dir():
                self.add(obj, f"spec.path {model.path} does not exist (it is relative to the repository root)")

    def check_substitutions(self, obj: TreeObject, model: FluxKustomization) -> None:
        if not model.post_build:
            return
        available: set[str] = set(model.substitute)
        open_ended: list[str] = []
        for ref in model.substitute_from:
            key = ref.key(model.namespace)
            source = self.sources.get(key)
            if source is None:
                if not ref.optional:
                    self.add(obj, f"postBuild.substituteFrom names {ref.kind} {model.namespace}/{ref.name}, "
                                  f"which is neither rendered in the tree nor in [gitops-render.cluster] "
                                  f"provided_substitutions")
                continue
            if source.keys is None:
                open_ended.append(str(key))
            else:
                available |= source.keys
        missing: dict[str, list[TreeObject]] = {}
        for child in self.tree.objects:
            if child.owner != model.key or substitution_disabled(child.doc.data):
                continue
            for var in find_variables(child.doc.data) - available:
                missing.setdefault(var, []).append(child)
        if open_ended and missing:
            names = ", ".join(f"${{{var}}}" for var in sorted(missing))
            self.notes.append(f"Kustomization {model.key.namespaced_name}: {names} assumed to come from "
                              f"{', '.join(open_ended)}, whose keys are unknown (list them in "
                              f"[gitops-render.cluster.provided_variables] to check them)")
            return
        for var, users in sorted(missing.items()):
            for child in users:
                self.findings.append(Finding(
                    "flux", str(child.file), child.label,
                    f"${{{var}}} has no value: Kustomization {model.key.namespaced_name} substitutes it, but "
                    f"neither postBuild.substitute nor its substituteFrom sources define {var} (give it a "
                    f"default with ${{{var}:=value}}, or escape it as $${{{var}}})", child.doc.line))

    def check_helm_releases(self) -> None:
        charts = set(_index(self.tree, SOURCE_GROUP, ("OCIRepository", "HelmChart")))
        chart_sources = set(_index(self.tree, SOURCE_GROUP, ("HelmRepository", "GitRepository", "Bucket")))
        provided = set(self.settings.known_sources)
        for obj in self.tree.of_kind(HELM_GROUP, "HelmRelease"):
            hr = HelmRelease.from_document(obj.doc.data, namespace=obj.namespace)
            if hr.chart_ref is None and hr.chart_source is None:
                self.add(obj, "has neither spec.chartRef nor spec.chart.spec.sourceRef, so Flux cannot find its chart")
            for ref, pool, field_name in ((hr.chart_ref, charts, "spec.chartRef"),
                                          (hr.chart_source, chart_sources, "spec.chart.spec.sourceRef")):
                if ref is not None and ref.key not in pool and ref.key not in provided:
                    self.add(obj, f"{field_name} {ref.key} names a source that is neither in the tree (in that "
                                  f"namespace) nor in [gitops-render.cluster] provided_sources")


def check_graph(tree: FluxTree, settings: ValidateSettings) -> CheckResult:
    """All ``flux`` findings of the tree (see the module docstring)."""
    return _Checker(tree, settings).run()
