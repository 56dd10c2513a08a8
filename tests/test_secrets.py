"""Secret reconciliation with the real sops 3.11 and age (no fakes, no skips).

Subprocess calls are counted by wrapping ``ToolRunner.run`` -- the calls still
go to the real tools.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gitops_render.core.errors import SecretsError
from gitops_render.core.runner import ToolResult, ToolRunner
from gitops_render.secrets.keys import generate_key_file
from gitops_render.secrets.policy import (
    SecretDecision,
    canonical_data,
    compare_without_key,
    find_secret_files,
    reconcile,
)
from gitops_render.secrets.sops import SopsContext, file_recipients

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
class SopsRepo:
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
def sops_repo(tmp_path: Path) -> SopsRepo:
    """A bare repo with an age key and a call-counting runner (not the configured ``repo`` of conftest)."""
    runner = CountingRunner()
    runner.which("sops")  # missing tools fail the tests
    root, tmp = tmp_path / "repo", tmp_path / "tmp"
    root.mkdir()
    tmp.mkdir()
    info = generate_key_file(runner=runner, path=root / "age.key")
    runner.calls.clear()
    return SopsRepo(root, tmp, runner, info.path, info.public_key)


def plaintexts(n: int = 3, changed: Mapping[int, str] | None = None) -> dict[PurePosixPath, bytes]:
    changed = changed or {}
    return {P(f"kubernetes/apps/app{i}/secret.sops.yaml"): secret(f"app{i}", changed.get(i, f"pw-{i}-0123456789"))
            for i in range(n)}


def on_disk(sops_repo: SopsRepo) -> dict[PurePosixPath, bytes]:
    return {P(p.relative_to(sops_repo.root).as_posix()): p.read_bytes()
            for p in (sops_repo.root / "kubernetes").rglob("*.sops.yaml")}


# --------------------------------------------------------------------------- no churn


def test_reconcile_twice_is_byte_identical(sops_repo: SopsRepo) -> None:
    first = reconcile(sops_repo.ctx(cache=False), plaintexts(), sops_repo.root)
    assert [d.action for d in first] == ["added"] * 3
    sops_repo.apply(first)
    before = on_disk(sops_repo)
    second = reconcile(sops_repo.ctx(cache=False), plaintexts(), sops_repo.root)
    assert [d.action for d in second] == ["unchanged"] * 3
    assert {d.path: d.ciphertext for d in second} == before
    for d in first:
        assert sops_repo.decrypt_with(sops_repo.key, d.path) == plaintexts()[d.path]


@pytest.mark.parametrize("cache", [False, True])
def test_one_value_changed_only_that_secret_reencrypted(sops_repo: SopsRepo, cache: bool) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(cache=cache), plaintexts(), sops_repo.root))
    before = on_disk(sops_repo)
    new = plaintexts(changed={1: "a-new-password-value"})
    sops_repo.runner.calls.clear()
    decisions = {d.path: d for d in reconcile(sops_repo.ctx(cache=cache), new, sops_repo.root)}
    actions = {p.parent.name: d.action for p, d in decisions.items()}
    assert actions == {"app0": "unchanged", "app1": "changed", "app2": "unchanged"}
    for p, d in decisions.items():
        if d.action == "unchanged":
            assert d.ciphertext == before[p]
    sops_repo.apply(list(decisions.values()))
    changed = P("kubernetes/apps/app1/secret.sops.yaml")
    assert sops_repo.decrypt_with(sops_repo.key, changed) == new[changed]
    if cache:  # the cache knows the file and proves the data changed: encrypt only, no decrypt
        assert sops_repo.runner.calls.count("sops") == 1
        assert decisions[changed].previous_plaintext is None
    else:  # unchanged ones decrypted and compared, the changed one decrypted + encrypted
        assert sops_repo.runner.calls.count("sops") == 4
        assert decisions[changed].previous_plaintext == plaintexts()[changed]


@pytest.mark.parametrize("cache", [False, True])
def test_formatting_only_difference_is_unchanged(sops_repo: SopsRepo, cache: bool) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(cache=cache), plaintexts(1), sops_repo.root))
    rel = P("kubernetes/apps/app0/secret.sops.yaml")
    reformatted = (b"# rendered differently\napiVersion: 'v1'\nkind:   Secret\nstringData: {password: \"pw-0-0123456789\"}\n"
                   b"metadata:\n    namespace: default\n    name: app0\n")
    assert canonical_data(reformatted, "yaml") == canonical_data(plaintexts(1)[rel], "yaml")
    sops_repo.runner.calls.clear()
    [decision] = reconcile(sops_repo.ctx(cache=cache), {rel: reformatted}, sops_repo.root)
    assert decision.action == "unchanged"
    assert decision.ciphertext == (sops_repo.root / rel).read_bytes()
    assert sops_repo.runner.calls.count("sops") == (0 if cache else 1)  # with the cache: keyed on the data, not bytes


# --------------------------------------------------------------------------- keys


def test_key_rotation_rekeys_everything(sops_repo: SopsRepo) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(), plaintexts(), sops_repo.root))
    old_key = sops_repo.tmp / "old.key"
    old_key.write_bytes(sops_repo.key.read_bytes())
    sops_repo.key.unlink()
    new_pub = generate_key_file(runner=sops_repo.runner, path=sops_repo.key).public_key  # operator replaced age.key
    decisions = reconcile(sops_repo.ctx(config(new_pub)), plaintexts(), sops_repo.root)
    assert [d.action for d in decisions] == ["rekeyed"] * 3
    assert all("not compared" in d.reason and "recipients changed" in d.reason for d in decisions)
    sops_repo.apply(decisions)
    for d in decisions:
        assert file_recipients(d.ciphertext) == (new_pub,)
        assert sops_repo.decrypt_with(sops_repo.key, d.path) == plaintexts()[d.path]
        with pytest.raises(Exception):
            sops_repo.decrypt_with(old_key, d.path)
    # and the next run is quiet again
    assert [d.action for d in reconcile(sops_repo.ctx(config(new_pub)), plaintexts(), sops_repo.root)] == ["unchanged"] * 3


def test_rotation_with_old_identity_kept_compares_contents(sops_repo: SopsRepo) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(), plaintexts(2), sops_repo.root))
    new_key = sops_repo.tmp / "new.key"
    new_pub = generate_key_file(runner=sops_repo.runner, path=new_key).public_key
    both = sops_repo.tmp / "both.key"
    both.write_text(new_key.read_text() + sops_repo.key.read_text())
    decisions = reconcile(sops_repo.ctx(config(new_pub), key=both), plaintexts(2, changed={1: "changed-during-rotation"}),
                          sops_repo.root)
    assert [d.action for d in decisions] == ["rekeyed", "changed"]
    assert "not compared" not in decisions[0].reason and "recipients changed" in decisions[0].reason


def test_added_recipient_rekeys(sops_repo: SopsRepo) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(), plaintexts(2), sops_repo.root))
    extra_key = sops_repo.tmp / "ops.key"
    extra = generate_key_file(runner=sops_repo.runner, path=extra_key).public_key
    decisions = reconcile(sops_repo.ctx(config(sops_repo.pub, extra)), plaintexts(2), sops_repo.root)
    assert [d.action for d in decisions] == ["rekeyed", "rekeyed"]
    assert all(extra in d.reason for d in decisions)
    sops_repo.apply(decisions)
    for d in decisions:
        assert file_recipients(d.ciphertext) == tuple(sorted((sops_repo.pub, extra)))
        assert sops_repo.decrypt_with(extra_key, d.path) == sops_repo.decrypt_with(sops_repo.key, d.path) == plaintexts(2)[d.path]


def test_existing_plaintext_file_is_encrypted(sops_repo: SopsRepo) -> None:
    rel = P("kubernetes/apps/app0/secret.sops.yaml")
    (sops_repo.root / rel).parent.mkdir(parents=True)
    (sops_repo.root / rel).write_bytes(plaintexts(1)[rel])  # e.g. a half-finished old encrypt loop
    [d] = reconcile(sops_repo.ctx(), plaintexts(1), sops_repo.root)
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


def test_sops_failure_halfway_leaves_no_plaintext(sops_repo: SopsRepo) -> None:
    bad_recipient = "age1" + "q" * 58  # well-formed text, invalid checksum: sops rejects it
    texts = plaintexts(10)
    bad = P("kubernetes/bad/secret.sops.yaml")
    texts[bad] = secret("bad", "the-bad-secret-value")
    needles = [b"pw-%d-0123456789" % i for i in range(10)] + [b"the-bad-secret-value"]
    seen_during: list[str] = []
    sops_repo.runner.probe = lambda tool, args: seen_during.extend(_scan([sops_repo.root, sops_repo.tmp], needles))
    with pytest.raises(SecretsError) as err:
        reconcile(sops_repo.ctx(config(sops_repo.pub, bad_rule=bad_recipient)), texts, sops_repo.root)
    assert "kubernetes/bad/secret.sops.yaml" in str(err.value)
    assert "the-bad-secret-value" not in str(err.value)
    assert sops_repo.runner.calls.count("sops") >= 2  # others were encrypted before the bad one failed
    assert seen_during == []
    assert _scan([sops_repo.root, sops_repo.tmp], needles) == []
    assert list(sops_repo.tmp.iterdir()) == []  # private temp dir removed
    assert not (sops_repo.root / ".gitops-render").exists()  # cache untouched
    assert not (sops_repo.root / "kubernetes").exists()  # nothing written


def test_missing_key_stops_before_anything(sops_repo: SopsRepo) -> None:
    sops_repo.key.unlink()
    with pytest.raises(SecretsError) as err:
        reconcile(sops_repo.ctx(), plaintexts(), sops_repo.root)
    assert "age key file age.key not found: run `gitops-render init` or set SOPS_AGE_KEY_FILE" in str(err.value)
    assert sops_repo.runner.calls == []
    assert sorted(p.name for p in sops_repo.root.iterdir()) == []


def test_invalid_rendered_secret_is_reported_without_content(sops_repo: SopsRepo) -> None:
    rel = P("kubernetes/apps/x/secret.sops.yaml")
    with pytest.raises(SecretsError) as err:
        reconcile(sops_repo.ctx(), {rel: b"stringData:\n  pw: [unclosed-secret-value\n"}, sops_repo.root)
    assert "not valid yaml" in str(err.value) and "unclosed-secret-value" not in str(err.value)
    assert sops_repo.runner.calls == []


# --------------------------------------------------------------------------- cache


def test_cache_hit_runs_no_sops(sops_repo: SopsRepo) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(), plaintexts(), sops_repo.root))
    sops_repo.runner.calls.clear()
    decisions = reconcile(sops_repo.ctx(), plaintexts(), sops_repo.root)
    assert [d.action for d in decisions] == ["unchanged"] * 3
    assert "cache" in decisions[0].reason
    assert sops_repo.runner.calls == []
    # a changed plaintext misses the cache for that secret only
    decisions = reconcile(sops_repo.ctx(), plaintexts(changed={2: "another-value-xyz"}), sops_repo.root)
    assert [d.action for d in decisions] == ["unchanged", "unchanged", "changed"]
    assert sops_repo.runner.calls.count("sops") == 1  # encrypt of app2 (the cache proves its data changed)


def test_cache_reveals_nothing_without_key(sops_repo: SopsRepo) -> None:
    texts = plaintexts()
    sops_repo.apply(reconcile(sops_repo.ctx(), texts, sops_repo.root))
    cache = (sops_repo.root / ".gitops-render/cache/secrets.json").read_text()
    assert oct((sops_repo.root / ".gitops-render/cache/secrets.json").stat().st_mode & 0o077) == "0o0"
    for rel, plain in texts.items():
        canon = canonical_data(plain, "yaml")
        value = yaml.safe_load(plain)["stringData"]["password"]
        for forbidden in (value, hashlib.sha256(plain).hexdigest(), hashlib.sha256(canon).hexdigest(),
                          hashlib.sha256(value.encode()).hexdigest(), hashlib.md5(plain).hexdigest()):
            assert forbidden not in cache
    entries = json.loads(cache)["entries"]
    assert set(entries) == {p.as_posix() for p in texts}
    assert set(next(iter(entries.values()))) == {"sha256", "rule", "hmac", "raw"}  # raw: keyed HMAC of the bytes


def test_rerun_with_the_same_plaintext_bytes_does_not_parse_them(sops_repo: SopsRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm run: the rendered secrets are byte-identical to the last run's, so the keyed fingerprint
    of their bytes proves the data unchanged without parsing them (no YAML 1.2 parser loaded)."""
    texts = plaintexts()
    sops_repo.apply(reconcile(sops_repo.ctx(), texts, sops_repo.root))
    import gitops_render.secrets.policy as policy

    def no_parse(plaintext: bytes, fmt: str) -> bytes:
        raise AssertionError("parsed a plaintext whose bytes are unchanged")

    monkeypatch.setattr(policy, "canonical_data", no_parse)
    sops_repo.runner.calls.clear()
    assert [d.action for d in reconcile(sops_repo.ctx(), texts, sops_repo.root)] == ["unchanged"] * 3
    assert sops_repo.runner.calls == []
    with pytest.raises(AssertionError, match="parsed"):  # other bytes are parsed (formatting may differ)
        reconcile(sops_repo.ctx(), plaintexts(changed={1: "another-value-xyz"}), sops_repo.root)


