"""Schema validation of every Kubernetes document with kubeconform, in a few processes.

Documents are sent to kubeconform on stdin as one multi-document stream
(``kubeconform ... -``), re-serialised from the already parsed YAML as JSON, so:

* the plaintext of ``*.sops.*`` Secrets is validated without touching the disk;
* ``*.sops.*`` files whose plaintext is unknown are validated with the ``sops:``
  metadata removed (``ENC[...]`` strings pass: ``format: byte`` is not asserted);
* kustomize's own files and documents without apiVersion/kind are not sent;
* an object a Flux Kustomization applies with ``postBuild`` is checked as Flux
  applies it: its text with the Kustomization's ``${VAR}`` values substituted
  (:mod:`gitops_render.validate.substitute`), then parsed again. Messages never
  show a substituted value: the field is quoted as written (``flux-webhook.${SECRET_DOMAIN}``).
  A field holding a variable whose value is not known here (an encrypted Secret
  without its plaintext, an external source) is not reported; a note says so.

kubeconform names every stdin result ``stdin`` and, with several workers, reports
them out of order; its JSON output does carry ``version``, ``kind`` and ``name``.
So the documents are split into as few batches as possible in which
(apiVersion, kind, name) is unique, one kubeconform process per batch, and every
result is mapped back to its file and document through that triple.

Flags: ``-strict`` (unknown fields are errors), ``-kubernetes-version`` and the
``-schema-location`` list from the settings, ``-output json``, ``-n`` workers,
``-verbose`` (valid documents are listed too, so their results can be cached).
A kind without a schema is a finding, or with ``missing_schemas = "note"`` (the
default of a makejinja repository, like its own ``-ignore-missing-schemas``) one
note with the count.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gitops_render.core.errors import ToolFailedError
from gitops_render.core.mask import mask
from gitops_render.core.naming import is_secret_path
from gitops_render.core.netcheck import LocationCheck, split_reachable
from gitops_render.core.runner import ToolRunner
from gitops_render.validate.flux_checks import Variables
from gitops_render.validate.flux_tree import FluxTree, TreeObject
from gitops_render.validate.model import CheckResult, Finding, ResourceKey, UnitResultCache, ValidateSettings
from gitops_render.validate.substitute import placeholders, substitute, substitution_disabled
from gitops_render.validate.yamltree import YamlDocument, YamlFile, is_kustomize_config, parse_yaml

__all__ = [
    "Collected",
    "SchemaDocument",
    "applied_data",
    "collect_documents",
    "kubeconform_args",
    "make_batches",
    "pointer_to_path",
    "validate_documents",
]

_MISSING = re.compile(r"could not find schema for (\S+) \(([^)]*)\)")


@dataclass(frozen=True)
class SchemaDocument:
    """One document to validate, and where findings about it go.

    ``secret_values`` are plaintext strings it holds (decrypted values, values substituted
    from a Secret); they are masked out of any message. ``original`` is the document
    before Flux substitution (messages quote its fields), ``unresolved`` the variables
    left in it whose fields are not reported; ``secret`` marks content that holds
    plaintext secret values (its cache key is keyed with the secret key).
    """

    file: str
    label: str | None
    content: Mapping[str, Any]
    secret_values: frozenset[str] = field(default=frozenset(), repr=False)
    line: int | None = None
    original: Mapping[str, Any] | None = field(default=None, repr=False)
    unresolved: frozenset[str] = frozenset()
    secret: bool = False

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


@dataclass(frozen=True)
class Collected:
    """The documents to schema-check, how many are encrypted without plaintext, and what
    substitution itself found (invalid YAML after substitution) or could not do (notes)."""

    documents: list[SchemaDocument]
    encrypted: int
    result: CheckResult = field(default_factory=CheckResult)


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


@dataclass(frozen=True)
class _Substituted:
    content: Mapping[str, Any]
    unresolved: frozenset[str] = frozenset()
    secret_values: frozenset[str] = frozenset()
    original: Mapping[str, Any] | None = None
    unknown: frozenset[str] = frozenset()  # unresolved names whose value exists but is not known here
    problem: str | None = None


def _substitute_doc(rel: PurePosixPath, source: YamlFile, doc: YamlDocument, variables: Variables) -> _Substituted:
    """``doc`` as Flux applies it with ``variables`` (text substituted, then parsed again)."""
    text = source.document_text(doc)
    if text is None or "${" not in text or substitution_disabled(doc.data):
        return _Substituted(doc.data)
    new_text, unresolved = substitute(text, variables.lookup)
    used_secrets = placeholders(text) & variables.secret
    unknown = frozenset(n for n in unresolved if n in variables.unknown or variables.open_ended)
    if new_text == text:
        return _Substituted(doc.data, unresolved, unknown=unknown)
    parsed = parse_yaml(rel, new_text)
    data = parsed.documents[0].data if parsed.documents else None
    broken = [p for p in parsed.problems if "not valid YAML" in p]  # duplicate keys are reported on the file
    if broken or not isinstance(data, Mapping):
        where = broken[0].split(":")[0] if broken else "the document"
        return _Substituted(doc.data, unresolved, problem=f"after Flux substitutes its variables the document "
                                                          f"is not valid YAML ({where} of the document)")
    secret_values = frozenset(variables.values[n] for n in used_secrets if variables.values.get(n))
    return _Substituted(data, unresolved, secret_values, doc.data, unknown)


def _variants(rel: PurePosixPath, source: YamlFile, doc: YamlDocument, tree: FluxTree | None,
              variables: Mapping[ResourceKey, Variables]) -> list[_Substituted]:
    """The distinct forms a document is applied in (one per substituting Kustomization)."""
    owners = {o.owner for o in tree.objects_of(rel, doc.index)} if tree is not None else set()
    forms: list[_Substituted] = []
    for owner in sorted(owners, key=lambda k: (k is None, k or ResourceKey("", "", ""))):
        known = owner is not None and owner in variables
        form = _substitute_doc(rel, source, doc, variables[owner]) if known and owner else _Substituted(doc.data)
        if all(f.content != form.content for f in forms):
            forms.append(form)
    return forms or [_Substituted(doc.data)]


def applied_data(obj: TreeObject, files: Mapping[PurePosixPath, YamlFile], plaintexts: Mapping[PurePosixPath, YamlFile],
                 variables: Mapping[ResourceKey, Variables],
                 ) -> tuple[Mapping[str, Any], frozenset[str], frozenset[str]]:
    """One object as its Kustomization applies it, the secret values it holds, and the variables left unresolved.

    Decrypted when its plaintext is known (an encrypted one keeps its ``ENC[...]`` values),
    ``sops`` metadata removed, ``${VAR}`` substituted with its Kustomization's variables.
    """
    source, doc = files[obj.file], obj.doc
    secrets: frozenset[str] = frozenset()
    decrypted = plaintexts.get(obj.file)
    plain = next((d for d in decrypted.documents if d.index == doc.index), None) if decrypted else None
    if is_secret_path(obj.file) and decrypted is not None and plain is not None and plain.is_manifest:
        source, doc = decrypted, plain
        secrets = frozenset(s for section in ("data", "stringData") for s in _strings(plain.data.get(section)))
    vars_ = variables.get(obj.owner) if obj.owner is not None else None
    form = _substitute_doc(obj.file, source, doc, vars_) if vars_ is not None else _Substituted(doc.data)
    data = form.content if form.problem is None else doc.data
    return {k: v for k, v in data.items() if k != "sops"}, secrets | form.secret_values, form.unresolved


def collect_documents(
    files: Mapping[PurePosixPath, YamlFile],
    plaintexts: Mapping[PurePosixPath, YamlFile],
    tree: FluxTree | None = None,
    variables: Mapping[ResourceKey, Variables] | None = None,
) -> Collected:
    """Every document to schema-check, and how many come from ``*.sops.*`` files without plaintext.

    >>> rel = PurePosixPath("s.sops.yaml")
    >>> f = parse_yaml(rel, "apiVersion: v1\\nkind: Secret\\nmetadata: {name: s}\\nstringData: {a: x}\\nsops: {}\\n")
    >>> c = collect_documents({rel: f}, {})
    >>> c.encrypted, sorted(c.documents[0].content)
    (1, ['apiVersion', 'kind', 'metadata', 'stringData'])
    """
    docs: list[SchemaDocument] = []
    findings: list[Finding] = []
    unknown: dict[str, set[str]] = {}
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
            source_file, source_doc = parsed, doc
            secrets: frozenset[str] = frozenset()
            if sops:
                decrypted = plain.get(doc.index)
                if decrypted is not None and decrypted.is_manifest:
                    source_file, source_doc = plaintexts[rel], decrypted
                    secrets = frozenset(s for section in ("data", "stringData")
                                        for s in _strings(decrypted.data.get(section)))
                else:
                    encrypted += 1
            for form in _variants(rel, source_file, source_doc, tree, variables or {}):
                if form.problem is not None:
                    findings.append(Finding("flux", str(rel), label, form.problem, doc.line))
                    continue
                if form.unknown:
                    unknown.setdefault(str(rel), set()).update(form.unknown)
                content = {k: v for k, v in form.content.items() if k != "sops"} if sops else form.content
                original = form.original
                if sops and original is not None:
                    original = {k: v for k, v in original.items() if k != "sops"}
                values = secrets | form.secret_values
                for item in _expand(content):
                    whole = item is content
                    docs.append(SchemaDocument(
                        str(rel), label if whole else YamlDocument(doc.index, doc.line, item).label(), item,
                        frozenset(v for v in values if v), doc.line,
                        original if whole else None, form.unresolved, sops or bool(form.secret_values)))
    notes: tuple[str, ...] = ()
    if unknown:
        names = sorted({n for names in unknown.values() for n in names})
        notes = (f"{len(unknown)} file(s) use {', '.join('${' + n + '}' for n in names)}, whose value(s) are not "
                 f"known here (encrypted without the key, generated or external): schema errors in the fields "
                 f"that hold them were not reported",)
    return Collected(docs, encrypted, CheckResult(tuple(findings), notes))


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


def _at(data: Any, pointer: str) -> Any:
    """The value at a JSON pointer (``None`` when it does not resolve).

    >>> _at({"a": [{"b": "x"}]}, "/a/0/b"), _at({"a": 1}, "/b")
    ('x', None)
    """
    for part in (p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]):
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _error_message(error: Mapping[str, Any], doc: SchemaDocument | None) -> str | None:
    """One validation error as the operator reads it; ``None`` when it is not reported.

    A field that still holds a variable whose value is unknown here is not reported; a
    field whose value Flux substitutes is quoted as written (``${VAR}``), never with the value.
    """
    pointer = str(error.get("path", ""))
    message = str(error.get("msg", ""))
    if doc is not None:
        value = _at(doc.content, pointer)
        if doc.unresolved and isinstance(value, str) and placeholders(value) & doc.unresolved:
            return None
        written = _at(doc.original, pointer) if doc.original is not None else None
        if isinstance(value, str) and isinstance(written, str) and value != written:
            message = (message.replace(value, written) if value else message) + " (after Flux substitution)"
    return f"{pointer_to_path(pointer)}: {message}"


def _messages(result: Mapping[str, Any], doc: SchemaDocument | None) -> list[str]:
    """Operator-readable messages of one kubeconform result."""
    status = result.get("status")
    errors = result.get("validationErrors") or []
    if status == "statusInvalid" and errors:
        return [m for m in (_error_message(e, doc) for e in errors) if m is not None]
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
        messages = [_mask(message, doc.secret_values if doc else secrets) for message in _messages(res, doc)]
        if key in position and status in ("statusInvalid", "statusError"):
            per_doc.setdefault(position[key], []).extend(messages)
        for message in messages:
            findings.append(Finding("schema", file, label, message, doc.line if doc is not None else None))
    return findings, per_doc


def _missing_schema_notes(findings: list[Finding], settings: ValidateSettings) -> CheckResult:
    """Kinds without a schema: findings, or (``missing_schemas = "note"``) one note with the counts."""
    if settings.missing_schemas == "finding":
        return CheckResult(tuple(findings))
    kept: list[Finding] = []
    kinds: dict[str, int] = {}
    for finding in findings:
        match = _MISSING.match(finding.message)
        if match is None:
            kept.append(finding)
        else:
            kind = f"{match.group(1)} ({match.group(2)})"
            kinds[kind] = kinds.get(kind, 0) + 1
    if not kinds:
        return CheckResult(tuple(kept))
    listed = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(kinds.items()))
    note = (f"{sum(kinds.values())} document(s) of {len(kinds)} kind(s) not schema-checked: no schema for them "
            f"in the schema locations ({listed}); set [gitops-render.validate] missing_schemas = \"finding\" "
            f"to make this a finding")
    return CheckResult(tuple(kept), (note,))


def validate_documents(docs: Sequence[SchemaDocument], settings: ValidateSettings, *, runner: ToolRunner,
                       cwd: Path, cache: UnitResultCache | None = None) -> CheckResult:
    """``schema`` findings for ``docs``: one kubeconform process per batch, batches in parallel.

    ``cwd`` is where relative schema locations are resolved (the repository root).
    ``cache`` (:class:`gitops_render.validate.cache.UnitCache`) answers for documents whose
    result it recorded (only the others are sent to kubeconform) and records the new results.
    """
    if not docs:
        return CheckResult()
    runner.which("kubeconform")
    findings: list[Finding] = []
    todo: list[SchemaDocument] = list(docs)
    keys: dict[int, str | None] = {}
    if cache is not None:
        todo = []
        for doc in docs:
            key = cache.document_key(doc.content, secret=doc.secret)
            messages = cache.document_messages(key)
            if messages is None:
                keys[id(doc)] = key
                todo.append(doc)
                continue
            label = doc.label or (f"{doc.key[1]} {doc.key[2]}" if doc.key[1] else None)
            findings.extend(Finding("schema", doc.file, label, m, doc.line) for m in messages)
    if todo:
        # kubeconform waits ~40 s for a host that does not answer: such a location is left out, and
        # a schema then missing stops the run with one error naming it (seconds, offline)
        left, unreachable = split_reachable(settings.schema_locations, base=cwd)
        if unreachable and not left:
            raise _unreachable_error(unreachable)
        settings = dataclasses.replace(settings, schema_locations=left)
        if settings.kubeconform_cache is not None and "-cache" in kubeconform_args(settings):
            Path(settings.kubeconform_cache).mkdir(parents=True, exist_ok=True)
        batches = make_batches(todo)
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(batches))) as pool:
            results = list(pool.map(lambda b: _run_batch(b, settings, runner, cwd), batches))
        for batch, (batch_findings, per_doc) in zip(batches, results, strict=True):
            findings.extend(batch_findings)
            if cache is not None:
                for i, messages in per_doc.items():
                    cache.store_document(keys.get(id(batch[i])), messages)
        if unreachable and any(f.message.startswith("could not find schema") for f in findings):
            raise _unreachable_error(unreachable)
    return _missing_schema_notes(findings, settings)


def _unreachable_error(unreachable: Sequence[LocationCheck]) -> ToolFailedError:
    where = "; ".join(f"{c.location}: {c.detail}" for c in unreachable)
    return ToolFailedError(
        "kubeconform", f"could not download schemas: {where} (no network access?)",
        hint="point validation at an offline schema mirror with --schema-location or GITOPS_RENDER_SCHEMA_LOCATION "
             "(';'-separated), or [gitops-render.validate] schema_locations; --no-validate skips validation")
