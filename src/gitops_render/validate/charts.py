"""Render the chart of every HelmRelease offline with ``helm template``, as helm-controller would.

For each HelmRelease of the tree whose chart (``chart@version``, see
:func:`gitops_render.validate.helmvalues.chart_key`) is available locally — listed in
``[gitops-render.validate.helm_charts]`` (a chart folder or ``.tgz``), or in the chart cache
as ``<chart>-<version>.tgz`` (what ``helm pull`` writes) or ``<chart>-<version>/`` — this runs::

    helm template <release> <chart> --namespace <ns> --kube-version <kubernetes_version>
         --skip-schema-validation --api-versions <helm_api_versions and every group/version(/Kind)
         the tree uses> --values -

with the values helm-controller computes: the ``spec.valuesFrom`` ConfigMaps/Secrets of the
tree in order (a ``valuesKey`` merged as YAML, or set at ``targetPath``), then ``spec.values``
over them, everything as Flux applies it (decrypted in memory, ``${VAR}`` substituted). The
release name and namespace follow helm-controller (``[targetNamespace-]name``, shortened past
53 characters). The values reach helm on stdin and its output is parsed in memory: decrypted
values are never written to disk, and helm's messages are masked before they are shown.

The rendered objects are schema-checked with the rest of the tree (their findings carry the
HelmRelease's file) and cross-checked against it by :mod:`gitops_render.validate.crossref`.
A HelmRelease whose chart is not available offline, or whose values cannot be known here
(a ``valuesFrom`` source outside the tree, an encrypted one without its plaintext), is a note.

Not cached per unit: ``helm template`` takes a few tenths of a second per release, and the
whole-report cache (:mod:`gitops_render.validate.cache`) covers the charts' files and the helm
binary; its rendered documents go through kubeconform's per-document cache like any other.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_render.core.errors import ToolError
from gitops_render.core.mask import mask
from gitops_render.core.naming import is_secret_path
from gitops_render.core.runner import ToolRunner
from gitops_render.validate.flux_checks import Variables, _data_values
from gitops_render.validate.flux_models import (
    DEFAULT_NAMESPACE,
    HELM_GROUP,
    SOURCE_GROUP,
    HelmRelease,
    OCIRepository,
    get_path,
)
from gitops_render.validate.flux_tree import CLUSTER_SCOPED, FluxTree, TreeObject
from gitops_render.validate.helmvalues import chart_key
from gitops_render.validate.kubeconform import SchemaDocument, applied_data
from gitops_render.validate.model import CheckResult, Finding, ResourceKey, ValidateSettings
from gitops_render.validate.substitute import find_variables
from gitops_render.validate.yamltree import YamlFile, parse_yaml

__all__ = ["ChartRendering", "RenderedRelease", "find_chart", "merge_values", "release_name", "render_charts"]

_MAX_API_VERSIONS = 400


@dataclass(frozen=True)
class RenderedRelease:
    """One HelmRelease and the objects its chart renders (each with its effective namespace)."""

    hr: TreeObject
    key: ResourceKey
    chart: str
    name: str
    namespace: str
    objects: tuple[tuple[Mapping[str, Any], str | None], ...]
    secret_values: frozenset[str] = field(default=frozenset(), repr=False)
    unresolved: frozenset[str] = frozenset()  # ${VAR}s of the HelmRelease whose value is not known here

    def label(self, data: Mapping[str, Any], namespace: str | None) -> str:
        """``"Deployment ai-system/litellm (chart app-template@4.5.0 of HelmRelease ai-system/litellm)"``."""
        name = get_path(data, "metadata", "name") or "<unnamed>"
        where = f"{namespace}/{name}" if namespace else str(name)
        return f"{data.get('kind')} {where} (chart {self.chart} of HelmRelease {self.key.namespaced_name})"


@dataclass(frozen=True)
class ChartRendering:
    """Every rendered release, the namespaces with releases that were not rendered, the rendered
    documents to schema-check, and the ``chart`` findings / notes of rendering itself."""

    releases: tuple[RenderedRelease, ...] = ()
    unrendered: frozenset[str] = frozenset()
    documents: tuple[SchemaDocument, ...] = ()
    result: CheckResult = field(default_factory=CheckResult)


def release_name(name: str, target_namespace: str | None, release: str | None) -> str:
    """The Helm release name helm-controller uses.

    >>> release_name("litellm", None, None), release_name("podinfo", "apps", None), release_name("a", "b", "c")
    ('litellm', 'apps-podinfo', 'c')
    >>> len(release_name("x" * 60, None, None))
    53
    """
    out = release or (f"{target_namespace}-{name}" if target_namespace else name)
    if len(out) > 53:  # helm-controller: first 40 characters, a dash, 12 of the sha256
        out = f"{out[:40]}-{hashlib.sha256(out.encode()).hexdigest()[:12]}"
    return out


def find_chart(key: str, settings: ValidateSettings) -> Path | None:
    """The local chart for ``chart@version``: ``helm_charts``, else the chart cache; ``None`` when absent."""
    if key in settings.helm_charts:
        path = Path(settings.helm_charts[key])
        return path if (path / "Chart.yaml").is_file() or path.is_file() else None
    if settings.chart_cache is not None:
        name, _, version = key.partition("@")
        for candidate in (Path(settings.chart_cache) / f"{name}-{version}.tgz", Path(settings.chart_cache) / key,
                          Path(settings.chart_cache) / f"{name}-{version}"):
            if candidate.is_file() or (candidate / "Chart.yaml").is_file():
                return candidate
    return None


def merge_values(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of two values tables: tables merge recursively, anything else is replaced.

    >>> merge_values({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]})
    {'a': {'b': 1, 'c': 3}, 'l': [2]}
    """
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = merge_values(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def _set_path(values: dict[str, Any], path: str, value: str) -> None:
    """``targetPath`` (``a.b.c``; ``\\.`` escapes a dot) set to a string value."""
    parts = [p.replace("\0", ".") for p in path.replace("\\.", "\0").split(".")]
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


@dataclass
class _Inputs:
    """What rendering reads of the tree: value sources by identity, and API versions in use."""

    files: Mapping[PurePosixPath, YamlFile]
    plaintexts: Mapping[PurePosixPath, YamlFile]
    variables: Mapping[ResourceKey, Variables]
    sources: dict[ResourceKey, TreeObject] = field(default_factory=dict)
    api_versions: list[str] = field(default_factory=list)


def _values(hr: TreeObject, data: Mapping[str, Any], inputs: _Inputs
            ) -> tuple[dict[str, Any] | None, str | None, list[Finding], frozenset[str]]:
    """The release's values, or ``None`` with the reason; ``refs`` findings for missing keys; secret values."""
    ns = hr.namespace or DEFAULT_NAMESPACE
    values: dict[str, Any] = {}
    findings: list[Finding] = []
    secrets: set[str] = set()
    for ref in get_path(data, "spec", "valuesFrom") or []:
        kind, name = get_path(ref, "kind"), get_path(ref, "name")
        if kind not in ("ConfigMap", "Secret") or not isinstance(name, str):
            continue
        optional = get_path(ref, "optional") is True
        values_key = get_path(ref, "valuesKey") or "values.yaml"
        source = inputs.sources.get(ResourceKey(kind, ns, name))
        if source is None:
            if optional:
                continue
            return None, f"its valuesFrom {kind} {ns}/{name} is not in the tree", findings, frozenset()
        if kind == "Secret" and is_secret_path(source.file) and source.file not in inputs.plaintexts:
            return None, f"its valuesFrom Secret {ns}/{name} is encrypted and its plaintext is not known here", \
                findings, frozenset()
        content, held, _ = applied_data(source, inputs.files, inputs.plaintexts, inputs.variables)
        secrets |= held
        entries = _data_values(content, secret=kind == "Secret")
        if values_key not in entries:
            if not optional:
                findings.append(Finding("refs", str(hr.file), hr.label,
                                        f"spec.valuesFrom: {kind} {ns}/{name} has no key {values_key!r} "
                                        f"(it has: {', '.join(sorted(entries)) or 'none'})", hr.doc.line))
            continue
        target = get_path(ref, "targetPath")
        if isinstance(target, str) and target:
            _set_path(values, target, entries[values_key])
            continue
        try:
            loaded = yaml.safe_load(entries[values_key])
        except yaml.YAMLError:
            loaded = None
        if not isinstance(loaded, Mapping):
            findings.append(Finding("refs", str(hr.file), hr.label, f"spec.valuesFrom: key {values_key!r} of {kind} "
                                    f"{ns}/{name} is not a YAML mapping of values", hr.doc.line))
            continue
        values = merge_values(values, loaded)
    inline = get_path(data, "spec", "values")
    if isinstance(inline, Mapping):
        values = merge_values(values, inline)
    return values, None, findings, frozenset(secrets)


def _objects(text: str, namespace: str) -> tuple[tuple[Mapping[str, Any], str | None], ...]:
    """The objects of ``helm template`` output with their effective namespace (``v1`` Lists expanded)."""
    parsed = parse_yaml(PurePosixPath("helm-template.yaml"), text)
    out: list[tuple[Mapping[str, Any], str | None]] = []
    for doc in parsed.manifests:
        items = doc.data.get("items") if doc.kind == "List" else None
        for item in items if isinstance(items, list) else [doc.data]:
            if not isinstance(item, Mapping) or not isinstance(item.get("kind"), str):
                continue
            written = get_path(item, "metadata", "namespace")
            out.append((item, None if item["kind"] in CLUSTER_SCOPED else (written or namespace)))
    return tuple(out)


def _render_one(hr: TreeObject, key: str, chart: Path, inputs: _Inputs, settings: ValidateSettings,
                runner: ToolRunner) -> tuple[RenderedRelease | None, CheckResult]:
    data, held, unresolved = applied_data(hr, inputs.files, inputs.plaintexts, inputs.variables)
    ident = ResourceKey("HelmRelease", hr.namespace or DEFAULT_NAMESPACE, hr.doc.name or "<unnamed>")
    values, reason, findings, secrets = _values(hr, data, inputs)
    if values is None:
        return None, CheckResult(tuple(findings), (f"HelmRelease {ident.namespaced_name}: chart {key} not rendered: "
                                                   f"{reason}",))
    target = get_path(data, "spec", "targetNamespace")
    namespace = target if isinstance(target, str) and target else ident.namespace
    release = get_path(data, "spec", "releaseName")
    name = release_name(ident.name, target if isinstance(target, str) and target else None,
                        release if isinstance(release, str) and release else None)
    args = ["template", name, str(chart), "--namespace", namespace, "--kube-version", settings.kubernetes_version,
            "--skip-schema-validation", "--values", "-"]
    if get_path(data, "spec", "install", "crds") != "Skip":
        args.append("--include-crds")
    for api in inputs.api_versions:
        args += ["--api-versions", api]
    secret_values = frozenset(v for v in secrets | held if v)
    result = runner.run("helm", args, input=yaml.safe_dump(values, sort_keys=False), check=False,
                        timeout=settings.timeout)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        line = next((x for x in lines if x.startswith("Error:")), lines[-1] if lines else f"exit {result.returncode}")
        detail = mask(line, secret_values)
        findings.append(Finding("chart", str(hr.file), hr.label, f"`helm template` of chart {key} with these values "
                                f"failed: {detail.removeprefix('Error: ')}", hr.doc.line))
        return None, CheckResult(tuple(findings))
    objects = _objects(str(result.stdout), namespace)
    for obj, _ in objects:
        if obj.get("kind") == "Secret":
            for section in ("data", "stringData"):
                block = obj.get(section)
                if isinstance(block, Mapping):
                    secret_values |= {str(v) for v in block.values() if str(v)}
    unresolved = unresolved | frozenset(find_variables(data))  # not substituted: no Kustomization applies it
    rendered = RenderedRelease(hr, ident, key, name, namespace, objects, frozenset(secret_values), unresolved)
    return rendered, CheckResult(tuple(findings))


def _api_versions(tree: FluxTree) -> list[str]:
    """``group/version`` and ``group/version/Kind`` of every object the tree applies (the cluster has those APIs)."""
    seen: dict[str, None] = {}
    for obj in tree.objects:
        api, kind = obj.doc.api_version, obj.doc.kind
        if api and kind and "/" in api:
            seen.setdefault(api)
            seen.setdefault(f"{api}/{kind}")
    return list(seen)


def render_charts(tree: FluxTree, files: Mapping[PurePosixPath, YamlFile],
                  plaintexts: Mapping[PurePosixPath, YamlFile], variables: Mapping[ResourceKey, Variables],
                  settings: ValidateSettings, *, runner: ToolRunner) -> ChartRendering:
    """Render every HelmRelease whose chart is available offline; notes for the others."""
    repositories: dict[ResourceKey, OCIRepository] = {}
    for obj in tree.of_kind(SOURCE_GROUP, "OCIRepository"):
        repo = OCIRepository.from_document(obj.doc.data, namespace=obj.namespace)
        repositories.setdefault(repo.key, repo)
    apis = list(dict.fromkeys([*settings.helm_api_versions, *_api_versions(tree)]))[:_MAX_API_VERSIONS]
    inputs = _Inputs(files, plaintexts, variables, api_versions=apis)
    for obj in tree.objects:
        if obj.doc.kind in ("ConfigMap", "Secret") and obj.doc.api_version == "v1" and obj.doc.name:
            inputs.sources.setdefault(ResourceKey(obj.doc.kind, obj.namespace or DEFAULT_NAMESPACE, obj.doc.name), obj)
    todo: list[tuple[TreeObject, str, Path]] = []
    notes: list[str] = []
    unrendered: set[str] = set()
    seen: set[tuple[PurePosixPath, int, str | None]] = set()
    for obj in tree.of_kind(HELM_GROUP, "HelmRelease"):
        if (obj.file, obj.doc.index, obj.namespace) in seen:
            continue
        seen.add((obj.file, obj.doc.index, obj.namespace))
        hr = HelmRelease.from_document(obj.doc.data, namespace=obj.namespace)
        key = chart_key(hr, repositories)
        chart = find_chart(key, settings) if key is not None else None
        if key is None or chart is None:
            unrendered.add(hr.namespace)
            what = f"chart {key}" if key else "its chart (no fixed chart@version)"
            where = (f"; put it at {settings.helm_charts[key]}" if key is not None and key in settings.helm_charts else
                     f"; `helm pull` it into {settings.chart_cache or '[gitops-render.validate] chart_cache'} or "
                     f"list it in [gitops-render.validate.helm_charts]" if key else "")
            notes.append(f"HelmRelease {hr.key.namespaced_name} ({obj.file}): {what} not available offline: "
                         f"not rendered{where}")
            continue
        todo.append((obj, key, chart))
    if not todo:
        return ChartRendering(unrendered=frozenset(unrendered), result=CheckResult(notes=tuple(notes)))
    try:
        runner.which("helm")
    except ToolError as exc:
        notes.append(f"{len(todo)} HelmRelease chart(s) available offline not rendered: {exc.message} "
                     f"({exc.hint or 'run scripts/install-tools.sh'})")
        unrendered.update(o.namespace or DEFAULT_NAMESPACE for o, _, _ in todo)
        return ChartRendering(unrendered=frozenset(unrendered), result=CheckResult(notes=tuple(notes)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(2, len(todo))) as pool:
        outcomes = list(pool.map(lambda t: _render_one(t[0], t[1], t[2], inputs, settings, runner), todo))
    releases: list[RenderedRelease] = []
    result = CheckResult(notes=tuple(notes))
    for (obj, _, _), (rendered, outcome) in zip(todo, outcomes, strict=True):
        result += outcome
        if rendered is None:
            unrendered.add(obj.namespace or DEFAULT_NAMESPACE)
        else:
            releases.append(rendered)
    return ChartRendering(tuple(releases), frozenset(unrendered), _documents(releases), result)


def _documents(releases: Sequence[RenderedRelease]) -> tuple[SchemaDocument, ...]:
    """The rendered objects as kubeconform documents, reported on the HelmRelease's file and line."""
    docs: list[SchemaDocument] = []
    for rel in releases:
        for data, namespace in rel.objects:
            docs.append(SchemaDocument(str(rel.hr.file), rel.label(data, namespace), data, rel.secret_values,
                                       rel.hr.doc.line, unresolved=rel.unresolved,
                                       secret=bool(rel.secret_values) or data.get("kind") == "Secret"))
    return tuple(docs)
