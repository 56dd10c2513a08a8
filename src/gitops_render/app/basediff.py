"""``diff --base REF``: the built resources of the tree at a git ref against the working tree.

What a reviewer of a pull request wants to see (``flux-local diff``, ``flate diff``): not
file diffs but the resources Flux would apply. Both trees are *read*, never rendered (the
ref's ``cluster.yaml`` and key are not in git): the ref's tree comes from ``git archive``
into a temporary directory (the working tree and the index are never touched); in each
tree every Flux Kustomization's ``spec.path`` is built with ``kustomize build`` and its
resources are compared by (kind, namespace, name).

Secrets (``*.sops.*`` files, and their sops-encrypted documents in the built output) are
compared file by file on their decrypted content, in memory, every value masked (a changed
value shows as ``*** (changed)``). A secret whose ciphertext differs but that cannot be
decrypted on one side (no key, another key) is reported as *not comparable*, never as
unchanged.
"""

from __future__ import annotations

import difflib
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_render.core import mask as mask_mod
from gitops_render.core.errors import ConfigError, GitopsRenderError, ToolError
from gitops_render.core.naming import is_secret_path
from gitops_render.core.runner import ToolRunner

__all__ = ["BaseDiff", "ResourceChange", "SecretChange", "base_diff", "git_toplevel", "to_markdown", "to_text"]

FLUX_KS_GROUP = "kustomize.toolkit.fluxcd.io/"
MARKER = "<!-- gitops-render diff -->"  # the GitHub Action finds its own PR comment by it


@dataclass(frozen=True)
class ResourceChange:
    """One built resource that differs: ``unit`` is the Flux Kustomization (``ns/name``) that builds it."""

    unit: str
    resource: str  # "Kind namespace/name"
    kind: str  # added | changed | removed
    text: str  # unified diff


@dataclass(frozen=True)
class SecretChange:
    """One ``*.sops.*`` file that differs; ``comparable`` is False when it could not be decrypted."""

    path: PurePosixPath
    kind: str  # added | changed | removed | not comparable
    text: str = ""
    reason: str = ""

    @property
    def comparable(self) -> bool:
        return self.kind != "not comparable"


