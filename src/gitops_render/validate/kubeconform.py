"""Schema validation of every Kubernetes document with kubeconform, in a few processes.

Documents are sent to kubeconform on stdin as one multi-document stream
(``kubeconform ... -``), re-serialised from the already parsed YAML as JSON, so:

* the plaintext of ``*.sops.*`` Secrets is validated without touching the disk;
* ``*.sops.*`` files whose plaintext is unknown are validated with the ``sops:``
  metadata removed (``ENC[...]`` strings pass: ``format: byte`` is not asserted);
* kustomize's own files and documents without apiVersion/kind are not sent.

kubeconform names every stdin result ``stdin`` and, with several workers, reports
them out of order; its JSON output does carry ``version``, ``kind`` and ``name``.
So the documents are split into as few batches as possible in which
(apiVersion, kind, name) is unique, one kubeconform process per batch, and every
result is mapped back to its file and document through that triple.

Flags: ``-strict`` (unknown fields are errors), no ``-ignore-missing-schemas``
(a kind without a schema is a finding), ``-kubernetes-version`` and the
``-schema-location`` list from the settings, ``-output json``, ``-n`` workers,
``-verbose`` (valid documents are listed too, so their results can be cached).
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gitops_render.core.errors import ToolFailedError
from gitops_render.core.mask import mask
from gitops_render.core.naming import is_secret_path as is_secret_path
from gitops_render.core.runner import ToolRunner
from gitops_render.validate.flux import FluxTree
from gitops_render.validate.model import Finding, ValidateSettings
from gitops_render.validate.yamltree import YamlDocument, YamlFile, is_kustomize_config

__all__ = [
    "SchemaDocument",
    "collect_documents",
    "kubeconform_args",
    "make_batches",
    "pointer_to_path",
    "validate_documents",
]

_MIN_SECRET_LENGTH = 4


@dataclass(frozen=True)
class SchemaDocument:
    """One document to validate, and where findings about it go.

    ``secret_values`` are the plaintext strings of a decrypted document; they are
    masked out of any message kubeconform produces about it.
    """

    file: str
    label: str | None
    content: Mapping[str, Any]
    secret_values: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def key(self) -> tuple[str, str, str]:
        """(apiVersion, kind, name) as kubeconform reports them.

        >>> SchemaDocument("f", None, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).key
        ('v1', 'Secret', 's')
        """
        meta = self.content.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        return (str(self.content.get("apiVersion", "")), str(self.content.get("kind", "")),
                name if isinstance(name, str) else "")


def _strings(data: Any) -> Iterator[str]:
    """Every string leaf of a parsed document."""
    if isinstance(data, Mapping):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)
    elif isinstance(data, str):
        yield data


def _expand(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A ``v1`` ``List`` becomes its items (kubeconform validates those one by one)."""
    if doc.get("kind") == "List" and doc.get("apiVersion") == "v1" and isinstance(doc.get("items"), list):
        return [item for item in doc["items"] if isinstance(item, Mapping)]
    return [doc]


def collect_documents(
    files: Mapping[PurePosixPath, YamlFile],
    plaintexts: Mapping[PurePosixPath, YamlFile],
    tree: FluxTree | None = None,
) -> tuple[list[SchemaDocument], int]:
    """Every document to schema-check, and how many come from ``*.sops.*`` files without plaintext.

    >>> from gitops_render.validate import parse_yaml
    >>> rel = PurePosixPath("s.sops.yaml")
    >>> f = parse_yaml(rel, "apiVersion: v1\\nkind: Secret\\nmetadata: {name: s}\\nstringData: {a: x}\\nsops: {}\\n")
    >>> docs, encrypted = collect_documents({rel: f}, {})
    >>> encrypted, sorted(docs[0].content)
    (1, ['apiVersion', 'kind', 'metadata', 'stringData'])
    """
    docs: list[SchemaDocument] = []
    encrypted = 0
    for rel, parsed in files.items():
        sops = is_secret_path(rel)
        plain: dict[int, YamlDocument] = {}
        if sops and rel in plaintexts:
            plain = {d.index: d for d in plaintexts[rel].documents}
        for doc in parsed.manifests:
            if is_kustomize_config(rel, doc):
                continue
            label = tree.label(rel, doc) if tree is not None else doc.label()
            content: Mapping[str, Any] = doc.data
            secrets: frozenset[str] = frozenset()
            if sops:
                source = plain.get(doc.index)
                if source is not None and source.is_manifest:
                    content = source.data
                    secrets = frozenset(s for s in _strings(source.data.get("data")) if len(s) >= _MIN_SECRET_LENGTH)
                    secrets |= frozenset(s for s in _strings(source.data.get("stringData"))
                                         if len(s) >= _MIN_SECRET_LENGTH)
                else:
                    encrypted += 1
                content = {k: v for k, v in content.items() if k != "sops"}
            for item in _expand(content):
                item_label = label if item is content else YamlDocument(doc.index, doc.line, item).label()
                docs.append(SchemaDocument(str(rel), item_label, item, secrets))
    return docs, encrypted


