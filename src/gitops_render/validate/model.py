"""The validation stage's shared types: findings, the report, the computed settings.

>>> f = Finding("flux", "kubernetes/apps/demo/app/ks.yaml", "Kustomization demo/app", "spec.path does not exist")
>>> str(f)
'kubernetes/apps/demo/app/ks.yaml: [flux] Kustomization demo/app: spec.path does not exist'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gitops_render.core.errors import ConfigError

CHECKS: tuple[str, ...] = ("schema", "kustomize", "orphan", "flux", "helm-values", "yaml")
"""Every value :attr:`Finding.check` can take."""

SCHEMA_LOCATION_ENV = "GITOPS_RENDER_SCHEMA_LOCATION"
"""Environment variable replacing ``schema_locations`` (several separated by ``;``)."""

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


def _str_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    """``table[key]`` as a tuple of strings, ``None`` if absent, :class:`ConfigError` if mistyped."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key} must be a list of strings, not {value!r}",
                          hint="see docs/configuration.md")
    return tuple(value)


def _ref_set(table: Mapping[str, Any], key: str, parts: int, example: str) -> frozenset[str]:
    """A ``provided_*`` list of ``namespace/...`` references, checked for shape."""
    items = _str_list(table, key, "[gitops-render.cluster]") or ()
    for item in items:
        if len(item.split("/")) != parts or not all(item.split("/")):
            raise ConfigError(f"[gitops-render.cluster].{key}: {item!r} is not of the form {example!r}")
    return frozenset(items)


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
    def from_settings(
        cls,
        validate_table: Mapping[str, Any],
        cluster_table: Mapping[str, Any],
        repo_root: Path,
        *,
        schema_location_override: Sequence[str] | None = None,
        delimiter_table: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ValidateSettings:
        """Build settings from the raw ``[gitops-render.validate]`` and ``[gitops-render.cluster]`` tables.

        Schema locations come from, in order of precedence: ``schema_location_override``
        (``--schema-location``), ``GITOPS_RENDER_SCHEMA_LOCATION`` (``;``-separated),
        the table, ``("default",)``. ``delimiter_table`` is the raw
        ``[gitops-render.delimiter]`` table; its delimiters are searched for in the output.

        >>> s = ValidateSettings.from_settings({"roots": ["k8s"]}, {"provided_kustomizations": ["flux-system/x"]},
        ...                                    Path("/repo"), environ={})
        >>> s.roots, s.schema_locations, sorted(s.provided_kustomizations)
        (('k8s',), ('default',), ['flux-system/x'])
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
        helm = validate_table.get("helm_schemas", {})
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
        timeout = validate_table.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError(f"{where}.timeout must be a positive number of seconds, not {timeout!r}")
        variables_table = cluster_table.get("provided_variables", {})
        if not isinstance(variables_table, Mapping):
            raise ConfigError("[gitops-render.cluster].provided_variables must be a table of "
                              "\"namespace/Kind/name\" = [\"VAR\", ...]")
        variables: dict[str, frozenset[str]] = {}
        for ref, names in variables_table.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigError(f"[gitops-render.cluster].provided_variables.{ref!r} must be a list of names")
            variables[ref] = frozenset(names)
        delimiters = _DEFAULT_DELIMITERS
        if delimiter_table:
            found = tuple(dict.fromkeys(v for v in delimiter_table.values() if isinstance(v, str) and v))
            delimiters = found or _DEFAULT_DELIMITERS
        workers = max(2, min(8, os.cpu_count() or 4))
        return cls(
            roots=roots,
            kubernetes_version=version,
            schema_locations=locations,
            helm_schemas=MappingProxyType(helm_schemas),
            provided_kustomizations=_ref_set(cluster_table, "provided_kustomizations", 2, "namespace/name"),
            provided_sources=_ref_set(cluster_table, "provided_sources", 3, "namespace/Kind/name"),
            provided_substitutions=_ref_set(cluster_table, "provided_substitutions", 3, "namespace/Kind/name"),
            provided_variables=MappingProxyType(variables),
            template_delimiters=delimiters,
            timeout=float(timeout) if timeout is not None else None,
            kubeconform_workers=workers,
            kustomize_parallelism=workers,
            kubeconform_cache=repo_root / ".gitops-render" / "cache" / "kubeconform",
        )


