"""validate_cache: the key covers what validation reads; entries round-trip; secrets stay keyed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath

import pytest

from gitops_render import validate_cache as vc
from gitops_render.validate import Finding, ValidateSettings, ValidationReport


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
    return vc.validation_key(out, settings, runner=runner, cache_dir=out.parent / "cache", environ={}, **kw)


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
    assert vc.validation_key(out, settings, runner=runner, cache_dir=out.parent / "cache",
                             environ={vc.CACHE_ENV: "0"}) is None
    assert vc.validation_key(out, settings, runner=runner, cache_dir=None, environ={}) is None


def test_keeps_only_the_newest_entries(tree) -> None:  # type: ignore[no-untyped-def]
    out, settings, runner = tree
    cache = out.parent / "cache"
    for i in range(vc.KEEP + 3):
        vc.store_report(vc.ValidationKey(f"{i:064x}", cache), ValidationReport(()))
    assert len(list((cache / "validate").glob("*.json"))) == vc.KEEP