def test_cache_does_not_trust_a_replaced_file(sops_repo: SopsRepo) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(), plaintexts(1), sops_repo.root))
    rel = P("kubernetes/apps/app0/secret.sops.yaml")
    # someone re-encrypts other content into the file behind our back
    other = reconcile(sops_repo.ctx(cache=False), {rel: secret("app0", "sneaky-other-value")}, sops_repo.root / "elsewhere")
    (sops_repo.root / rel).write_bytes(other[0].ciphertext)
    sops_repo.runner.calls.clear()
    [d] = reconcile(sops_repo.ctx(), plaintexts(1), sops_repo.root)
    assert d.action == "changed"
    assert sops_repo.runner.calls.count("sops") == 2


# --------------------------------------------------------------------------- without the key


def test_compare_without_key(sops_repo: SopsRepo) -> None:
    sops_repo.apply(reconcile(sops_repo.ctx(), plaintexts(3), sops_repo.root))
    (sops_repo.root / "kubernetes/apps/app0/secret.sops.yaml.j2").write_text("template, not output")
    existing = find_secret_files(sops_repo.root)
    rendered = list(plaintexts(2)) + [P("kubernetes/apps/new/secret.sops.yaml")]
    result = compare_without_key(rendered, existing)
    assert result.added == (P("kubernetes/apps/new/secret.sops.yaml"),)
    assert result.removed == (P("kubernetes/apps/app2/secret.sops.yaml"),)
    assert len(result.present) == 2
    assert "not compared" in result.note


def test_root_rel_mapping_for_output_below_repo(sops_repo: SopsRepo) -> None:
    out = sops_repo.root / "kubernetes"
    rel = P("apps/x/secret.sops.yaml")  # relative to the output root, not the sops_repo root
    [d] = reconcile(sops_repo.ctx(), {rel: secret("x", "value-under-output-root")}, out,
                    root_rel=lambda p: P("kubernetes") / p)
    [d2] = reconcile(sops_repo.ctx(cache=False), {rel: secret("x", "value-under-output-root")}, out)
    assert d.action == d2.action == "added"
    assert file_recipients(d.ciphertext) == file_recipients(d2.ciphertext) == (sops_repo.pub,)