@dataclass
class BaseDiff:
    """Everything ``diff --base`` found."""

    base: str
    resources: list[ResourceChange] = field(default_factory=list)
    secrets: list[SecretChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Changes, or secrets that could not be compared (they may have changed)."""
        return bool(self.resources or self.secrets)


def _git(runner: ToolRunner, cwd: Path, *args: str) -> str:
    return runner.run("git", ["-C", str(cwd), *args]).stdout.strip()


def git_toplevel(runner: ToolRunner, root: Path) -> Path:
    """The top of the git work tree holding ``root`` (Flux paths are relative to it)."""
    try:
        return Path(_git(runner, root, "rev-parse", "--show-toplevel"))
    except ToolError:
        raise ConfigError(f"diff --base: {root} is not inside a git repository",
                          hint="run it in a clone of the cluster repo (in CI: actions/checkout with fetch-depth: 0)"
                          ) from None


def _archive(runner: ToolRunner, top: Path, ref: str, dest: Path) -> None:
    """The tree of ``ref`` extracted into ``dest`` (``git archive``; the work tree is not touched)."""
    try:
        _git(runner, top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except ToolError:
        raise ConfigError(f"diff --base: {ref!r} is not a commit of this repository",
                          hint="name a branch, tag or commit (in CI fetch it first: git fetch origin main)"
                          ) from None
    tar = dest.parent / "base.tar"
    _git(runner, top, "archive", "--format=tar", f"--output={tar}", ref)
    with tarfile.open(tar) as archive:
        archive.extractall(dest, filter="data")  # refuses absolute paths, links out of dest, devices
    tar.unlink()


def _documents(path: Path) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, Mapping)]
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return []


def flux_units(top: Path, output: PurePosixPath) -> dict[str, PurePosixPath]:
    """``namespace/name`` -> ``spec.path`` of every Flux Kustomization in the tree under ``top/output``."""
    from gitops_render.validate.flux_models import FluxKustomization

    units: dict[str, PurePosixPath] = {}
    base = top / output
    for path in sorted([*base.rglob("*.yaml"), *base.rglob("*.yml")]):
        rel = path.relative_to(top).as_posix()
        if is_secret_path(rel) or rel.startswith(".git/"):
            continue
        for doc in _documents(path):
            if doc.get("kind") == "Kustomization" and str(doc.get("apiVersion", "")).startswith(FLUX_KS_GROUP):
                ks = FluxKustomization.from_document(doc)
                units[ks.key.namespaced_name] = ks.normalized_path()
    return units


def _key(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{doc.get('kind')} {ns + '/' if ns else ''}{name}"


def _build(runner: ToolRunner, top: Path, path: PurePosixPath) -> dict[str, str] | str:
    """Resource key -> YAML of one ``kustomize build`` (sops-encrypted documents left out), or the error."""
    folder = top / path
    if not (folder.is_dir() and any((folder / n).is_file() for n in
                                    ("kustomization.yaml", "kustomization.yml", "Kustomization"))):
        return {}
    try:
        out = runner.run("kustomize", ["build", "--load-restrictor=LoadRestrictionsNone", str(folder)]).stdout
    except ToolError as exc:
        return f"kustomize build {path} failed: {exc.message}"
    built: dict[str, str] = {}
    for doc in yaml.safe_load_all(out):
        if isinstance(doc, Mapping) and not isinstance(doc.get("sops"), Mapping):  # secrets: compared as files
            built[_key(doc)] = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)
    return built


def _unified(a: str | None, b: str | None, old: str, new: str) -> str:
    return "".join(difflib.unified_diff((a or "").splitlines(keepends=True), (b or "").splitlines(keepends=True),
                                        old, new))


def _resource_changes(runner: ToolRunner, base_top: Path, work_top: Path, output: PurePosixPath,
                      ref: str, notes: list[str]) -> Iterator[ResourceChange]:
    old_units, new_units = flux_units(base_top, output), flux_units(work_top, output)
    for unit in sorted(old_units.keys() | new_units.keys()):
        old = _build(runner, base_top, old_units[unit]) if unit in old_units else {}
        new = _build(runner, work_top, new_units[unit]) if unit in new_units else {}
        if isinstance(old, str) or isinstance(new, str):
            notes.append(f"{unit}: " + "; ".join(x for x in (old, new) if isinstance(x, str)))
            continue
        for res in sorted(old.keys() | new.keys()):
            a, b = old.get(res), new.get(res)
            if a == b:
                continue
            kind = "added" if a is None else "removed" if b is None else "changed"
            yield ResourceChange(unit, res, kind, _unified(a, b, f"{ref}: {res}", f"working tree: {res}"))


def _secret_changes(base_top: Path, work_top: Path, output: PurePosixPath,
                    decrypt: Callable[[Path], bytes] | None) -> Iterator[SecretChange]:
    def secrets(top: Path) -> dict[PurePosixPath, Path]:
        found = (p for p in (top / output).rglob("*") if p.is_file() and is_secret_path(p.name))
        return {PurePosixPath(p.relative_to(top).as_posix()): p for p in found
                if not p.relative_to(top).as_posix().startswith(".git/")}

    old, new = secrets(base_top), secrets(work_top)
    for rel in sorted(old.keys() | new.keys()):
        a, b = old.get(rel), new.get(rel)
        if a is not None and b is not None and a.read_bytes() == b.read_bytes():
            continue  # same ciphertext: same content
        kind = "added" if a is None else "removed" if b is None else "changed"
        if decrypt is None:
            yield SecretChange(rel, "not comparable", reason="no age key: the ciphertext differs, the content "
                                                             "could not be decrypted")
            continue
        try:
            plain = [decrypt(p).decode("utf-8", "replace") if p is not None else None for p in (a, b)]
        except GitopsRenderError:
            yield SecretChange(rel, "not comparable", reason="the age key cannot decrypt it on one side "
                                                             "(encrypted to other recipients?)")
            continue
        old_text, new_text = mask_mod.mask_secret_pair(plain[0], plain[1])
        if old_text == new_text:
            new_text = (new_text or "") + "# (re-encrypted: same content, recipients or metadata changed)\n"
        yield SecretChange(rel, kind, _unified(old_text, new_text, f"a/{rel}", f"b/{rel}"))


def base_diff(ref: str, root: Path, output: Path, *, runner: ToolRunner,
              decrypt: Callable[[Path], bytes] | None) -> BaseDiff:
    """The built resources and secrets of ``output`` at ``ref`` against the working tree."""
    work_top = git_toplevel(runner, root)
    try:
        out_rel = PurePosixPath(output.resolve().relative_to(work_top.resolve()).as_posix())
    except ValueError:
        raise ConfigError(f"diff --base: the output {output} is outside the git repository {work_top}") from None
    result = BaseDiff(ref)
    with tempfile.TemporaryDirectory(prefix="gitops-render-base-") as tmp:
        base_top = Path(tmp) / "tree"
        base_top.mkdir()
        _archive(runner, work_top, ref, base_top)
        result.resources = list(_resource_changes(runner, base_top, work_top, out_rel, ref, result.notes))
        result.secrets = list(_secret_changes(base_top, work_top, out_rel, decrypt))
    if any(c.resource.startswith("HelmRelease ") for c in result.resources):
        result.notes.append("HelmReleases are compared as resources (their values), not rendered to manifests")
    return result


def to_text(diff: BaseDiff) -> str:
    """Unified diffs per resource, then per secret (values masked)."""
    parts = [c.text for c in diff.resources]
    for s in diff.secrets:
        parts.append(s.text if s.comparable else f"secret {s.path}: NOT COMPARED: {s.reason}\n")
    return "".join(parts)


def to_markdown(diff: BaseDiff, picture: str | None = None) -> str:
    """A pull-request comment: the picture of what changed (Mermaid, when given), a summary table, then
    one collapsible diff per Flux Kustomization."""
    lines = [MARKER, f"### gitops-render: built resources against `{diff.base}`", ""]
    if not diff.changed:
        lines.append("No changes in the built resources or secrets.")
    if picture:
        from gitops_render.draw.mermaid import LEGEND

        lines += ["```mermaid", picture.rstrip("\n"), "```", f"<sub>{LEGEND}</sub>", ""]
    by_unit: dict[str, list[ResourceChange]] = {}
    for c in diff.resources:
        by_unit.setdefault(c.unit, []).append(c)
    if by_unit:
        lines += ["| Flux Kustomization | added | changed | removed |", "|---|---:|---:|---:|"]
        for unit, changes in by_unit.items():
            counts = [sum(c.kind == k for c in changes) for k in ("added", "changed", "removed")]
            lines.append(f"| `{unit}` | {counts[0]} | {counts[1]} | {counts[2]} |")
        lines.append("")
        for unit, changes in by_unit.items():
            lines += [f"<details><summary><code>{unit}</code>: {len(changes)} resource(s)</summary>", "",
                      "```diff", "".join(c.text for c in changes).rstrip("\n"), "```", "</details>", ""]
    if diff.secrets:
        lines += ["**Secrets** (values masked; `*** (changed)` marks a changed value):", ""]
        for s in diff.secrets:
            if s.comparable:
                lines += [f"<details><summary><code>{s.path}</code>: {s.kind}</summary>", "", "```diff",
                          s.text.rstrip("\n"), "```", "</details>", ""]
            else:
                lines.append(f"- :warning: `{s.path}`: **not compared**: {s.reason}")
        lines.append("")
    lines += [f"_note: {n}_" for n in diff.notes]
    return "\n".join(lines).rstrip("\n") + "\n"
