"""The validation stage's shared types: findings, the one result type, resource keys, settings.

>>> f = Finding("flux", "kubernetes/apps/demo/app/ks.yaml", "Kustomization demo/app", "spec.path does not exist")
>>> str(f)
'kubernetes/apps/demo/app/ks.yaml: [flux] Kustomization demo/app: spec.path does not exist'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Literal, Protocol

from gitops_render.core.errors import ConfigError

CHECKS: tuple[str, ...] = ("schema", "kustomize", "orphan", "flux", "helm-values", "yaml", "sops", "chart", "refs")
"""Every value :attr:`Finding.check` can take."""

SCHEMA_LOCATION_ENV = "GITOPS_RENDER_SCHEMA_LOCATION"
"""Environment variable replacing ``schema_locations`` (several separated by ``;``)."""

HELM_CHARTS_ENV = "GITOPS_RENDER_HELM_CHARTS"
"""Environment variable adding ``helm_charts`` entries (``chart@version=path``, several separated by ``;``)."""

_DEFAULT_DELIMITERS: tuple[str, ...] = ("#{", "}#", "#%", "%#", "#|")

DEFAULT_HELM_API_VERSIONS: tuple[str, ...] = tuple(
    f"gateway.networking.k8s.io/{v}" for v in ("v1", "v1/GatewayClass", "v1/Gateway", "v1/HTTPRoute", "v1/GRPCRoute",
                                                "v1beta1", "v1beta1/ReferenceGrant"))
"""API versions ``helm template`` is told the cluster serves besides those the tree uses (the Gateway API:
a chart's routes render as ``v1``, not as the ``v1alpha2`` fallback no schema location has)."""

MissingSchemas = Literal["finding", "note"]
"""What a kind without a schema in any schema location is: a finding (strict) or a counted note."""


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True)
class Finding:
    """One problem in the rendered tree.

    ``check`` is one of :data:`CHECKS`; ``file`` is relative to the output root
    (POSIX separators); ``document`` names the object (``"HelmRelease ai-system/litellm"``)
    or is ``None`` when the problem concerns the whole file; ``line`` (1-based) is where
    in ``file`` the problem is, when known (the document's first line at least).
    """

    check: str
    file: str
    document: str | None
    message: str
    line: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = f"{self.file}: [{self.check}]"
        if self.document:
            where += f" {self.document}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class CheckResult:
    """What a check (or the whole validation) found: findings, plus notes on what it could not check.

    The one ``(findings, notes)`` type of the stage: every check returns one, and
    :func:`gitops_render.validate.validate_tree` returns their sum.

    >>> r = CheckResult((), ("1 Secret checked with encrypted values",)) + CheckResult(notes=("x",))
    >>> r.ok, r.notes
    (True, ('1 Secret checked with encrypted values', 'x'))
    """

    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is no finding (notes do not count)."""
        return not self.findings

    def by_check(self, check: str) -> tuple[Finding, ...]:
        """The findings of one check, e.g. ``report.by_check("flux")``."""
        return tuple(f for f in self.findings if f.check == check)

    def __add__(self, other: CheckResult) -> CheckResult:
        return CheckResult(self.findings + other.findings, self.notes + other.notes)


ValidationReport = CheckResult
"""The result of a whole validation run (the same type as every check's result)."""


@dataclass(frozen=True, order=True)
class ResourceKey:
    """The identity of one object: kind, namespace (``""`` when cluster-scoped), name.

    flux-local's ``NamedResource``: every index, reference and ``provided_*`` entry of the
    validation stage is one of these, printed as ``namespace/Kind/name``.

    >>> k = ResourceKey.parse("flux-system/GitRepository/flux-system")
    >>> str(k), k.namespaced_name
    ('flux-system/GitRepository/flux-system', 'flux-system/flux-system')
    >>> ResourceKey.parse("apps/podinfo", kind="Kustomization")
    ResourceKey(kind='Kustomization', namespace='apps', name='podinfo')
    """

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    @property
    def namespaced_name(self) -> str:
        """``namespace/name`` (the form of ``dependsOn`` and ``provided_kustomizations``)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def parse(cls, text: str, *, kind: str | None = None) -> ResourceKey | None:
        """``namespace/Kind/name`` (or ``namespace/name`` when ``kind`` is given); ``None`` if malformed."""
        parts = text.split("/")
        if kind is not None and len(parts) == 2 and all(parts):
            return cls(kind, parts[0], parts[1])
        if kind is None and len(parts) == 3 and all(parts):
            return cls(parts[1], parts[0], parts[2])
        return None


# --------------------------------------------------------------------------- the unit cache seam


class KustomizationRefs(Protocol):
    """What the unit cache reads of a kustomization (:class:`gitops_render.validate.kustomize.KustomizationFile`)."""

    @property
    def file(self) -> PurePosixPath: ...
    @property
    def resources(self) -> tuple[str, ...]: ...
    @property
    def components(self) -> tuple[str, ...]: ...
    @property
    def file_refs(self) -> tuple[str, ...]: ...
    def resolve(self, entry: str) -> PurePosixPath | None: ...
    def all_refs(self) -> list[PurePosixPath]: ...


class UnitResultCache(Protocol):
    """Earlier results of single ``kustomize build`` runs and single documents' schema checks.

    :class:`gitops_render.validate.cache.UnitCache` is the implementation; the checks only
    see this seam, so the cache sits above them without an import cycle.
    """

    def build_key(self, folder: PurePosixPath, kustomizations: Mapping[PurePosixPath, KustomizationRefs]
                  ) -> str | None: ...
    def build_result(self, key: str | None) -> tuple[bool, str | None] | None: ...
    def store_build(self, key: str | None, error: str | None) -> None: ...
    def document_key(self, content: Mapping[str, Any], *, secret: bool) -> str | None: ...
    def document_messages(self, key: str | None) -> list[str] | None: ...
    def store_document(self, key: str | None, messages: list[str]) -> None: ...


def _str_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    """``table[key]`` as a tuple of strings, ``None`` if absent, :class:`ConfigError` if mistyped."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key} must be a list of strings, not {value!r}",
                          hint="see docs/configuration.md")
    return tuple(value)


