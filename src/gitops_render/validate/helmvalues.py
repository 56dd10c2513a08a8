"""HelmRelease ``spec.values`` against the chart's own values schema, offline.

A HelmRelease's chart is identified as ``chart@version``: from a ``chartRef`` to
an OCIRepository (last segment of ``spec.url`` @ ``spec.ref.tag``) or from
``spec.chart.spec`` (``chart`` @ ``version``, when the version is exact). When
``helm_schemas`` maps that key to a folder, the values are validated against the
folder's ``values.schema.json`` (or ``<chart>/values.schema.json``) with :mod:`jsonschema` (Draft 7).

Schemas that ``$ref`` the bjw-s ``common`` library by URL are resolved from the
folder's ``common/`` sub-folder (the layout of ``schemas/charts/app-template-4.5.0``),
and any other relative reference from the folder itself: nothing is fetched.

Values that hold a Flux ``${VAR}`` placeholder are strings until Flux substitutes
them, so type errors on such values are not reported; with ``spec.valuesFrom``
the values are only a part of the final values, so missing required keys are not
reported either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitops_render.validate.flux_models import HELM_GROUP, SOURCE_GROUP, HelmRelease, OCIRepository
from gitops_render.validate.flux_tree import FluxTree, TreeObject
from gitops_render.validate.model import CheckResult, Finding, ResourceKey, ValidateSettings

if TYPE_CHECKING:  # jsonschema is imported when a chart's values are checked (a cached run never loads it)
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import ValidationError
    from referencing import Resource

__all__ = [
    "COMMON_URL_PREFIX",
    "chart_key",
    "check_helm_values",
    "values_errors",
    "values_schema_file",
    "values_validator",
]

COMMON_URL_PREFIX = re.compile(
    r"^https://raw\.githubusercontent\.com/bjw-s(?:-labs)?/helm-charts/common-[^/]+/charts/library/common/")
"""URL prefix of the bjw-s common library schemas, served from the local ``common/`` folder."""


def values_schema_file(folder: Path, chart: str) -> Path | None:
    """The values schema in a ``helm_schemas`` folder: ``values.schema.json`` or ``<chart>/values.schema.json``."""
    for candidate in (folder / "values.schema.json", folder / chart / "values.schema.json"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=8)
def values_validator(schema_file: Path) -> Draft7Validator:
    """A Draft 7 validator for ``schema_file`` whose references resolve offline.

    The bjw-s ``common`` URLs map to the ``common/`` folder next to the schema file
    or next to its folder; other relative references resolve next to the schema
    file. Nothing outside the chart's schema folder is read. Cached per schema file.
    """
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    schema_file = schema_file.resolve()
    base = schema_file.parent
    roots = [base, base.parent]
    common = next((r / "common" for r in roots if (r / "common").is_dir()), base / "common")

    def retrieve(uri: str) -> Resource[Any]:
        match = COMMON_URL_PREFIX.match(uri)
        if match:
            path = common / uri[match.end():]
        elif "://" not in uri:
            path = base / uri
        else:
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs field, untyped in stubs
        path = path.resolve()
        if not any(r in path.parents for r in roots) or not path.is_file():
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs field, untyped in stubs
        return Resource.from_contents(json.loads(path.read_text(encoding="utf-8")), default_specification=DRAFT7)

    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    return Draft7Validator(schema, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]


def _path(error: ValidationError) -> str:
    """Dotted path of an error below ``spec.values``.

    >>> from jsonschema.exceptions import ValidationError
    >>> _path(ValidationError("x", path=["controllers", "main", "containers", "app", "ports", 0]))
    'spec.values.controllers.main.containers.app.ports[0]'
    """
    out = "spec.values"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _has_placeholder(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def values_errors(validator: Draft7Validator, values: Mapping[str, Any], *, partial: bool = False) -> list[str]:
    """Readable schema errors of ``values`` (``partial``: valuesFrom adds more, skip ``required``)."""
    from jsonschema.exceptions import best_match

    messages: list[str] = []
    for raw in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path))):
        error = (best_match(raw.context) or raw) if raw.context else raw
        if _has_placeholder(error.instance) or (partial and error.validator == "required"):
            continue
        messages.append(f"{_path(error)}: {error.message}")
    return messages


def chart_key(hr: HelmRelease, repositories: Mapping[ResourceKey, OCIRepository]) -> str | None:
    """``chart@version`` of a HelmRelease, or ``None`` when it cannot be known statically.

    >>> oci = OCIRepository("app-template", "demo", "oci://ghcr.io/bjw-s-labs/helm/app-template", "4.5.0")
    >>> hr = HelmRelease.from_document({"metadata": {"name": "x"}, "spec": {"chartRef": {"kind": "OCIRepository",
    ...                                 "name": "app-template"}}}, namespace="demo")
    >>> chart_key(hr, {oci.key: oci})
    'app-template@4.5.0'
    """
    if hr.chart_ref is not None and hr.chart_ref.kind == "OCIRepository":
        repo = repositories.get(hr.chart_ref.key)
        return repo.chart_key if repo is not None else None
    if hr.chart_name and hr.chart_version and re.fullmatch(r"v?\d+\.\d+\.\d+([-+][\w.+-]*)?", hr.chart_version):
        return f"{hr.chart_name}@{hr.chart_version}"
    return None


def check_helm_values(tree: FluxTree, settings: ValidateSettings) -> CheckResult:
    """``helm-values`` findings for every HelmRelease whose chart has a schema in ``helm_schemas``."""
    repositories: dict[ResourceKey, OCIRepository] = {}
    for obj in tree.of_kind(SOURCE_GROUP, "OCIRepository"):
        repo = OCIRepository.from_document(obj.doc.data, namespace=obj.namespace)
        repositories.setdefault(repo.key, repo)
    findings: list[Finding] = []
    unchecked: dict[str, int] = {}
    missing_schema: set[str] = set()
    done: set[tuple[str, int]] = set()
    releases: list[TreeObject] = list(tree.of_kind(HELM_GROUP, "HelmRelease"))
    for obj in releases:
        hr = HelmRelease.from_document(obj.doc.data, namespace=obj.namespace)
        key = chart_key(hr, repositories)
        if key is None:
            continue
        if key not in settings.helm_schemas:
            chart = key.split("@", 1)[0]
            others = sorted(k for k in settings.helm_schemas if k.split("@", 1)[0] == chart)
            if others and settings.stale_values_schema == "finding":  # a version bump, not an unknown chart
                findings.append(Finding(
                    "helm-values", str(obj.file), obj.label,
                    f"chart {key} has no values schema, but {', '.join(others)} has one: values not checked since "
                    f"the chart version changed; add \"{key}\" to [gitops-render.validate.helm_schemas] (or set "
                    f"stale_values_schema = \"note\")", obj.doc.line))
                continue
            unchecked[key] = unchecked.get(key, 0) + 1
            continue
        if (str(obj.file), obj.doc.index) in done:
            continue
        done.add((str(obj.file), obj.doc.index))
        schema_file = values_schema_file(Path(settings.helm_schemas[key]), key.split("@", 1)[0])
        if schema_file is None:
            missing_schema.add(key)
            continue
        validator = values_validator(schema_file)
        for message in values_errors(validator, hr.values or {}, partial=hr.has_values_from):
            findings.append(Finding("helm-values", str(obj.file), obj.label, f"{message} (chart {key})", obj.doc.line))
    notes = tuple(f"{count} HelmRelease(s) of chart {key}: values not checked (no values schema configured "
                  f"in [gitops-render.validate.helm_schemas])" for key, count in sorted(unchecked.items()))
    notes += tuple(f"chart {key}: no values.schema.json in {settings.helm_schemas[key]}, values not checked"
                   for key in sorted(missing_schema))
    return CheckResult(tuple(findings), notes)
