"""Secret reconciliation with the real sops 3.11 and age (no fakes, no skips).

Subprocess calls are counted by wrapping ``ToolRunner.run`` -- the calls still
go to the real tools.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gitops_render.core.errors import SecretsError
from gitops_render.secrets.keys import generate_key_file
from gitops_render.core.runner import ToolResult, ToolRunner
from gitops_render.secrets.policy import (
    SecretDecision,
    canonical_data,
    compare_without_key,
    find_secret_files,
    reconcile,
)
from gitops_render.secrets.sops import SopsContext, default_parallelism, file_recipients

P = PurePosixPath
RULE = r"(bootstrap|kubernetes)/.*\.sops\.ya?ml"


@dataclass
class CountingRunner(ToolRunner):
    """The real runner, counting calls per tool and running an optional probe first."""

    calls: list[str] = field(default_factory=list)
    probe: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, tool: str, args: Sequence[str], **kw: Any) -> ToolResult:  # type: ignore[override]
        with self.lock:
            self.calls.append(tool)
        if self.probe is not None:
            self.probe(tool, args)
        return super().run(tool, args, **kw)


def secret(name: str, value: str, extra: str = "") -> bytes:
    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n"
            f"stringData:\n  password: {value}\n{extra}").encode()


def config(*recipients: str, bad_rule: str | None = None) -> str:
    rules = ["creation_rules:"]
    if bad_rule:
        rules.append(f"  - path_regex: kubernetes/bad/\n    age: {bad_rule}")
    rules.append(f"  - path_regex: {RULE}\n    encrypted_regex: \"^(data|stringData)$\"\n"
                 f"    mac_only_encrypted: true\n    age: {', '.join(recipients)}")
    return "\n".join(rules) + "\nstores:\n  yaml:\n    indent: 2\n"


@dataclass
class Repo:
    root: Path
    tmp: Path
    runner: CountingRunner
    key: Path
    pub: str

    def ctx(self, cfg: str | None = None, key: Path | None = None, cache: bool = True, parallelism: int = 4) -> SopsContext:
        return SopsContext(repo_root=self.root, age_key_file=key or self.key,
                           sops_config_text=cfg if cfg is not None else config(self.pub),
                           runner=self.runner, parallelism=parallelism,
                           cache_dir=self.root / ".gitops-render/cache" if cache else None, temp_root=self.tmp)

    def apply(self, decisions: list[SecretDecision]) -> None:
        """What the write stage does with the decisions."""
        for d in decisions:
            target = self.root / d.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != d.ciphertext:
                target.write_bytes(d.ciphertext)

    def decrypt_with(self, key: Path, rel: PurePosixPath) -> bytes:
        """Plain ``sops --decrypt`` as an operator runs it, with the repo's .sops.yaml in place."""
        (self.root / ".sops.yaml").write_text(config(self.pub))
        return ToolRunner().run("sops", ["--decrypt", str(rel)], cwd=self.root,
                                env={"SOPS_AGE_KEY_FILE": str(key), "SOPS_AGE_KEY": "",
                                     "XDG_CONFIG_HOME": str(self.tmp), "HOME": str(self.tmp)}, text=False).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    runner = CountingRunner()
    runner.which("sops")  # missing tools fail the tests
    root, tmp = tmp_path / "repo", tmp_path / "tmp"
    root.mkdir()
    tmp.mkdir()
    info = generate_key_file(runner=runner, path=root / "age.key")
    runner.calls.clear()
    return Repo(root, tmp, runner, info.path, info.public_key)


def plaintexts(n: int = 3, changed: Mapping[int, str] | None = None) -> dict[PurePosixPath, bytes]:
    changed = changed or {}
    return {P(f"kubernetes/apps/app{i}/secret.sops.yaml"): secret(f"app{i}", changed.get(i, f"pw-{i}-0123456789"))
            for i in range(n)}


def on_disk(repo: Repo) -> dict[PurePosixPath, bytes]:
    return {P(p.relative_to(repo.root).as_posix()): p.read_bytes()
            for p in (repo.root / "kubernetes").rglob("*.sops.yaml")}


# --------------------------------------------------------------------------- no churn


def test_reconcile_twice_is_byte_identical(repo: Repo) -> None:
    first = reconcile(repo.ctx(cache=False), plaintexts(), repo.root)
    assert [d.action for d in first] == ["added"] * 3
    repo.apply(first)
    before = on_disk(repo)
    second = reconcile(repo.ctx(cache=False), plaintexts(), repo.root)
    assert [d.action for d in second] == ["unchanged"] * 3
    assert {d.path: d.ciphertext for d in second} == before
    for d in first:
        assert repo.decrypt_with(repo.key, d.path) == plaintexts()[d.path]


