"""validate_cache: the key covers what validation reads; entries round-trip; secrets stay keyed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath

import pytest

from gitops_render.validate import cache as vc
from gitops_render.validate.model import Finding, ValidateSettings, ValidationReport


class _Runner:
    def __init__(self, tools: Path) -> None:
        self.tools = tools

    def which(self, tool: str) -> str:
        return str(self.tools / tool)


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, ValidateSettings, _Runner]:
    out = tmp_path / "out"
    (out / "kubernetes/apps").mkdir(parents=True)
    (out / "kubernetes/apps/a.yaml").write_text("kind: ConfigMap\n")
    (out / "kubernetes/apps/s.sops.yaml").write_text("enc: ENC[x]\n")
    (out / "README.md").write_text("outside the roots\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    for t in ("kubeconform", "kustomize"):
        (tools / t).write_text("#!/bin/sh\n")
    return out, ValidateSettings(roots=("kubernetes",)), _Runner(tools)


def _key(out: Path, settings: ValidateSettings, runner: _Runner, **kw):  # type: ignore[no-untyped-def]
    return vc.validation_key(out, settings, runner=runner, cache_dir=out.parent / "cache", **kw)


def test_key_is_stable_and_follows_inputs(tree) -> None:  # type: ignore[no-untyped-def]
    out, settings, runner = tree
    k1 = _key(out, settings, runner)
    assert k1 is not None and k1 == _key(out, settings, runner)
    (out / "README.md").write_text("changed, but not validated\n")
    assert _key(out, settings, runner) == k1
    (out / "kubernetes/apps/a.yaml").write_text("kind: Secret\n")
    k2 = _key(out, settings, runner)
    assert k2 != k1
    assert _key(out, dataclasses.replace(settings, kubernetes_version="1.34.0"), runner) != k2
    assert _key(out, dataclasses.replace(settings, provided_sources=frozenset({"a/B/c", "d/E/f"})), runner) \
        == _key(out, dataclasses.replace(settings, provided_sources=frozenset({"d/E/f", "a/B/c"})), runner)
    (runner.tools / "kustomize").write_text("#!/bin/sh\n# another version\n")
    assert _key(out, settings, runner) != k2
    (out / "kubernetes/apps/new.yaml").write_text("kind: ConfigMap\n")
    assert _key(out, settings, runner) != k2


def test_plaintexts_need_a_secret_key_and_change_the_key(tree) -> None:  # type: ignore[no-untyped-def]
    out, settings, runner = tree
    pt = {PurePosixPath("kubernetes/apps/s.sops.yaml"): b"stringData: {a: hunter2}\n"}
    assert _key(out, settings, runner, plaintexts=pt) is None
    assert _key(out, settings, runner, decrypting=True) is None
    k1 = _key(out, settings, runner, plaintexts=pt, secret_key=b"k" * 32)
    k2 = _key(out, settings, runner, plaintexts={**pt, PurePosixPath("kubernetes/apps/s.sops.yaml"): b"x: 1\n"},
              secret_key=b"k" * 32)
    k3 = _key(out, settings, runner, plaintexts=pt, secret_key=b"j" * 32)
    assert None not in (k1, k2, k3) and len({k1, k2, k3, _key(out, settings, runner)}) == 4


def test_round_trip_miss_and_switch_off(tree) -> None:  # type: ignore[no-untyped-def]
    out, settings, runner = tree
    key = _key(out, settings, runner)
    assert vc.cached_report(key) is None
    report = ValidationReport((Finding("schema", "kubernetes/apps/a.yaml", "ConfigMap x", "bad"),
                               Finding("yaml", "kubernetes/apps/b.yaml", None, "dup key")), ("a note",))
    vc.store_report(key, report)
    assert vc.cached_report(key) == report
    assert key.path is not None and (key.path.stat().st_mode & 0o777) == 0o600
    other = vc.ValidationKey("f" * 64, key.cache_dir)
    assert vc.cached_report(other) is None
    key.path.write_text(json.dumps({"format": 1, "key": "wrong"}))
    assert vc.cached_report(key) is None
    key.path.write_text("{not json")
    assert vc.cached_report(key) is None
    assert vc.validation_key(out, settings, runner=runner, cache_dir=None) is None


def test_keeps_only_the_newest_entries(tree) -> None:  # type: ignore[no-untyped-def]
    out, settings, runner = tree
    cache = out.parent / "cache"
    for i in range(vc.KEEP + 3):
        vc.store_report(vc.ValidationKey(f"{i:064x}", cache), ValidationReport(()))
    assert len(list((cache / "validate").glob("*.json"))) == vc.KEEP


# --------------------------------------------------------------------------- per-unit results, real tools

from test_validate import (  # noqa: E402 - the validation fixtures and helpers, shared
    APP,
    CHART_SCHEMAS,
    SECRET,
    SECRET_VALUE,
    CountingRunner,
    Tree,
    encrypted_fixture,  # noqa: F401 - fixture
)

from gitops_render.core.runner import ToolRunner  # noqa: E402
from gitops_render.validate import validate_tree  # noqa: E402

KEY = b"k" * 32


@pytest.fixture
def settings(offline_schema_locations: tuple[str, ...]) -> ValidateSettings:
    """test_validate's settings without a chart to render: these stories count kustomize and kubeconform
    runs (``helm template`` is not cached per unit, see :mod:`gitops_render.validate.charts`)."""
    return ValidateSettings(schema_locations=tuple(offline_schema_locations),
                            helm_schemas={"app-template@4.5.0": CHART_SCHEMAS},
                            provided_sources=frozenset({"flux-system/GitRepository/flux-system"}))


@pytest.fixture
def vtree(encrypted_fixture: tuple[Path, Path, str, dict[PurePosixPath, bytes]], tmp_path: Path,  # noqa: F811
          runner: ToolRunner) -> Tree:
    """A private copy of the validation fixture tree (secrets encrypted with the real sops)."""
    import shutil

    source, key_file, recipient, plaintexts = encrypted_fixture
    shutil.copytree(source, tmp_path / "repo")
    return Tree(tmp_path / "repo", key_file, recipient, runner, dict(plaintexts))


def _validate(t: Tree, s: ValidateSettings, runner: CountingRunner, *, cached: bool,
              secret_key: bytes | None = KEY) -> ValidationReport:
    """validate_tree as configure runs it, with a fresh UnitCache over the tree's cache dir (or none)."""
    units = (vc.UnitCache(t.root.parent / "cache", s, runner=runner, output_root=t.root, secret_key=secret_key)
             if cached else None)
    report = validate_tree(t.root, s, runner=runner, plaintexts=t.plaintexts, unit_cache=units)
    if units is not None:
        units.save()
    return report


