"""The validation stage's shared types: findings, the one result type, resource keys, settings.

>>> f = Finding("flux", "kubernetes/apps/demo/app/ks.yaml", "Kustomization demo/app", "spec.path does not exist")
>>> str(f)
'kubernetes/apps/demo/app/ks.yaml: [flux] Kustomization demo/app: spec.path does not exist'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Literal, Protocol

from gitops_render.core.errors import ConfigError
from gitops_render.settings.model import Settings, ValidateTable

CHECKS: tuple[str, ...] = ("schema", "kustomize", "orphan", "flux", "helm-values", "yaml", "sops", "chart", "refs")
"""Every value :attr:`Finding.check` can take."""

_DEFAULT_DELIMITERS: tuple[str, ...] = ("#{", "}#", "#%", "%#", "#|")

DEFAULT_HELM_API_VERSIONS: tuple[str, ...] = ValidateTable().helm_api_versions
"""API versions ``helm template`` is told the cluster serves besides those the tree uses (declared in settings)."""

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
    stale_values_schema: Literal["finding", "note"] = "finding"

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
    def from_settings(cls, settings: Settings, *,
                      schema_location_override: Sequence[str] | None = None) -> ValidateSettings:
        """The computed form of the typed ``[validate]`` and ``[cluster]`` tables of ``settings``.

        The tables are checked by the settings loader (types, patterns, unknown keys);
        this adds what needs the file system or the run. Schema locations come from,
        in order of precedence: ``schema_location_override`` (``--schema-location``),
        ``GITOPS_RENDER_SCHEMA_LOCATION`` (``settings.runtime``), the table. The
        template delimiters searched for in the output are the settings' own.
        """
        table, cluster, repo_root = settings.validate, settings.cluster, Path(settings.root)
        if schema_location_override:
            locations = tuple(schema_location_override)
        else:
            locations = settings.runtime.schema_locations or table.schema_locations
        helm_schemas: dict[str, Path] = {}
        for key, folder in table.helm_schemas.items():
            path = Path(folder) if Path(folder).is_absolute() else repo_root / folder
            chart = key.split("@", 1)[0]
            if not ((path / "values.schema.json").is_file() or (path / chart / "values.schema.json").is_file()):
                raise ConfigError(f"[gitops-render.validate].helm_schemas.{key!r}: neither {path}/values.schema.json "
                                  f"nor {path}/{chart}/values.schema.json exists",
                                  hint="point it at the folder that holds the chart's values.schema.json")
            helm_schemas[key] = path
        delimiters = tuple(dict.fromkeys(v for v in dataclasses.astuple(settings.delimiter) if v))
        missing: Literal["finding", "note"] = "note" if settings.compat == "makejinja" else "finding"
        if table.missing_schemas in ("finding", "note"):
            missing = "finding" if table.missing_schemas == "finding" else "note"
        workers = max(2, min(8, os.cpu_count() or 4))
        return cls(
            roots=table.roots,
            kubernetes_version=table.kubernetes_version.removeprefix("v"),
            schema_locations=locations,
            helm_schemas=MappingProxyType(helm_schemas),
            provided_kustomizations=frozenset(_key(k, "Kustomization") for k in cluster.provided_kustomizations),
            provided_sources=frozenset(_key(k) for k in cluster.provided_sources),
            provided_substitutions=frozenset(_key(k) for k in cluster.provided_substitutions),
            provided_variables=MappingProxyType({_key(k): frozenset(v) for k, v in cluster.provided_variables.items()}),
            bootstrap_sources=frozenset(_key(k) for k in cluster.bootstrap_sources),
            missing_schemas=missing,
            template_delimiters=delimiters or _DEFAULT_DELIMITERS,
            timeout=table.timeout,
            kubeconform_workers=workers,
            kustomize_parallelism=workers,
            kubeconform_cache=repo_root / ".gitops-render" / "cache" / "kubeconform",
            helm_charts=MappingProxyType(_helm_charts(settings)),
            chart_cache=_under(repo_root, table.chart_cache),
            helm_api_versions=table.helm_api_versions,
            stale_values_schema="note" if table.stale_values_schema == "note" else "finding",
        )


def _under(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def _helm_charts(settings: Settings) -> dict[str, Path]:
    """``[validate] helm_charts``, then the ``GITOPS_RENDER_HELM_CHARTS`` entries over it (a path that
    does not exist is a note at validation time)."""
    entries = list(settings.validate.helm_charts.items())
    for part in settings.runtime.helm_charts or ():
        key, sep, value = part.partition("=")
        if not sep or "@" not in key or not value.strip():
            raise ConfigError(f"GITOPS_RENDER_HELM_CHARTS: {part!r} must be chart@version=path",
                              hint="e.g. GITOPS_RENDER_HELM_CHARTS=app-template@4.5.0=/charts/app-template")
        entries.append((key.strip(), value.strip()))
    return {key: _under(Path(settings.root), path) for key, path in entries}