def make_batches(docs: Sequence[SchemaDocument]) -> list[list[SchemaDocument]]:
    """Split ``docs`` into the fewest batches in which every (apiVersion, kind, name) is unique.

    >>> d = [SchemaDocument(str(i), None, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}})
    ...      for i, n in enumerate(["a", "b", "a", "a"])]
    >>> [[x.file for x in b] for b in make_batches(d)]
    [['0', '1'], ['2'], ['3']]
    """
    batches: list[tuple[set[tuple[str, str, str]], list[SchemaDocument]]] = []
    for doc in docs:
        for keys, batch in batches:
            if doc.key not in keys:
                keys.add(doc.key)
                batch.append(doc)
                break
        else:
            batches.append(({doc.key}, [doc]))
    return [batch for _, batch in batches]


def kubeconform_args(settings: ValidateSettings) -> list[str]:
    """The kubeconform command line (reading the documents from stdin).

    >>> kubeconform_args(ValidateSettings(schema_locations=("default", "s/{{ .ResourceKind }}.json")))[:6]
    ['-strict', '-output', 'json', '-kubernetes-version', '1.35.0', '-n']
    """
    args = ["-strict", "-output", "json", "-kubernetes-version", settings.kubernetes_version,
            "-n", str(max(1, settings.kubeconform_workers)),
            "-verbose"]  # valid documents are reported too (their results are cached per document)
    for location in settings.schema_locations:
        args += ["-schema-location", location]
    remote = any(loc == "default" or loc.startswith(("http://", "https://")) for loc in settings.schema_locations)
    if remote and settings.kubeconform_cache is not None:
        args += ["-cache", str(settings.kubeconform_cache)]
    return [*args, "-"]


def pointer_to_path(pointer: str) -> str:
    """A JSON pointer from kubeconform as a dotted path (``""`` is the document itself).

    >>> pointer_to_path("/spec/template/spec/containers/0/imagee"), pointer_to_path("")
    ('spec.template.spec.containers[0].imagee', '(top level)')
    """
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/") if p]
    if not parts:
        return "(top level)"
    out = parts[0]
    for part in parts[1:]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _mask(text: str, secrets: frozenset[str]) -> str:
    """The one masker and its policy (:func:`gitops_render.core.mask.mask`)."""
    return mask(text, secrets)


def _messages(result: Mapping[str, Any]) -> list[str]:
    """Operator-readable messages of one kubeconform result."""
    status = result.get("status")
    errors = result.get("validationErrors") or []
    if status == "statusInvalid" and errors:
        return [f"{pointer_to_path(str(e.get('path', '')))}: {e.get('msg', '')}" for e in errors]
    msg = str(result.get("msg", "")).strip()
    if msg.startswith("could not find schema"):
        return [f"{msg} ({result.get('version')}): no schema location has it; add its JSON schema to a "
                f"schema location, or check apiVersion/kind"]
    return [msg or f"kubeconform reported {status}"]


def _raise_if_unreachable(resources: Sequence[Mapping[str, Any]], settings: ValidateSettings) -> None:
    """Schemas that cannot be downloaded are one environment problem, not a finding per document."""
    failed = [r for r in resources if "failed downloading schema" in str(r.get("msg", ""))]
    if failed and len(failed) == len([r for r in resources if r.get("status") not in ("statusValid", "statusSkipped")]):
        raise ToolFailedError(
            "kubeconform",
            f"could not download schemas for {len(failed)} document(s) from "
            f"{', '.join(settings.schema_locations)} (no network access?)",
            hint="point validation at an offline schema mirror with --schema-location or "
                 "GITOPS_RENDER_SCHEMA_LOCATION (';'-separated), or [gitops-render.validate] schema_locations; "
                 "--no-validate skips validation")