@pytest.mark.parametrize("cache", [False, True])
def test_one_value_changed_only_that_secret_reencrypted(repo: Repo, cache: bool) -> None:
    repo.apply(reconcile(repo.ctx(cache=cache), plaintexts(), repo.root))
    before = on_disk(repo)
    new = plaintexts(changed={1: "a-new-password-value"})
    repo.runner.calls.clear()
    decisions = {d.path: d for d in reconcile(repo.ctx(cache=cache), new, repo.root)}
    actions = {p.parent.name: d.action for p, d in decisions.items()}
    assert actions == {"app0": "unchanged", "app1": "changed", "app2": "unchanged"}
    for p, d in decisions.items():
        if d.action == "unchanged":
            assert d.ciphertext == before[p]
    repo.apply(list(decisions.values()))
    changed = P("kubernetes/apps/app1/secret.sops.yaml")
    assert repo.decrypt_with(repo.key, changed) == new[changed]
    if cache:  # the cache knows the file and proves the data changed: encrypt only, no decrypt
        assert repo.runner.calls.count("sops") == 1
        assert decisions[changed].previous_plaintext is None
    else:  # unchanged ones decrypted and compared, the changed one decrypted + encrypted
        assert repo.runner.calls.count("sops") == 4
        assert decisions[changed].previous_plaintext == plaintexts()[changed]


@pytest.mark.parametrize("cache", [False, True])
def test_formatting_only_difference_is_unchanged(repo: Repo, cache: bool) -> None:
    repo.apply(reconcile(repo.ctx(cache=cache), plaintexts(1), repo.root))
    rel = P("kubernetes/apps/app0/secret.sops.yaml")
    reformatted = (b"# rendered differently\napiVersion: 'v1'\nkind:   Secret\nstringData: {password: \"pw-0-0123456789\"}\n"
                   b"metadata:\n    namespace: default\n    name: app0\n")
    assert canonical_data(reformatted, "yaml") == canonical_data(plaintexts(1)[rel], "yaml")
    repo.runner.calls.clear()
    [decision] = reconcile(repo.ctx(cache=cache), {rel: reformatted}, repo.root)
    assert decision.action == "unchanged"
    assert decision.ciphertext == (repo.root / rel).read_bytes()
    assert repo.runner.calls.count("sops") == (0 if cache else 1)  # with the cache: keyed on the data, not bytes


# --------------------------------------------------------------------------- keys


def test_key_rotation_rekeys_everything(repo: Repo) -> None:
    repo.apply(reconcile(repo.ctx(), plaintexts(), repo.root))
    old_key = repo.tmp / "old.key"
    old_key.write_bytes(repo.key.read_bytes())
    repo.key.unlink()
    new_pub = generate_key_file(runner=repo.runner, path=repo.key).public_key  # operator replaced age.key
    decisions = reconcile(repo.ctx(config(new_pub)), plaintexts(), repo.root)
    assert [d.action for d in decisions] == ["rekeyed"] * 3
    assert all("not compared" in d.reason and "recipients changed" in d.reason for d in decisions)
    repo.apply(decisions)
    for d in decisions:
        assert file_recipients(d.ciphertext) == (new_pub,)
        assert repo.decrypt_with(repo.key, d.path) == plaintexts()[d.path]
        with pytest.raises(Exception):
            repo.decrypt_with(old_key, d.path)
    # and the next run is quiet again
    assert [d.action for d in reconcile(repo.ctx(config(new_pub)), plaintexts(), repo.root)] == ["unchanged"] * 3


def test_rotation_with_old_identity_kept_compares_contents(repo: Repo) -> None:
    repo.apply(reconcile(repo.ctx(), plaintexts(2), repo.root))
    new_key = repo.tmp / "new.key"
    new_pub = generate_key_file(runner=repo.runner, path=new_key).public_key
    both = repo.tmp / "both.key"
    both.write_text(new_key.read_text() + repo.key.read_text())
    decisions = reconcile(repo.ctx(config(new_pub), key=both), plaintexts(2, changed={1: "changed-during-rotation"}),
                          repo.root)
    assert [d.action for d in decisions] == ["rekeyed", "changed"]
    assert "not compared" not in decisions[0].reason and "recipients changed" in decisions[0].reason


def test_added_recipient_rekeys(repo: Repo) -> None:
    repo.apply(reconcile(repo.ctx(), plaintexts(2), repo.root))
    extra_key = repo.tmp / "ops.key"
    extra = generate_key_file(runner=repo.runner, path=extra_key).public_key
    decisions = reconcile(repo.ctx(config(repo.pub, extra)), plaintexts(2), repo.root)
    assert [d.action for d in decisions] == ["rekeyed", "rekeyed"]
    assert all(extra in d.reason for d in decisions)
    repo.apply(decisions)
    for d in decisions:
        assert file_recipients(d.ciphertext) == tuple(sorted((repo.pub, extra)))
        assert repo.decrypt_with(extra_key, d.path) == repo.decrypt_with(repo.key, d.path) == plaintexts(2)[d.path]


