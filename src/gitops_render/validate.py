"""Validate a rendered GitOps tree: the entry point, the report types and YAML hygiene.

:func:`validate_tree` parses every YAML file under the configured roots once and
runs five checks over the result, returning every problem at once as
:class:`Finding` objects:

``yaml``         every file parses, no duplicate keys, no unrendered template delimiters
``schema``       every Kubernetes document against its JSON schema (kubeconform, see
                 :mod:`gitops_render.kubeconform`), Secrets included
``kustomize``    every kustomization builds (:mod:`gitops_render.kustomize`)
``orphan``       every manifest next to a kustomization is listed by one
``flux``         the Flux object graph is consistent (:mod:`gitops_render.flux`)
``helm-values``  HelmRelease values against the chart's values schema
                 (:mod:`gitops_render.helmvalues`)

Plaintext of ``*.sops.*`` files is only ever held in memory: it is passed to
kubeconform on stdin, never written to disk.

>>> f = Finding("flux", "kubernetes/apps/demo/app/ks.yaml", "Kustomization demo/app", "spec.path does not exist")
>>> str(f)
'kubernetes/apps/demo/app/ks.yaml: [flux] Kustomization demo/app: spec.path does not exist'
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import yaml

from .errors import ConfigError, GitopsRenderError, ToolError, ToolFailedError
from .runner import ToolRunner

__all__ = [
    "preflight_tools",
    "CHECKS",
    "SCHEMA_LOCATION_ENV",
    "Finding",
    "ValidateSettings",
    "ValidationReport",
    "YamlDocument",
    "YamlFile",
    "parse_yaml",
    "load_tree",
    "is_sops_file",
    "is_kustomize_config",
    "hygiene_findings",
    "validate_tree",
]

CHECKS: tuple[str, ...] = ("schema", "kustomize", "orphan", "flux", "helm-values", "yaml")
"""Every value :attr:`Finding.check` can take."""

SCHEMA_LOCATION_ENV = "GITOPS_RENDER_SCHEMA_LOCATION"
"""Environment variable replacing ``schema_locations`` (several separated by ``;``)."""

_DEFAULT_DELIMITERS: tuple[str, ...] = ("#{", "}#", "#%", "%#", "#|")
_KUSTOMIZE_FILENAMES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
_SOPS_CONFIG_NAMES = frozenset({".sops.yaml", ".sops.yml"})


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


# --------------------------------------------------------------------------- YAML layer


@dataclass(frozen=True)
class YamlDocument:
    """One document of a YAML file: its position and its parsed data.

    >>> d = YamlDocument(0, 1, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    >>> d.is_manifest, d.kind, d.name, d.namespace, d.label()
    (True, 'ConfigMap', 'a', None, 'ConfigMap a')
    """

    index: int
    line: int
    data: Any

    def _meta(self, key: str) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, Mapping) else None
        value = meta.get(key) if isinstance(meta, Mapping) else None
        return value if isinstance(value, str) else None

    @property
    def api_version(self) -> str | None:
        """``apiVersion`` if it is a string."""
        v = self.data.get("apiVersion") if isinstance(self.data, Mapping) else None
        return v if isinstance(v, str) else None

    @property
    def kind(self) -> str | None:
        """``kind`` if it is a string."""
        v = self.data.get("kind") if isinstance(self.data, Mapping) else None
        return v if isinstance(v, str) else None

    @property
    def name(self) -> str | None:
        """``metadata.name`` if it is a string."""
        return self._meta("name")

    @property
    def namespace(self) -> str | None:
        """``metadata.namespace`` as written (not the effective namespace)."""
        return self._meta("namespace")

    @property
    def is_manifest(self) -> bool:
        """True for a mapping with string ``apiVersion`` and ``kind``."""
        return self.api_version is not None and self.kind is not None

    def label(self, namespace: str | None = None) -> str | None:
        """``"Kind namespace/name"`` for findings (``namespace`` overrides the written one)."""
        if not self.is_manifest:
            return None
        ns = namespace or self.namespace
        name = self.name or "<unnamed>"
        return f"{self.kind} {ns}/{name}" if ns else f"{self.kind} {name}"


@dataclass(frozen=True)
class YamlFile:
    """A parsed YAML file: every document, plus the problems found while parsing."""

    relpath: PurePosixPath
    text: str
    documents: tuple[YamlDocument, ...]
    problems: tuple[str, ...] = ()

    @property
    def manifests(self) -> tuple[YamlDocument, ...]:
        """The documents that have ``apiVersion`` and ``kind``."""
        return tuple(d for d in self.documents if d.is_manifest)


_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that records duplicate keys and keeps timestamps as strings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


# Kubernetes tooling keeps unquoted dates as strings; so do we, which also keeps
# every parsed document JSON-serialisable.
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_str)


def parse_yaml(relpath: PurePosixPath, text: str) -> YamlFile:
    """Parse every document of ``text``; syntax errors and duplicate keys become ``problems``.

    Documents parsed before a syntax error are kept. Empty documents are dropped.

    >>> f = parse_yaml(PurePosixPath("a.yaml"), "a: 1\\na: 2\\n---\\nb: [\\n")
    >>> [d.data for d in f.documents], f.problems[0]
    ([{'a': 2}], "line 2: duplicate key 'a' (only the last value is used)")
    >>> f.problems[1].startswith("line 5: not valid YAML")
    True
    """
    loader = _StrictLoader(text)
    documents: list[YamlDocument] = []
    problems: list[str] = []
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            if data is not None:
                documents.append(YamlDocument(index, node.start_mark.line + 1, data))
            index += 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.append(f"{line}not valid YAML: {problem}")
    finally:
        loader.dispose()
    problems[:0] = [f"line {line}: duplicate key {key!r} (only the last value is used)"
                    for line, key in loader.duplicates]
    return YamlFile(relpath, text, tuple(documents), tuple(problems))


def is_sops_file(relpath: PurePosixPath) -> bool:
    """True for ``*.sops.*`` outputs (not for the ``.sops.yaml`` creation-rules file).

    >>> is_sops_file(PurePosixPath("a/secret.sops.yaml")), is_sops_file(PurePosixPath(".sops.yaml"))
    (True, False)
    """
    return ".sops." in relpath.name and relpath.name not in _SOPS_CONFIG_NAMES


def is_kustomize_config(relpath: PurePosixPath, doc: YamlDocument | None = None) -> bool:
    """True for kustomize's own files (``kustomization.yaml``, ``kustomize.config.k8s.io`` kinds).

    >>> is_kustomize_config(PurePosixPath("x/kustomization.yaml"))
    True
    """
    if relpath.name in _KUSTOMIZE_FILENAMES:
        return True
    return doc is not None and (doc.api_version or "").startswith("kustomize.config.k8s.io/")


def _yaml_files(output_root: Path, roots: Iterable[str]) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` file under the roots, sorted, skipping hidden folders."""
    found: set[Path] = set()
    for root in roots:
        base = output_root / root
        if base.is_file():
            found.add(base)
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.endswith((".yaml", ".yml")) and name not in _SOPS_CONFIG_NAMES:
                    found.add(Path(dirpath) / name)
    return sorted(found)


def load_tree(output_root: Path, roots: Iterable[str]) -> dict[PurePosixPath, YamlFile]:
    """Parse every YAML file under ``roots`` once, keyed by path relative to ``output_root``."""
    files: dict[PurePosixPath, YamlFile] = {}
    for path in _yaml_files(output_root, roots):
        rel = PurePosixPath(path.relative_to(output_root).as_posix())
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            files[rel] = YamlFile(rel, "", (), ("not UTF-8 text",))
            continue
        files[rel] = parse_yaml(rel, text)
    return files


# --------------------------------------------------------------------------- hygiene


def _delimiter_patterns(delimiters: Sequence[str]) -> list[tuple[re.Pattern[str], str]]:
    """Regexes for leftover template syntax.

    A delimiter that is a YAML comment marker followed by an ordinary character
    (the default comment delimiter ``#|``) is only flagged at the start of a line
    or when it appears twice on a line, so that a YAML comment which happens to
    contain it is not mistaken for template syntax.

    >>> [bool(p.search("x: 1 #| note #| y")) for p, _ in _delimiter_patterns(("#{", "#|"))]
    [False, True]
    """
    patterns: list[tuple[re.Pattern[str], str]] = []
    for d in dict.fromkeys(delimiters):
        esc = re.escape(d)
        if len(d) == 2 and d[0] == "#" and d[1] not in "{%":
            patterns.append((re.compile(rf"(?m)^\s*{esc}|{esc}.*{esc}"), d))
        else:
            patterns.append((re.compile(esc), d))
    return patterns


def delimiter_problems(text: str, delimiters: Sequence[str], *, show_text: bool = True) -> list[str]:
    """Lines of ``text`` that still hold template delimiters.

    ``show_text`` False keeps the line's content out of the message (secrets).

    >>> delimiter_problems("a: 1\\nb: #{ name }#\\n", ("#{", "}#", "#|"))
    ["line 2: unrendered template syntax '#{' left in output: b: #{ name }#"]
    >>> delimiter_problems("# | a comment\\nc: d  #|x\\n", ("#|",))
    []
    """
    problems: list[str] = []
    patterns = _delimiter_patterns(delimiters)
    for number, line in enumerate(text.splitlines(), start=1):
        hits = [d for pattern, d in patterns if pattern.search(line)]
        if not hits:
            continue
        message = f"line {number}: unrendered template syntax {hits[0]!r} left in output"
        if show_text:
            snippet = line.strip()
            message += f": {snippet[:80]}{'...' if len(snippet) > 80 else ''}"
        problems.append(message)
    return problems


def hygiene_findings(
    files: Mapping[PurePosixPath, YamlFile],
    delimiters: Sequence[str],
    plaintexts: Mapping[PurePosixPath, str] | None = None,
) -> list[Finding]:
    """``yaml`` findings: parse errors, duplicate keys, unrendered template syntax.

    For ``*.sops.*`` files the plaintext (when known) is searched too, and the
    offending line is never quoted.
    """
    findings: list[Finding] = []
    for rel, parsed in files.items():
        secret = is_sops_file(rel)
        for problem in parsed.problems:
            findings.append(Finding("yaml", str(rel), None, problem))
        for problem in delimiter_problems(parsed.text, delimiters, show_text=not secret):
            findings.append(Finding("yaml", str(rel), None, problem))
        if plaintexts and rel in plaintexts:
            for problem in delimiter_problems(plaintexts[rel], delimiters, show_text=False):
                findings.append(Finding("yaml", str(rel), None, problem + " (in the decrypted content)"))
    return findings


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class _SecretTexts:
    """Plaintext of ``*.sops.*`` files (in memory) and what could not be decrypted."""

    plaintexts: Mapping[PurePosixPath, YamlFile]
    missing: tuple[PurePosixPath, ...]
    reason: str | None


def _collect_plaintexts(
    output_root: Path,
    files: Mapping[PurePosixPath, YamlFile],
    plaintexts: Mapping[PurePosixPath, bytes] | None,
    decrypt: Callable[[Path], bytes] | None,
    parallelism: int,
) -> _SecretTexts:
    """Plaintext for every ``*.sops.*`` YAML file: given, else decrypted, else missing."""
    given = {PurePosixPath(str(k)): v for k, v in (plaintexts or {}).items()}
    result: dict[PurePosixPath, YamlFile] = {}
    todo: list[PurePosixPath] = []
    for rel in files:
        if not is_sops_file(rel):
            continue
        if rel in given:
            result[rel] = parse_yaml(rel, given[rel].decode("utf-8", "replace"))
        else:
            todo.append(rel)
    missing: list[PurePosixPath] = []
    reason: str | None = None
    if todo and decrypt is None:
        missing, reason = todo, "no plaintext given and no way to decrypt"
    elif todo and decrypt is not None:
        def attempt(rel: PurePosixPath) -> bytes | str:
            try:
                return decrypt(output_root / rel)
            except (GitopsRenderError, OSError) as exc:  # message never holds secret values
                return str(exc).splitlines()[0]

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
            for rel, out in zip(todo, pool.map(attempt, todo)):
                if isinstance(out, bytes):
                    result[rel] = parse_yaml(rel, out.decode("utf-8", "replace"))
                else:
                    missing.append(rel)
                    reason = reason or f"decryption failed ({out})"
    return _SecretTexts(result, tuple(missing), reason)


# --------------------------------------------------------------------------- entry point


_VERSION_ARGS = {"kubeconform": ["-v"], "kustomize": ["version"]}


def preflight_tools(runner: ToolRunner) -> None:
    """Before ``configure`` writes anything: the validation tools exist, run, and answer like themselves.

    A missing, crashing, hanging (bounded by the runner's timeout) or garbage-printing kubeconform
    or kustomize is reported here, with the tool's name and the fix, instead of after the tree
    was written.
    """
    for tool, args in _VERSION_ARGS.items():
        try:
            res = runner.run(tool, args, check=False)
        except ToolError as exc:
            raise type(exc)(tool, f"{exc.message.removeprefix(tool + ': ')} (checked before writing; "
                                  f"nothing was written)", hint=exc.hint) from None
        text = (res.stdout or "") + (res.stderr or "")
        first = text.strip().splitlines()[0][:80] if text.strip() else "nothing"
        if res.returncode != 0:
            raise ToolFailedError(tool, f"`{tool} {' '.join(args)}` exited {res.returncode} ({first}); nothing was written",
                                  returncode=res.returncode, stderr=res.stderr,
                                  hint=f"reinstall {tool} with scripts/install-tools.sh, "
                                       f"or point GITOPS_RENDER_{tool.upper()} at a working {tool}")
        if not text.strip() or not all(c.isprintable() or c in "\n\r\t" for c in text):
            raise ToolFailedError(tool, f"`{tool} {' '.join(args)}` printed binary garbage instead of its version; "
                                        f"nothing was written",
                                  hint=f"reinstall {tool} with scripts/install-tools.sh, "
                                       f"or point GITOPS_RENDER_{tool.upper()} at a working {tool}")


def validate_tree(
    output_root: Path,
    settings: ValidateSettings,
    *,
    runner: ToolRunner,
    plaintexts: Mapping[PurePosixPath, bytes] | None = None,
    decrypt: Callable[[Path], bytes] | None = None,
    unit_cache: Any | None = None,
) -> ValidationReport:
    """Validate the rendered tree under ``output_root`` and report every finding.

    ``plaintexts`` maps paths of ``*.sops.*`` files, relative to ``output_root``, to
    their decrypted content; files not in it are decrypted with ``decrypt`` (which
    raises a :class:`~gitops_render.errors.GitopsRenderError` when it cannot); when
    neither works their Secrets are schema-checked with the encrypted values and
    the ``sops:`` metadata removed, and a note says so.

    Raises :class:`~gitops_render.errors.ToolError` when kubeconform or kustomize
    cannot run at all; problems in the tree are findings, not exceptions.

    ``unit_cache`` (a :class:`gitops_render.validate_cache.UnitCache`) lets unchanged
    kustomizations and documents reuse their earlier kustomize/kubeconform results; the
    in-process checks (YAML, Flux graph, Helm values, orphans) always run.
    """
    from . import flux, helmvalues, kubeconform, kustomize  # the check modules import this one

    output_root = Path(output_root)
    files = load_tree(output_root, settings.roots)
    notes: list[str] = [f"{root}/ does not exist under {output_root}: nothing there was validated"
                        for root in settings.roots if not (output_root / root).exists()]
    secrets = _collect_plaintexts(output_root, files, plaintexts, decrypt, settings.kustomize_parallelism)
    findings = hygiene_findings(files, settings.template_delimiters,
                                {k: v.text for k, v in secrets.plaintexts.items()})
    for rel, parsed in secrets.plaintexts.items():
        for problem in parsed.problems:  # line numbers and key names only: never a value
            text = problem.split(": not valid YAML")[0] + ": not valid YAML" if "not valid YAML" in problem else problem
            findings.append(Finding("yaml", str(rel), None, f"{text} (in the decrypted content)"))

    kustomizations = kustomize.load_kustomizations(files, output_root)
    tree = flux.build_tree(files, kustomizations, output_root)
    findings.extend(kustomize.resource_findings(files, kustomizations))
    findings.extend(kustomize.orphan_findings(files, kustomizations, tree.flux_paths, tree.reached_dirs))
    graph = flux.check_graph(tree, settings)
    findings.extend(graph.findings)
    notes.extend(graph.notes)
    helm = helmvalues.check_helm_values(tree, settings)
    findings.extend(helm.findings)
    notes.extend(helm.notes)

    schema_docs, encrypted = kubeconform.collect_documents(files, secrets.plaintexts, tree)
    if secrets.missing:
        notes.append(f"{encrypted} Secret document(s) in {len(secrets.missing)} *.sops.* file(s) were "
                     f"schema-checked with their encrypted values (sops metadata removed): {secrets.reason}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        schema_future = pool.submit(kubeconform.validate_documents, schema_docs, settings,
                                    runner=runner, cwd=output_root, cache=unit_cache)
        build_future = pool.submit(kustomize.build_findings, kustomizations, settings,
                                   runner=runner, output_root=output_root, cache=unit_cache)
        findings.extend(schema_future.result())
        findings.extend(build_future.result())

    unique = sorted(set(findings), key=lambda f: (f.file, CHECKS.index(f.check) if f.check in CHECKS else 99,
                                                   f.document or "", f.message))
    return ValidationReport(tuple(unique), tuple(notes))