def _break(t: Tree) -> None:
    """A schema error, a kind without schema, a failing build and a Secret schema error (from its plaintext)."""
    t.edit(f"{APP}/helmrelease.yaml", "  interval: 1h\n  chartRef:", "  intervall: 1h\n  chartRef:")
    t.write(f"{APP}/widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec: {}\n")
    t.edit(f"{APP}/kustomization.yaml", "  - ./configmap.yaml\n",
           "  - ./configmap.yaml\n  - ./widget.yaml\n  - ./missing.yaml\n")
    plaintext = t.plaintexts[PurePosixPath(SECRET)].decode().replace(
        f"PODINFO_TOKEN: {SECRET_VALUE}", f"PODINFO_TOKEN: {SECRET_VALUE}\n  PODINFO_PORT: 9898")
    t.write_secret(SECRET, plaintext)


def test_cached_results_report_exactly_what_an_uncached_run_reports(vtree: Tree, settings: ValidateSettings) -> None:
    _break(vtree)
    uncached = _validate(vtree, settings, CountingRunner(), cached=False)
    checks = {f.check for f in uncached.findings}
    assert {"schema", "kustomize"} <= checks, uncached.findings
    assert any("could not find schema for Widget" in f.message for f in uncached.findings)
    assert any("PODINFO_PORT" in f.message for f in uncached.findings)

    first, second = CountingRunner(), CountingRunner()
    assert _validate(vtree, settings, first, cached=True) == uncached  # fills the cache
    assert first.calls == {"kubeconform": 1, "kustomize": 3}
    assert _validate(vtree, settings, second, cached=True) == uncached  # answered from it
    assert second.calls == {}, "every build and every document was cached"
    stored = (vtree.root.parent / "cache" / vc.UNITS_FILE).read_text()
    assert SECRET_VALUE not in stored and "9898" not in stored
    assert oct((vtree.root.parent / "cache" / vc.UNITS_FILE).stat().st_mode & 0o077) == "0o0"


def test_one_changed_file_reruns_only_its_kustomization_and_documents(vtree: Tree, settings: ValidateSettings) -> None:
    _validate(vtree, settings, CountingRunner(), cached=True)
    vtree.edit(f"{APP}/configmap.yaml", "\n", "\n# edited\n")  # a changed file, same documents
    counting = CountingRunner()
    report = _validate(vtree, settings, counting, cached=True)
    assert report.ok, report.findings
    assert counting.calls == {"kustomize": 1}, "only the app's build (its documents are unchanged)"

    vtree.edit(f"{APP}/helmrelease.yaml", "  interval: 1h\n  chartRef:", "  intervall: 1h\n  chartRef:")
    counting = CountingRunner()
    report = _validate(vtree, settings, counting, cached=True)
    assert counting.calls == {"kubeconform": 1, "kustomize": 1}, "one build, one kubeconform for the changed document"
    assert report == _validate(vtree, settings, CountingRunner(), cached=False)
    assert report.findings and {f.check for f in report.findings} == {"schema"}

    vtree.edit("kubernetes/apps/demo/namespace.yaml", "\n", "\n# edited\n")  # another kustomization's file
    counting = CountingRunner()
    _validate(vtree, settings, counting, cached=True)
    assert counting.calls == {"kustomize": 1}


def test_secret_documents_are_not_cached_without_the_key(vtree: Tree, settings: ValidateSettings) -> None:
    _validate(vtree, settings, CountingRunner(), cached=True, secret_key=None)
    counting = CountingRunner()
    report = _validate(vtree, settings, counting, cached=True, secret_key=None)
    assert report.ok
    assert counting.calls == {"kubeconform": 1}, "the Secret's document is checked again, nothing else"
    assert SECRET_VALUE not in (vtree.root.parent / "cache" / vc.UNITS_FILE).read_text()