def test_existing_plaintext_file_is_encrypted(repo: Repo) -> None:
    rel = P("kubernetes/apps/app0/secret.sops.yaml")
    (repo.root / rel).parent.mkdir(parents=True)
    (repo.root / rel).write_bytes(plaintexts(1)[rel])  # e.g. a half-finished old encrypt loop
    [d] = reconcile(repo.ctx(), plaintexts(1), repo.root)
    assert d.action == "changed" and "not sops-encrypted" in d.reason
    assert b"pw-0-0123456789" not in d.ciphertext


# --------------------------------------------------------------------------- failure safety


def _scan(dirs: Sequence[Path], needles: Sequence[bytes]) -> list[str]:
    found = []
    for d in dirs:
        for path in d.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}" for n in needles if n in data]
    return found


def test_sops_failure_halfway_leaves_no_plaintext(repo: Repo) -> None:
    bad_recipient = "age1" + "q" * 58  # well-formed text, invalid checksum: sops rejects it
    texts = plaintexts(10)
    bad = P("kubernetes/bad/secret.sops.yaml")
    texts[bad] = secret("bad", "the-bad-secret-value")
    needles = [b"pw-%d-0123456789" % i for i in range(10)] + [b"the-bad-secret-value"]
    seen_during: list[str] = []
    repo.runner.probe = lambda tool, args: seen_during.extend(_scan([repo.root, repo.tmp], needles))
    with pytest.raises(SecretsError) as err:
        reconcile(repo.ctx(config(repo.pub, bad_rule=bad_recipient)), texts, repo.root)
    assert "kubernetes/bad/secret.sops.yaml" in str(err.value)
    assert "the-bad-secret-value" not in str(err.value)
    assert repo.runner.calls.count("sops") >= 2  # others were encrypted before the bad one failed
    assert seen_during == []
    assert _scan([repo.root, repo.tmp], needles) == []
    assert list(repo.tmp.iterdir()) == []  # private temp dir removed
    assert not (repo.root / ".gitops-render").exists()  # cache untouched
    assert not (repo.root / "kubernetes").exists()  # nothing written


def test_missing_key_stops_before_anything(repo: Repo) -> None:
    repo.key.unlink()
    with pytest.raises(SecretsError) as err:
        reconcile(repo.ctx(), plaintexts(), repo.root)
    assert "age key file age.key not found: run `gitops-render init` or set SOPS_AGE_KEY_FILE" in str(err.value)
    assert repo.runner.calls == []
    assert sorted(p.name for p in repo.root.iterdir()) == []


def test_invalid_rendered_secret_is_reported_without_content(repo: Repo) -> None:
    rel = P("kubernetes/apps/x/secret.sops.yaml")
    with pytest.raises(SecretsError) as err:
        reconcile(repo.ctx(), {rel: b"stringData:\n  pw: [unclosed-secret-value\n"}, repo.root)
    assert "not valid yaml" in str(err.value) and "unclosed-secret-value" not in str(err.value)
    assert repo.runner.calls == []


# --------------------------------------------------------------------------- cache


def test_cache_hit_runs_no_sops(repo: Repo) -> None:
    repo.apply(reconcile(repo.ctx(), plaintexts(), repo.root))
    repo.runner.calls.clear()
    decisions = reconcile(repo.ctx(), plaintexts(), repo.root)
    assert [d.action for d in decisions] == ["unchanged"] * 3
    assert "cache" in decisions[0].reason
    assert repo.runner.calls == []
    # a changed plaintext misses the cache for that secret only
    decisions = reconcile(repo.ctx(), plaintexts(changed={2: "another-value-xyz"}), repo.root)
    assert [d.action for d in decisions] == ["unchanged", "unchanged", "changed"]
    assert repo.runner.calls.count("sops") == 1  # encrypt of app2 (the cache proves its data changed)


def test_cache_reveals_nothing_without_key(repo: Repo) -> None:
    texts = plaintexts()
    repo.apply(reconcile(repo.ctx(), texts, repo.root))
    cache = (repo.root / ".gitops-render/cache/secrets.json").read_text()
    assert oct((repo.root / ".gitops-render/cache/secrets.json").stat().st_mode & 0o077) == "0o0"
    for rel, plain in texts.items():
        canon = canonical_data(plain, "yaml")
        value = yaml.safe_load(plain)["stringData"]["password"]
        for forbidden in (value, hashlib.sha256(plain).hexdigest(), hashlib.sha256(canon).hexdigest(),
                          hashlib.sha256(value.encode()).hexdigest(), hashlib.md5(plain).hexdigest()):
            assert forbidden not in cache
    entries = json.loads(cache)["entries"]
    assert set(entries) == {p.as_posix() for p in texts}
    assert set(next(iter(entries.values()))) == {"sha256", "rule", "hmac", "raw"}  # raw: keyed HMAC of the bytes


