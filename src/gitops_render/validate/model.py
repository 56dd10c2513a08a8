"""The validation stage's shared types: findings, the report, the computed settings.

>>> f = Finding("flux", "kubernetes/apps/demo/app/ks.yaml", "Kustomization demo/app", "spec.path does not exist")
>>> str(f)
'kubernetes/apps/demo/app/ks.yaml: [flux] Kustomization demo/app: spec.path does not exist'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gitops_render.core.errors import ConfigError
from gitops_render.settings.model import Settings

CHECKS: tuple[str, ...] = ("schema", "kustomize", "orphan", "flux", "helm-values", "yaml")
"""Every value :attr:`Finding.check` can take."""

_DEFAULT_DELIMITERS: tuple[str, ...] = ("#{", "}#", "#%", "%#", "#|")


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True)
class Finding:
    """One problem in the rendered tree.

    ``check`` is one of :data:`CHECKS`; ``file`` is relative to the output root
    (POSIX separators); ``document`` names the object (``"HelmRelease ai-system/litellm"``)
    or is ``None`` when the problem concerns the whole file.
    """

    check: str
    file: str
    document: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: [{self.check}]"
        if self.document:
            where += f" {self.document}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    """All findings of one validation run, plus notes on what could not be checked.

    >>> ValidationReport((), ("1 Secret checked with encrypted values",)).ok
    True
    """

    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is no finding (notes do not count)."""
        return not self.findings

    def by_check(self, check: str) -> tuple[Finding, ...]:
        """The findings of one check, e.g. ``report.by_check("flux")``."""
        return tuple(f for f in self.findings if f.check == check)


@dataclass(frozen=True)
class ValidateSettings:
    """What :func:`validate_tree` checks and against what.

    ``helm_schemas`` maps ``chart@version`` to a folder holding the chart's
    ``values.schema.json`` (directly or in a ``<chart>/`` sub-folder). ``provided_*``
    name objects that exist in the cluster without being rendered here: Kustomizations
    as ``namespace/name``, sources and substitution sources as ``namespace/Kind/name``. ``provided_variables`` lists,
    per provided substitution source, the variable names it holds; a provided source
    that is not listed there is assumed to provide any variable (and a note says so).
    """

    roots: tuple[str, ...] = ("kubernetes",)
    kubernetes_version: str = "1.35.0"
    schema_locations: tuple[str, ...] = ("default",)
    helm_schemas: Mapping[str, Path] = field(default_factory=dict)
    provided_kustomizations: frozenset[str] = frozenset()
    provided_sources: frozenset[str] = frozenset()
    provided_substitutions: frozenset[str] = frozenset()
    provided_variables: Mapping[str, frozenset[str]] = field(default_factory=dict)
    template_delimiters: tuple[str, ...] = _DEFAULT_DELIMITERS
    timeout: float | None = None
    kubeconform_workers: int = 4
    kustomize_parallelism: int = 4
    kubeconform_cache: Path | None = None

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
        workers = max(2, min(8, os.cpu_count() or 4))
        return cls(
            roots=table.roots,
            kubernetes_version=table.kubernetes_version.removeprefix("v"),
            schema_locations=locations,
            helm_schemas=MappingProxyType(helm_schemas),
            provided_kustomizations=frozenset(cluster.provided_kustomizations),
            provided_sources=frozenset(cluster.provided_sources),
            provided_substitutions=frozenset(cluster.provided_substitutions),
            provided_variables=MappingProxyType({k: frozenset(v) for k, v in cluster.provided_variables.items()}),
            template_delimiters=delimiters or _DEFAULT_DELIMITERS,
            timeout=table.timeout,
            kubeconform_workers=workers,
            kustomize_parallelism=workers,
            kubeconform_cache=repo_root / ".gitops-render" / "cache" / "kubeconform",
        )