def _ref_set(table: Mapping[str, Any], key: str, kind: str | None, example: str) -> frozenset[ResourceKey] | None:
    """A ``provided_*`` list of ``namespace/...`` references, checked for shape (``None`` if absent)."""
    items = _str_list(table, key, "[gitops-render.cluster]")
    if items is None:
        return None
    keys: set[ResourceKey] = set()
    for item in items:
        parsed = ResourceKey.parse(item, kind=kind)
        if parsed is None:
            raise ConfigError(f"[gitops-render.cluster].{key}: {item!r} is not of the form {example!r}")
        keys.add(parsed)
    return frozenset(keys)


def _key(value: str | ResourceKey, kind: str | None = None) -> ResourceKey:
    if isinstance(value, ResourceKey):
        return value
    parsed = ResourceKey.parse(value, kind=kind)
    if parsed is None:
        raise ValueError(f"{value!r} is not of the form {'namespace/name' if kind else 'namespace/Kind/name'}")
    return parsed


DEFAULT_BOOTSTRAP_SOURCES: frozenset[ResourceKey] = frozenset({
    ResourceKey("GitRepository", "flux-system", "flux-system"),
    ResourceKey("OCIRepository", "flux-system", "flux-system"),
})
"""The source ``flux bootstrap`` / the Flux operator creates in the cluster (not in the tree)."""