def test_rerun_with_the_same_plaintext_bytes_does_not_parse_them(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm run: the rendered secrets are byte-identical to the last run's, so the keyed fingerprint
    of their bytes proves the data unchanged without parsing them (no YAML 1.2 parser loaded)."""
    texts = plaintexts()
    repo.apply(reconcile(repo.ctx(), texts, repo.root))
    import gitops_render.secrets.policy as policy

    def no_parse(plaintext: bytes, fmt: str) -> bytes:
        raise AssertionError("parsed a plaintext whose bytes are unchanged")

    monkeypatch.setattr(policy, "canonical_data", no_parse)
    repo.runner.calls.clear()
    assert [d.action for d in reconcile(repo.ctx(), texts, repo.root)] == ["unchanged"] * 3
    assert repo.runner.calls == []
    with pytest.raises(AssertionError, match="parsed"):  # other bytes are parsed (formatting may differ)
        reconcile(repo.ctx(), plaintexts(changed={1: "another-value-xyz"}), repo.root)


def test_cache_does_not_trust_a_replaced_file(repo: Repo) -> None:
    repo.apply(reconcile(repo.ctx(), plaintexts(1), repo.root))
    rel = P("kubernetes/apps/app0/secret.sops.yaml")
    # someone re-encrypts other content into the file behind our back
    other = reconcile(repo.ctx(cache=False), {rel: secret("app0", "sneaky-other-value")}, repo.root / "elsewhere")
    (repo.root / rel).write_bytes(other[0].ciphertext)
    repo.runner.calls.clear()
    [d] = reconcile(repo.ctx(), plaintexts(1), repo.root)
    assert d.action == "changed"
    assert repo.runner.calls.count("sops") == 2


# --------------------------------------------------------------------------- without the key


def test_compare_without_key(repo: Repo) -> None:
    repo.apply(reconcile(repo.ctx(), plaintexts(3), repo.root))
    (repo.root / "kubernetes/apps/app0/secret.sops.yaml.j2").write_text("template, not output")
    existing = find_secret_files(repo.root)
    rendered = list(plaintexts(2)) + [P("kubernetes/apps/new/secret.sops.yaml")]
    result = compare_without_key(rendered, existing)
    assert result.added == (P("kubernetes/apps/new/secret.sops.yaml"),)
    assert result.removed == (P("kubernetes/apps/app2/secret.sops.yaml"),)
    assert len(result.present) == 2
    assert "not compared" in result.note


# --------------------------------------------------------------------------- speed (measured, not asserted)


def test_measure_serial_vs_parallel(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    n = 32
    texts = plaintexts(n)
    figures: dict[str, float] = {}
    for label, parallelism in (("serial", 1), ("parallel", default_parallelism())):
        shutil.rmtree(repo.root / "kubernetes", ignore_errors=True)
        start = time.perf_counter()
        added = reconcile(repo.ctx(cache=False), texts, repo.root, parallelism=parallelism)
        figures[f"encrypt {label}"] = time.perf_counter() - start
        repo.apply(added)
        start = time.perf_counter()
        same = reconcile(repo.ctx(cache=False), texts, repo.root, parallelism=parallelism)
        figures[f"decrypt+compare {label}"] = time.perf_counter() - start
        assert {d.action for d in same} == {"unchanged"}
    reconcile(repo.ctx(), texts, repo.root)  # fill the cache
    start = time.perf_counter()
    reconcile(repo.ctx(), texts, repo.root)
    figures["cache hit"] = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[secrets speed] {n} secrets, cpu={os.cpu_count()}, parallel workers={default_parallelism()}")
        for key, seconds in figures.items():
            print(f"  {key:<26} {seconds:6.3f}s")
        print(f"  speedup encrypt  {figures['encrypt serial'] / figures['encrypt parallel']:.2f}x, "
              f"decrypt+compare {figures['decrypt+compare serial'] / figures['decrypt+compare parallel']:.2f}x")


def test_root_rel_mapping_for_output_below_repo(repo: Repo) -> None:
    out = repo.root / "kubernetes"
    rel = P("apps/x/secret.sops.yaml")  # relative to the output root, not the repo root
    [d] = reconcile(repo.ctx(), {rel: secret("x", "value-under-output-root")}, out,
                    root_rel=lambda p: P("kubernetes") / p)
    [d2] = reconcile(repo.ctx(cache=False), {rel: secret("x", "value-under-output-root")}, out)
    assert d.action == d2.action == "added"
    assert file_recipients(d.ciphertext) == file_recipients(d2.ciphertext) == (repo.pub,)
