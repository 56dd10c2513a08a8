"""The parsed YAML tree that every check reads: documents with line numbers, duplicate keys recorded."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_render.core.naming import SOPS_CONFIG_NAMES

_KUSTOMIZE_FILENAMES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})


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
    span: tuple[int, int] | None = None  # character offsets of the document's node in the file text

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

    def document_text(self, doc: YamlDocument) -> str | None:
        """The text of one of this file's documents, as written (``None`` when unknown)."""
        return self.text[doc.span[0]:doc.span[1]] if doc.span is not None else None


_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
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
                documents.append(YamlDocument(index, node.start_mark.line + 1, data,
                                              (node.start_mark.index, node.end_mark.index)))
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
                if name.endswith((".yaml", ".yml")) and name not in SOPS_CONFIG_NAMES:
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