@dataclass(frozen=True)
class ValidateSettings:
    """What :func:`validate_tree` checks and against what.

    ``helm_schemas`` maps ``chart@version`` to a folder holding the chart's
    ``values.schema.json`` (directly or in a ``<chart>/`` sub-folder). ``provided_*``
    name objects that exist in the cluster without being rendered here: Kustomizations
    (``namespace/name``), sources and substitution sources (``namespace/Kind/name``);
    ``bootstrap_sources`` are the sources bootstrap creates (provided too).
    ``provided_variables`` lists, per provided substitution source, the variable names
    it holds; a provided source that is not listed there is assumed to provide any
    variable (and a note says so). ``missing_schemas`` says what a kind without a schema
    in any schema location is. ``helm_charts`` maps ``chart@version`` to a local chart
    (a folder or a ``.tgz``) that validation renders with ``helm template``; charts not
    listed there are looked up in ``chart_cache`` as ``<chart>-<version>.tgz`` (what
    ``helm pull`` writes) or ``<chart>-<version>/``; ``helm_api_versions`` are passed to it as
    ``--api-versions`` with those the tree uses. Strings are accepted for every key and parsed.
    """

    roots: tuple[str, ...] = ("kubernetes",)
    kubernetes_version: str = "1.35.0"
    schema_locations: tuple[str, ...] = ("default",)
    helm_schemas: Mapping[str, Path] = field(default_factory=dict)
    provided_kustomizations: frozenset[ResourceKey] = frozenset()
    provided_sources: frozenset[ResourceKey] = frozenset()
    provided_substitutions: frozenset[ResourceKey] = frozenset()
    provided_variables: Mapping[ResourceKey, frozenset[str]] = field(default_factory=dict)
    bootstrap_sources: frozenset[ResourceKey] = DEFAULT_BOOTSTRAP_SOURCES
    missing_schemas: MissingSchemas = "finding"
    template_delimiters: tuple[str, ...] = _DEFAULT_DELIMITERS
    timeout: float | None = None
    kubeconform_workers: int = 4
    kustomize_parallelism: int = 4
    kubeconform_cache: Path | None = None
    helm_charts: Mapping[str, Path] = field(default_factory=dict)
    chart_cache: Path | None = None
    helm_api_versions: tuple[str, ...] = DEFAULT_HELM_API_VERSIONS

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "provided_kustomizations",
            frozenset(_key(k, "Kustomization") for k in self.provided_kustomizations))
        for name in ("provided_sources", "provided_substitutions", "bootstrap_sources"):
            fix(self, name, frozenset(_key(k) for k in getattr(self, name)))
        fix(self, "provided_variables",
            MappingProxyType({_key(k): frozenset(v) for k, v in self.provided_variables.items()}))
        if self.missing_schemas not in ("finding", "note"):
            raise ValueError(f"missing_schemas must be 'finding' or 'note', not {self.missing_schemas!r}")

    @property
    def known_sources(self) -> frozenset[ResourceKey]:
        """Sources that exist without being in the tree: provided and bootstrap ones."""
        return self.provided_sources | self.bootstrap_sources

    @classmethod
    def from_settings(
        cls,
        validate_table: Mapping[str, Any],
        cluster_table: Mapping[str, Any],
        repo_root: Path,
        *,
        schema_location_override: Sequence[str] | None = None,
        delimiter_table: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        compat: str = "gitops-render",
    ) -> ValidateSettings:
        """Build settings from the raw ``[gitops-render.validate]`` and ``[gitops-render.cluster]`` tables.

        Schema locations come from, in order of precedence: ``schema_location_override``
        (``--schema-location``), ``GITOPS_RENDER_SCHEMA_LOCATION`` (``;``-separated),
        the table, ``("default",)``. ``delimiter_table`` is the raw
        ``[gitops-render.delimiter]`` table; its delimiters are searched for in the output.
        ``compat`` is the settings' mode: a makejinja repository gets ``missing_schemas =
        "note"`` by default (what its own kubeconform ``-ignore-missing-schemas`` does),
        a gitops-render repository ``"finding"``.

        >>> s = ValidateSettings.from_settings({"roots": ["k8s"]}, {"provided_kustomizations": ["flux-system/x"]},
        ...                                    Path("/repo"), environ={})
        >>> s.roots, s.schema_locations, [str(k) for k in s.provided_kustomizations], s.missing_schemas
        (('k8s',), ('default',), ['flux-system/Kustomization/x'], 'finding')
        """
        env = os.environ if environ is None else environ
        where = "[gitops-render.validate]"
        roots = _str_list(validate_table, "roots", where) or ("kubernetes",)
        version = validate_table.get("kubernetes_version", "1.35.0")
        if not isinstance(version, str) or not re.fullmatch(r"v?\d+\.\d+\.\d+|master", version):
            raise ConfigError(f"{where}.kubernetes_version must look like \"1.35.0\", not {version!r}")
        version = version.removeprefix("v")
        if schema_location_override:
            locations = tuple(schema_location_override)
        elif env.get(SCHEMA_LOCATION_ENV, "").strip():
            locations = tuple(p.strip() for p in env[SCHEMA_LOCATION_ENV].split(";") if p.strip())
        else:
            locations = _str_list(validate_table, "schema_locations", where) or ("default",)
        missing = validate_table.get("missing_schemas", "note" if compat == "makejinja" else "finding")
        if missing not in ("finding", "note"):
            raise ConfigError(f"{where}.missing_schemas must be \"finding\" or \"note\", not {missing!r}",
                              hint="\"note\" counts kinds without a schema (kubeconform -ignore-missing-schemas)")
        timeout = validate_table.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError(f"{where}.timeout must be a positive number of seconds, not {timeout!r}")
        delimiters = _DEFAULT_DELIMITERS
        if delimiter_table:
            found = tuple(dict.fromkeys(v for v in delimiter_table.values() if isinstance(v, str) and v))
            delimiters = found or _DEFAULT_DELIMITERS
        workers = max(2, min(8, os.cpu_count() or 4))
        bootstrap = _ref_set(cluster_table, "bootstrap_sources", None, "namespace/Kind/name")
        return cls(
            roots=roots,
            kubernetes_version=version,
            schema_locations=locations,
            helm_schemas=MappingProxyType(_helm_schemas(validate_table, repo_root, where)),
            provided_kustomizations=_ref_set(cluster_table, "provided_kustomizations", "Kustomization",
                                             "namespace/name") or frozenset(),
            provided_sources=_ref_set(cluster_table, "provided_sources", None, "namespace/Kind/name") or frozenset(),
            provided_substitutions=_ref_set(cluster_table, "provided_substitutions", None,
                                            "namespace/Kind/name") or frozenset(),
            provided_variables=MappingProxyType(_provided_variables(cluster_table)),
            bootstrap_sources=DEFAULT_BOOTSTRAP_SOURCES if bootstrap is None else bootstrap,
            missing_schemas=missing,
            template_delimiters=delimiters,
            timeout=float(timeout) if timeout is not None else None,
            kubeconform_workers=workers,
            kustomize_parallelism=workers,
            kubeconform_cache=repo_root / ".gitops-render" / "cache" / "kubeconform",
            helm_charts=MappingProxyType(_helm_charts(validate_table, repo_root, where, env)),
            chart_cache=_path_setting(validate_table, "chart_cache", repo_root, where,
                                      repo_root / ".gitops-render" / "cache" / "charts"),
            helm_api_versions=_str_list(validate_table, "helm_api_versions", where) or DEFAULT_HELM_API_VERSIONS,
        )


