"""Kustomize checks: every kustomization builds, and no manifest is left out of one.

The kustomization files are read statically (:class:`KustomizationFile`) to know
which files and folders each one pulls in; :func:`walk` follows that graph the
way ``kustomize build`` and Flux's kustomize-controller do, so that
:mod:`gitops_render.flux` can tell which objects a Flux ``Kustomization`` applies
and in which namespace. ``kustomize build`` itself runs once per top-level
kustomization (folders pulled in by another kustomization are built as part of
it), several at a time.

>>> k = KustomizationFile.from_document(PurePosixPath("apps/demo/kustomization.yaml"),
...     {"namespace": "demo", "resources": ["./namespace.yaml", "./app/ks.yaml", "https://x/y.yaml"]})
>>> k.namespace, [str(p) for p in k.resolved(k.resources)]
('demo', ['apps/demo/namespace.yaml', 'apps/demo/app/ks.yaml'])
"""

from __future__ import annotations

import concurrent.futures
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gitops_render.core.errors import ToolFailedError, ToolTimeoutError
from gitops_render.core.runner import ToolRunner
from gitops_render.validate.model import Finding, UnitResultCache, ValidateSettings
from gitops_render.validate.yamltree import YamlFile, is_kustomize_config

__all__ = [
    "GeneratedObject",
    "KustomizationFile",
    "Reached",
    "WalkResult",
    "build_findings",
    "build_roots",
    "load_kustomizations",
    "orphan_findings",
    "resource_findings",
    "walk",
]

_KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|github\.com/|gitlab\.com/)", re.I)