def _run_batch(batch: Sequence[SchemaDocument], settings: ValidateSettings, runner: ToolRunner,
               cwd: Path) -> list[Finding]:
    """Validate one batch in one kubeconform process."""
    return _run_batch_detail(batch, settings, runner, cwd)[0]


def _run_batch_detail(batch: Sequence[SchemaDocument], settings: ValidateSettings, runner: ToolRunner,
                      cwd: Path) -> tuple[list[Finding], dict[int, list[str]]]:
    """Validate one batch in one kubeconform process: its findings, and the (masked) messages per
    position in ``batch`` of every document kubeconform reported on by its exact (apiVersion, kind, name)."""
    stream = "".join("---\n" + json.dumps(doc.content, default=str) + "\n" for doc in batch)
    secrets = frozenset().union(*(doc.secret_values for doc in batch))
    result = runner.run("kubeconform", kubeconform_args(settings), input=stream, cwd=cwd, check=False,
                        timeout=settings.timeout)
    try:
        resources = json.loads(result.stdout or "{}").get("resources") or []
    except (json.JSONDecodeError, AttributeError):
        resources = None
    if result.returncode not in (0, 1) or resources is None:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = _mask(lines[-1] if lines else "no output", secrets)
        raise ToolFailedError("kubeconform", f"failed (exit code {result.returncode}): {detail}",
                              returncode=result.returncode,
                              hint="check the schema locations and the kubeconform version")
    _raise_if_unreachable(resources, settings)
    by_key = {doc.key: doc for doc in batch}
    position = {doc.key: i for i, doc in enumerate(batch)}
    findings: list[Finding] = []
    per_doc: dict[int, list[str]] = {}
    for res in resources:
        key = (str(res.get("version", "")), str(res.get("kind", "")), str(res.get("name", "")))
        status = res.get("status")
        if status == "statusValid" and key in position:
            per_doc.setdefault(position[key], [])
        if status in ("statusValid", "statusSkipped", "statusEmpty", "", None):
            continue
        doc = by_key.get(key) or next((d for d in batch if d.key[1:] == key[1:]), None)
        file = doc.file if doc is not None else "(kubeconform stdin)"
        label = doc.label if doc is not None and doc.label else (f"{key[1]} {key[2]}" if key[1] else None)
        messages = [_mask(message, doc.secret_values if doc else secrets) for message in _messages(res)]
        if key in position and status in ("statusInvalid", "statusError"):
            per_doc.setdefault(position[key], []).extend(messages)
        for message in messages:
            findings.append(Finding("schema", file, label, message))
    return findings, per_doc


def validate_documents(docs: Sequence[SchemaDocument], settings: ValidateSettings, *, runner: ToolRunner,
                       cwd: Path, cache: Any | None = None) -> list[Finding]:
    """``schema`` findings for ``docs``: one kubeconform process per batch, batches in parallel.

    ``cwd`` is where relative schema locations are resolved (the repository root).
    ``cache`` (a :class:`gitops_render.validate_cache.UnitCache`) answers for documents whose
    result it recorded (only the others are sent to kubeconform) and records the new results.
    """
    if not docs:
        return []
    runner.which("kubeconform")
    findings: list[Finding] = []
    todo: list[SchemaDocument] = list(docs)
    keys: dict[int, str | None] = {}
    if cache is not None:
        todo = []
        for doc in docs:
            key = cache.document_key(doc.content, secret=is_secret_path(PurePosixPath(doc.file)))
            messages = cache.document_messages(key)
            if messages is None:
                keys[id(doc)] = key
                todo.append(doc)
                continue
            label = doc.label or (f"{doc.key[1]} {doc.key[2]}" if doc.key[1] else None)
            findings.extend(Finding("schema", doc.file, label, m) for m in messages)
    if not todo:
        return findings
    if settings.kubeconform_cache is not None and "-cache" in kubeconform_args(settings):
        Path(settings.kubeconform_cache).mkdir(parents=True, exist_ok=True)
    batches = make_batches(todo)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(batches))) as pool:
        results = list(pool.map(lambda b: _run_batch_detail(b, settings, runner, cwd), batches))
    for batch, (batch_findings, per_doc) in zip(batches, results):
        findings.extend(batch_findings)
        if cache is not None:
            for i, messages in per_doc.items():
                cache.store_document(keys.get(id(batch[i])), messages)
    return findings