def _path_setting(table: Mapping[str, Any], key: str, repo_root: Path, where: str, default: Path) -> Path:
    value = table.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key} must be a folder path, not {value!r}")
    return Path(value) if Path(value).is_absolute() else repo_root / value


def _helm_charts(table: Mapping[str, Any], repo_root: Path, where: str, env: Mapping[str, str]) -> dict[str, Path]:
    """``[gitops-render.validate.helm_charts]`` (``"chart@version" = "folder or .tgz"``), then the
    ``GITOPS_RENDER_HELM_CHARTS`` entries over it. A path that does not exist is a note at validation time."""
    charts = table.get("helm_charts", {})
    if not isinstance(charts, Mapping):
        raise ConfigError(f"{where}.helm_charts must be a table of \"chart@version\" = \"chart folder or .tgz\"")
    entries = list(charts.items())
    for part in env.get(HELM_CHARTS_ENV, "").split(";"):
        if part.strip():
            key, sep, value = part.strip().partition("=")
            if not sep:
                raise ConfigError(f"{HELM_CHARTS_ENV}: {part.strip()!r} must be chart@version=path")
            entries.append((key.strip(), value.strip()))
    out: dict[str, Path] = {}
    for key, path in entries:
        if not isinstance(path, str) or not path or "@" not in str(key):
            raise ConfigError(f"{where}.helm_charts: {key!r} must be \"chart@version\" = \"chart folder or .tgz\"",
                              hint="e.g. \"app-template@4.5.0\" = "
                                   "\".gitops-render/cache/charts/app-template-4.5.0.tgz\"")
        out[str(key)] = Path(path) if Path(path).is_absolute() else repo_root / path
    return out


def _helm_schemas(table: Mapping[str, Any], repo_root: Path, where: str) -> dict[str, Path]:
    helm = table.get("helm_schemas", {})
    if not isinstance(helm, Mapping):
        raise ConfigError(f"{where}.helm_schemas must be a table of \"chart@version\" = \"folder\"")
    helm_schemas: dict[str, Path] = {}
    for key, folder in helm.items():
        if not isinstance(folder, str) or "@" not in key:
            raise ConfigError(f"{where}.helm_schemas: {key!r} must be \"chart@version\" = \"folder\"")
        path = Path(folder) if Path(folder).is_absolute() else repo_root / folder
        chart = key.split("@", 1)[0]
        if not ((path / "values.schema.json").is_file() or (path / chart / "values.schema.json").is_file()):
            raise ConfigError(f"{where}.helm_schemas.{key!r}: neither {path}/values.schema.json nor "
                              f"{path}/{chart}/values.schema.json exists",
                              hint="point it at the folder that holds the chart's values.schema.json")
        helm_schemas[key] = path
    return helm_schemas


def _provided_variables(cluster_table: Mapping[str, Any]) -> dict[ResourceKey, frozenset[str]]:
    table = cluster_table.get("provided_variables", {})
    if not isinstance(table, Mapping):
        raise ConfigError("[gitops-render.cluster].provided_variables must be a table of "
                          "\"namespace/Kind/name\" = [\"VAR\", ...]")
    variables: dict[ResourceKey, frozenset[str]] = {}
    for ref, names in table.items():
        key = ResourceKey.parse(str(ref))
        if key is None:
            raise ConfigError(f"[gitops-render.cluster].provided_variables: {ref!r} is not of the form "
                              f"'namespace/Kind/name'")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"[gitops-render.cluster].provided_variables.{ref!r} must be a list of names")
        variables[key] = frozenset(names)
    return variables