def _strings(value: Any) -> tuple[str, ...]:
    """The strings of a list (or a lone string); anything else gives ``()``."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _dicts(value: Any) -> tuple[Mapping[str, Any], ...]:
    """The mappings of a list; anything else gives ``()``."""
    return tuple(v for v in value if isinstance(v, Mapping)) if isinstance(value, list) else ()


def _is_inline(entry: str) -> bool:
    """True for an inline YAML patch/transformer rather than a file name."""
    return "\n" in entry or entry.lstrip().startswith(("apiVersion:", "kind:", "{", "-"))


@dataclass(frozen=True)
class GeneratedObject:
    """A ConfigMap/Secret made by a ``configMapGenerator``/``secretGenerator``.

    ``keys`` is ``None`` when they cannot be known statically.
    """

    kind: str
    name: str
    namespace: str | None
    keys: frozenset[str] | None


@dataclass(frozen=True)
class KustomizationFile:
    """What one ``kustomization.yaml`` pulls in (entries as written, relative to its folder)."""

    file: PurePosixPath
    kind: str
    namespace: str | None
    resources: tuple[str, ...]
    components: tuple[str, ...]
    file_refs: tuple[str, ...]
    generated: tuple[GeneratedObject, ...]

    @property
    def dir(self) -> PurePosixPath:
        """The folder of the kustomization."""
        return self.file.parent

    def resolve(self, entry: str) -> PurePosixPath | None:
        """``entry`` relative to the output root, ``None`` for a remote resource.

        >>> KustomizationFile.from_document(PurePosixPath("a/b/kustomization.yaml"), {}).resolve("../../c")
        PurePosixPath('c')
        """
        if _REMOTE.match(entry):
            return None
        return PurePosixPath(posixpath.normpath(posixpath.join(str(self.dir), entry)))

    def resolved(self, entries: Iterable[str]) -> list[PurePosixPath]:
        """:meth:`resolve` over ``entries``, remote ones dropped."""
        return [p for p in (self.resolve(e) for e in entries) if p is not None]

    @classmethod
    def from_document(cls, file: PurePosixPath, data: Any, *, env_files: Mapping[PurePosixPath, str] | None = None
                      ) -> KustomizationFile:
        """Read the fields that refer to other files from a parsed kustomization."""
        data = data if isinstance(data, Mapping) else {}
        namespace = data.get("namespace") if isinstance(data.get("namespace"), str) else None
        refs: list[str] = []
        refs += [p["path"] for p in _dicts(data.get("patches")) if isinstance(p.get("path"), str)]
        refs += [p for p in _strings(data.get("patchesStrategicMerge")) if not _is_inline(p)]
        refs += [p["path"] for p in _dicts(data.get("patchesJson6902")) if isinstance(p.get("path"), str)]
        refs += [p["path"] for p in _dicts(data.get("replacements")) if isinstance(p.get("path"), str)]
        refs += [h["valuesFile"] for h in _dicts(data.get("helmCharts")) if isinstance(h.get("valuesFile"), str)]
        for key in ("crds", "configurations", "transformers", "generators", "validators"):
            refs += [p for p in _strings(data.get(key)) if not _is_inline(p)]
        openapi = data.get("openapi")
        if isinstance(openapi, Mapping) and isinstance(openapi.get("path"), str):
            refs.append(openapi["path"])
        generated: list[GeneratedObject] = []
        for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
            for gen in _dicts(data.get(key)):
                files = [f.split("=", 1)[-1] for f in _strings(gen.get("files"))]
                envs = list(_strings(gen.get("envs"))) + list(_strings(gen.get("env")))
                refs += files + envs
                if isinstance(gen.get("name"), str):
                    keys = {lit.split("=", 1)[0] for lit in _strings(gen.get("literals"))}
                    keys |= {f.split("=", 1)[0] if "=" in f else posixpath.basename(f)
                             for f in _strings(gen.get("files"))}
                    known = True
                    for env in envs:
                        text = (env_files or {}).get(PurePosixPath(posixpath.normpath(
                            posixpath.join(str(file.parent), env))))
                        if text is None:
                            known = False
                            break
                        keys |= {ln.split("=", 1)[0].strip() for ln in text.splitlines()
                                 if "=" in ln and not ln.lstrip().startswith("#")}
                    ns = gen.get("namespace") if isinstance(gen.get("namespace"), str) else None
                    generated.append(GeneratedObject(kind, gen["name"], ns,
                                                     frozenset(keys) if known else None))
        return cls(
            file=file,
            kind=data.get("kind") if isinstance(data.get("kind"), str) else "Kustomization",
            namespace=namespace,
            resources=_strings(data.get("resources")) + _strings(data.get("bases")),
            components=_strings(data.get("components")),
            file_refs=tuple(refs),
            generated=tuple(generated),
        )

    def all_refs(self) -> list[PurePosixPath]:
        """Every local path this kustomization refers to."""
        return self.resolved(self.resources + self.components + self.file_refs)


def load_kustomizations(files: Mapping[PurePosixPath, YamlFile], output_root: Path | None = None
                        ) -> dict[PurePosixPath, KustomizationFile]:
    """Every kustomization in the parsed tree, keyed by its folder.

    ``output_root`` lets generator ``envs`` files be read to learn their keys.
    """
    found: dict[PurePosixPath, KustomizationFile] = {}
    for rel, parsed in files.items():
        if rel.name not in _KUSTOMIZATION_NAMES or not parsed.documents or rel.parent in found:
            continue
        data = parsed.documents[0].data
        env_files: dict[PurePosixPath, str] = {}
        if output_root is not None and isinstance(data, Mapping):
            for gen in _dicts(data.get("configMapGenerator")) + _dicts(data.get("secretGenerator")):
                for env in _strings(gen.get("envs")) + _strings(gen.get("env")):
                    path = PurePosixPath(posixpath.normpath(posixpath.join(str(rel.parent), env)))
                    try:
                        env_files[path] = (output_root / path).read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError):
                        pass
        found[rel.parent] = KustomizationFile.from_document(rel, data, env_files=env_files)
    return found


@dataclass(frozen=True)
class Reached:
    """A file applied through a kustomization graph, and the namespace kustomize forces on it."""

    file: PurePosixPath
    namespace: str | None


@dataclass(frozen=True)
class WalkResult:
    """What applying one folder pulls in."""

    files: tuple[Reached, ...]
    generated: tuple[tuple[GeneratedObject, str | None, PurePosixPath], ...]  # (object, forced ns, kustomization)
    dirs: frozenset[PurePosixPath]


def _is_manifest_file(parsed: YamlFile | None) -> bool:
    return parsed is not None and bool(parsed.manifests)


def walk(start: PurePosixPath, kustomizations: Mapping[PurePosixPath, KustomizationFile],
         files: Mapping[PurePosixPath, YamlFile]) -> WalkResult:
    """The files a Flux Kustomization with ``spec.path`` = ``start`` applies.

    With a kustomization in ``start`` the resources/components graph is followed
    (the outermost ``namespace:`` wins, as in kustomize); a file pulled in by several
    kustomizations with different namespaces (a shared Component, such as
    cluster-template's ``components/sops``) is reached once per namespace. Without one, every
    manifest below ``start`` is applied, and sub-folders that have a kustomization
    are applied through it (as kustomize-controller generates it).
    """
    reached: dict[tuple[PurePosixPath, str | None], None] = {}  # ordered set: a file once per namespace
    generated: list[tuple[GeneratedObject, str | None, PurePosixPath]] = []
    dirs: set[PurePosixPath] = set()
    seen: set[tuple[PurePosixPath, str | None]] = set()

    def visit(k: KustomizationFile, forced: str | None) -> None:
        ns = forced or k.namespace
        if (k.dir, ns) in seen:
            return
        seen.add((k.dir, ns))
        dirs.add(k.dir)
        generated.extend((g, ns, k.file) for g in k.generated)
        for target in k.resolved(k.resources + k.components):
            if target in files:
                reached.setdefault((target, ns))
            elif target in kustomizations:
                visit(kustomizations[target], ns)

    def generate(folder: PurePosixPath) -> None:
        dirs.add(folder)
        children: set[PurePosixPath] = set()
        for rel, parsed in files.items():
            try:
                rest = rel.relative_to(folder)
            except ValueError:
                continue
            if len(rest.parts) > 1:
                children.add(folder / rest.parts[0])
            elif not is_kustomize_config(rel) and _is_manifest_file(parsed):
                reached.setdefault((rel, None))
        for child in sorted(children):
            if child in kustomizations:
                visit(kustomizations[child], None)
            else:
                generate(child)

    if start in kustomizations:
        visit(kustomizations[start], None)
    else:
        generate(start)
    return WalkResult(tuple(Reached(f, ns) for f, ns in sorted(reached, key=lambda r: (r[0], r[1] or ""))),
                      tuple(generated),
                      frozenset(dirs))


def resource_findings(files: Mapping[PurePosixPath, YamlFile],
                      kustomizations: Mapping[PurePosixPath, KustomizationFile]) -> list[Finding]:
    """``yaml`` findings for documents without apiVersion/kind in a kustomization's resources."""
    findings: list[Finding] = []
    for k in kustomizations.values():
        for target in k.resolved(k.resources):
            parsed = files.get(target)
            if parsed is None:
                continue
            for doc in parsed.documents:
                if not doc.is_manifest:
                    findings.append(Finding(
                        "yaml", str(target), None,
                        f"line {doc.line}: document has no apiVersion/kind, but the file is listed in the "
                        f"resources of {k.file}"))
    return findings


def orphan_findings(
    files: Mapping[PurePosixPath, YamlFile],
    kustomizations: Mapping[PurePosixPath, KustomizationFile],
    flux_paths: Iterable[PurePosixPath],
    reached_dirs: Iterable[PurePosixPath],
) -> list[Finding]:
    """``orphan`` findings: manifests that nothing applies.

    A manifest file is an orphan when the nearest folder above it (its own folder
    included) that has a kustomization does not list it, and no Flux
    ``spec.path`` without a kustomization (which applies everything) comes first.
    A kustomization folder that no Flux ``spec.path`` and no other kustomization
    reaches is reported too (only when the tree has Flux Kustomizations at all).
    """
    flux_dirs = set(flux_paths)
    reached = set(reached_dirs)
    referenced: set[PurePosixPath] = set()
    for k in kustomizations.values():
        referenced.update(k.all_refs())
    findings: list[Finding] = []
    for rel, parsed in files.items():
        if rel in referenced or is_kustomize_config(rel) or not _is_manifest_file(parsed):
            continue
        folder = rel.parent
        while True:
            if folder in kustomizations:
                k = kustomizations[folder]
                findings.append(Finding(
                    "orphan", str(rel), None,
                    f"not listed in {k.file} (resources, components, patches or generators), so nothing applies it"))
                break
            if folder in flux_dirs or folder == folder.parent:
                break
            folder = folder.parent
    if flux_dirs:
        for folder, k in sorted(kustomizations.items()):
            if folder not in reached and folder not in referenced:
                findings.append(Finding(
                    "orphan", str(k.file), None,
                    "no Flux Kustomization spec.path and no other kustomization reaches this folder, "
                    "so nothing applies it"))
    return findings


def build_roots(kustomizations: Mapping[PurePosixPath, KustomizationFile]) -> list[PurePosixPath]:
    """Folders to ``kustomize build``: those no other kustomization pulls in.

    >>> ks = {PurePosixPath(d): KustomizationFile.from_document(PurePosixPath(d) / "kustomization.yaml", data)
    ...       for d, data in {"a": {"resources": ["./b"]}, "a/b": {}, "c": {}}.items()}
    >>> [str(p) for p in build_roots(ks)]
    ['a', 'c']
    """
    pulled: set[PurePosixPath] = set()
    for k in kustomizations.values():
        pulled.update(k.resolved(k.resources + k.components))
    return sorted(d for d in kustomizations if d not in pulled)


def _build_error(stderr: str, output_root: Path) -> str:
    """The useful part of kustomize's stderr, with the output root stripped from paths."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")] or lines[-1:] or ["no error message"]
    text = "; ".join(errors).replace(str(output_root.resolve()) + "/", "").replace(str(output_root) + "/", "")
    return text[:600] + ("..." if len(text) > 600 else "")


def build_findings(
    kustomizations: Mapping[PurePosixPath, KustomizationFile],
    settings: ValidateSettings,
    *,
    runner: ToolRunner,
    output_root: Path,
    cache: UnitResultCache | None = None,
) -> list[Finding]:
    """``kustomize`` findings: run ``kustomize build`` on every top-level kustomization, in parallel.

    A missing kustomize raises :class:`~gitops_render.errors.ToolMissingError`.
    ``cache`` (:class:`gitops_render.validate.cache.UnitCache`) skips the builds whose
    inputs are exactly those of a build it recorded, and records the builds that ran.
    """
    roots: Sequence[PurePosixPath] = build_roots(kustomizations)

    def build(folder: PurePosixPath) -> Finding | None:
        key = cache.build_key(folder, kustomizations) if cache is not None else None
        cached = cache.build_result(key) if cache is not None else None
        if cached is not None:
            error = cached[1]
            return None if error is None else Finding("kustomize", str(kustomizations[folder].file), None, error)
        finding, ran = run_build(folder)
        if cache is not None and ran:
            cache.store_build(key, None if finding is None else finding.message)
        return finding

    def run_build(folder: PurePosixPath) -> tuple[Finding | None, bool]:
        """The finding of one build, and whether kustomize ran to its end (only then it may be cached)."""
        args = ["build", "--load-restrictor=LoadRestrictionsNone", str(folder)]
        try:
            result = runner.run("kustomize", args, cwd=output_root, check=False, timeout=settings.timeout)
        except ToolTimeoutError as exc:
            return Finding("kustomize", str(kustomizations[folder].file), None,
                           f"kustomize build {folder}: {exc.message}"), False
        except ToolFailedError as exc:
            return Finding("kustomize", str(kustomizations[folder].file), None, str(exc)), False
        if result.returncode == 0:
            return None, True
        return Finding("kustomize", str(kustomizations[folder].file), None,
                       f"kustomize build {folder} failed: {_build_error(result.stderr, output_root)}"), True

    if not roots:
        return []
    runner.which("kustomize")  # fail early and once when it is not installed
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, settings.kustomize_parallelism)) as pool:
        return [f for f in pool.map(build, roots) if f is not None]
