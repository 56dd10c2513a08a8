"""The sops/age adapter against the real sops 3.11 and age (no fakes, no skips)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import pytest
import yaml

from gitops_render.core.errors import SecretsError
from gitops_render.core.naming import is_secret_path
from gitops_render.core.runner import ToolRunner
from gitops_render.secrets.keys import generate_key_file
from gitops_render.secrets.sops import (
    SopsContext,
    SopsSession,
    file_recipients,
    format_for,
    match_path,
    preflight,
    recipients_for,
)

P = PurePosixPath

SECRET = (
    b"apiVersion: v1\n"
    b"kind: Secret\n"
    b"metadata:\n"
    b"  name: cluster-secrets\n"
    b"  namespace: flux-system\n"
    b"stringData:\n"
    b"  SECRET_DOMAIN: example.com\n"
    b"  CF_TOKEN: Zx81-very-secret-token-QQ\n"
)


@pytest.fixture(scope="module")
def runner() -> ToolRunner:
    r = ToolRunner()
    r.which("sops")  # a missing tool fails the tests
    r.which("age-keygen")
    return r


def new_key(runner: ToolRunner, path: Path) -> str:
    """A fresh classic age key at ``path``; returns its recipient."""
    return generate_key_file(runner=runner, path=path).public_key


def sops_yaml(*rules: tuple[str, str], settings: str = 'encrypted_regex: "^(data|stringData)$"\n    mac_only_encrypted: true') -> str:
    """A .sops.yaml with ``(path_regex, recipient)`` rules."""
    out = ["creation_rules:"]
    for regex, recipient in rules:
        out.append(f"  - path_regex: {regex}\n    {settings}\n    age: {recipient}")
    out.append("stores:\n  yaml:\n    indent: 2")
    return "\n".join(out) + "\n"


def context(root: Path, key: Path, config: str, runner: ToolRunner, **kw: object) -> SopsContext:
    return SopsContext(repo_root=root, age_key_file=key, sops_config_text=config, runner=runner, **kw)  # type: ignore[arg-type]


def test_formats_and_secret_paths() -> None:
    assert format_for(P("a/x.sops.yaml")) == "yaml" and format_for(P("a/x.sops.yml")) == "yaml"
    assert format_for(P("x.sops.json")) == "json" and format_for(P("x.sops.env")) == "dotenv"
    assert format_for(P("x.sops.ini")) == "ini" and format_for(P("talos/x.sops.key")) == "binary"
    assert is_secret_path(P("kubernetes/a/secret.sops.yaml"))
    assert not is_secret_path(P("kubernetes/a/secret.yaml")) and not is_secret_path(P(".sops.yaml"))


def test_round_trip_only_data_encrypted(tmp_path: Path, runner: ToolRunner) -> None:
    pub = new_key(runner, tmp_path / "age.key")
    ctx = context(tmp_path, tmp_path / "age.key", sops_yaml((r"(bootstrap|kubernetes)/.*\.sops\.ya?ml", pub)), runner)
    rel = P("kubernetes/flux/cluster-secrets.sops.yaml")
    with SopsSession(ctx) as sess:
        ciphertext = sess.encrypt(rel, SECRET)
        assert b"Zx81-very-secret-token-QQ" not in ciphertext
        target = tmp_path / rel
        target.parent.mkdir(parents=True)
        target.write_bytes(ciphertext)
        assert sess.decrypt(rel, target) == SECRET  # exactly the rendered plaintext
    doc = yaml.safe_load(ciphertext)
    assert doc["metadata"] == {"name": "cluster-secrets", "namespace": "flux-system"}
    assert doc["kind"] == "Secret" and doc["apiVersion"] == "v1"
    assert all(v.startswith("ENC[AES256_GCM,") for v in doc["stringData"].values())
    assert doc["sops"]["encrypted_regex"] == "^(data|stringData)$" and doc["sops"]["mac_only_encrypted"] is True
    assert file_recipients(ciphertext) == (pub,)
    # and the plain sops CLI, as Flux/an operator would run it, decrypts it too
    (tmp_path / ".sops.yaml").write_text(ctx.sops_config_text or "")
    res = runner.run("sops", ["--decrypt", str(rel)], cwd=tmp_path,
                     env={"SOPS_AGE_KEY_FILE": str(tmp_path / "age.key")}, text=False)
    assert res.stdout == SECRET


def test_other_formats_round_trip(tmp_path: Path, runner: ToolRunner) -> None:
    pub = new_key(runner, tmp_path / "age.key")
    ctx = context(tmp_path, tmp_path / "age.key", f"creation_rules:\n  - age: {pub}\nstores: {{yaml: {{indent: 2}}}}\n", runner)
    samples = {
        P("talos/talsecret.sops.yaml"): b"cluster:\n  secret: abcdefghijklmnop\n",
        P("kubernetes/x/app.sops.json"): b'{"token": "json-secret-value-1"}',
        P("kubernetes/x/app.sops.env"): b"TOKEN=dotenv-secret-value-1\n",
        P("talos/node.sops.key"): bytes(range(256)),
    }
    with SopsSession(ctx) as sess:
        for rel, plain in samples.items():
            ct = sess.encrypt(rel, plain)
            assert file_recipients(ct) == (pub,), rel
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ct)
            out = sess.decrypt(rel, target)
            if rel.suffix == ".json":
                assert json.loads(out) == json.loads(plain)
            else:
                assert out == plain, rel


def test_rules_first_match_unanchored_search(tmp_path: Path, runner: ToolRunner) -> None:
    config = (
        "creation_rules:\n"
        "  - path_regex: kubernetes/apps/identity/keycloak/.*realm-import\\.sops\\.ya?ml\n"
        "    age: age1keycloak\n"
        "  - path_regex: (bootstrap|kubernetes)/.*\\.sops\\.ya?ml\n"
        "    age: age1a, age1b\n"
        "  - path_regex: ^infra/\n"
        "    age: [age1list]\n"
        "  - path_regex: groups/\n"
        "    key_groups:\n"
        "      - age: [age1g1]\n"
        "      - merge: [{age: [age1g2]}]\n"
    )
    ctx = context(tmp_path, tmp_path / "age.key", config, runner)
    assert recipients_for(ctx, P("kubernetes/apps/identity/keycloak/app/realm-import.sops.yaml")) == ("age1keycloak",)
    assert recipients_for(ctx, P("kubernetes/apps/x/secret.sops.yaml")) == ("age1a", "age1b")
    assert recipients_for(ctx, P("deep/bootstrap/x.sops.yml")) == ("age1a", "age1b")  # unanchored search
    assert recipients_for(ctx, P("infra/x.sops.yaml")) == ("age1list",)
    assert recipients_for(ctx, P("groups/x.sops.yaml")) == ("age1g1", "age1g2")
    with pytest.raises(SecretsError, match="no creation rule"):
        recipients_for(ctx, P("other/x.sops.yaml"))


def test_match_path_relative_to_config_dir(tmp_path: Path, runner: ToolRunner) -> None:
    ctx = context(tmp_path, tmp_path / "age.key", "creation_rules: [{age: age1x}]\n", runner,
                  sops_config_path=P("kubernetes/.sops.yaml"))
    assert match_path(ctx, P("kubernetes/apps/a.sops.yaml")) == "apps/a.sops.yaml"
    assert match_path(ctx, P("bootstrap/a.sops.yaml")) == (tmp_path.resolve() / "bootstrap/a.sops.yaml").as_posix()


def test_rule_matching_equals_sops_with_real_config(tmp_path: Path, runner: ToolRunner) -> None:
    """The temp --config + relative --filename-override picks the rule that plain sops picks
    with the real .sops.yaml at the repo root, including anchored regexes."""
    keys = {name: new_key(runner, tmp_path / f"{name}.key") for name in ("anchored", "generic", "fallback")}
    config = (
        "creation_rules:\n"
        f"  - path_regex: ^kubernetes/apps/.*\\.sops\\.yaml$\n    age: {keys['anchored']}\n"
        f"  - path_regex: (bootstrap|kubernetes)/.*\\.sops\\.ya?ml\n    age: {keys['generic']}\n"
        f"  - age: {keys['fallback']}\n"
    )
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".sops.yaml").write_text(config)
    ctx = context(repo, tmp_path / "generic.key", config, runner)
    cases = [P("kubernetes/apps/a/x.sops.yaml"), P("kubernetes/flux/x.sops.yaml"), P("other/bootstrap/x.sops.yml"),
             P("talos/x.sops.yaml")]
    with SopsSession(ctx, repo) as sess:
        for rel in cases:
            ours = file_recipients(sess.encrypt(rel, b"data:\n  k: test-value-123\n"))
            # reference: the operator's command, file on disk (test data), config found at the repo root
            src = repo / rel
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(b"data:\n  k: test-value-123\n")
            ref = runner.run("sops", ["--encrypt", str(rel)], cwd=repo, text=False).stdout
            src.unlink()
            assert ours == file_recipients(ref) == recipients_for(ctx, rel), rel
    assert recipients_for(ctx, cases[0]) == (keys["anchored"],)
    assert recipients_for(ctx, cases[2]) == (keys["generic"],)
    assert recipients_for(ctx, cases[3]) == (keys["fallback"],)


def test_other_key_sources_are_ignored(tmp_path: Path, runner: ToolRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    right = new_key(runner, tmp_path / "right.key")
    new_key(runner, tmp_path / "wrong.key")
    rogue = new_key(runner, tmp_path / "rogue.key")
    rel = P("kubernetes/a.sops.yaml")
    ctx_right = context(tmp_path, tmp_path / "right.key", sops_yaml((r"kubernetes/", right)), runner)
    # env that would silently change keys if it were honoured
    monkeypatch.setenv("SOPS_AGE_RECIPIENTS", rogue)
    monkeypatch.setenv("SOPS_AGE_KEY", (tmp_path / "right.key").read_text())
    xdg = tmp_path / "xdg"
    (xdg / "sops/age").mkdir(parents=True)
    (xdg / "sops/age/keys.txt").write_text((tmp_path / "right.key").read_text())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("HOME", str(xdg))
    monkeypatch.setenv("SOPS_AGE_KEY_CMD", f"cat {tmp_path / 'right.key'}")
    monkeypatch.setenv("SOPS_AGE_SSH_PRIVATE_KEY_FILE", str(tmp_path / "right.key"))
    with SopsSession(ctx_right) as sess:
        ct = sess.encrypt(rel, SECRET)
    assert file_recipients(ct) == (right,)  # SOPS_AGE_RECIPIENTS did not win over the rule
    target = tmp_path / rel
    target.parent.mkdir(parents=True)
    target.write_bytes(ct)
    ctx_wrong = context(tmp_path, tmp_path / "wrong.key", ctx_right.sops_config_text, runner)  # type: ignore[arg-type]
    with SopsSession(ctx_wrong) as sess, pytest.raises(SecretsError, match="could not decrypt"):
        sess.decrypt(rel, target)  # SOPS_AGE_KEY and keys.txt hold the right key but must not be used
    with SopsSession(ctx_right) as sess:
        assert sess.decrypt(rel, target) == SECRET


def test_sops_errors_are_masked(tmp_path: Path, runner: ToolRunner) -> None:
    pub = new_key(runner, tmp_path / "age.key")
    ctx = context(tmp_path, tmp_path / "age.key", f"creation_rules:\n  - age: {pub}\n", runner)
    bad = {
        P("k/a.sops.env"): (b"A=1\nsupersecretline-without-equals\n", "supersecretline-without-equals"),
        P("k/a.sops.yaml"): (b"a: !!int supersecretyamlvalue\n", "supersecretyamlvalue"),
    }
    with SopsSession(ctx) as sess:
        for rel, (plain, secret) in bad.items():
            with pytest.raises(SecretsError) as err:
                sess.encrypt(rel, plain)
            assert secret not in str(err.value), rel
            assert "could not encrypt" in str(err.value)


def test_session_temp_dir_is_private_and_removed(tmp_path: Path, runner: ToolRunner) -> None:
    pub = new_key(runner, tmp_path / "age.key")
    ctx = context(tmp_path, tmp_path / "age.key", f"creation_rules:\n  - age: {pub}\n", runner, temp_root=tmp_path / "t")
    (tmp_path / "t").mkdir()
    with SopsSession(ctx) as sess:
        d = sess.temp_dir
        assert oct(d.stat().st_mode & 0o777) == "0o700"
        names = sorted(p.name for p in d.rglob("*"))
        assert names == [".sops.yaml", "home"]
    assert not d.exists()


def test_preflight_errors(tmp_path: Path, runner: ToolRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = "creation_rules:\n  - age: age1x\n"
    with pytest.raises(SecretsError) as err:
        preflight(context(tmp_path, tmp_path / "age.key", cfg, runner))
    assert str(err.value).startswith("age key file age.key not found: run `gitops-render init` or set SOPS_AGE_KEY_FILE")
    new_key(runner, tmp_path / "age.key")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("GITOPS_RENDER_SOPS", raising=False)
    no_sops = ToolRunner(search_path=())
    with pytest.raises(SecretsError) as err:
        preflight(context(tmp_path, tmp_path / "age.key", cfg, no_sops))
    assert str(err.value).startswith("sops not installed: install sops >= 3.9.0: https://github.com/getsops/sops/releases")
    with pytest.raises(SecretsError, match="no creation_rules"):
        preflight(context(tmp_path, tmp_path / "age.key", "stores: {}\n", runner))
    assert os.environ["PATH"] == str(empty)


def test_decrypt_file_without_rendered_config(tmp_path: Path, runner: ToolRunner) -> None:
    pub = new_key(runner, tmp_path / "age.key")
    cfg = sops_yaml((r"kubernetes/", pub))
    rel = P("kubernetes/a.sops.yaml")
    with SopsSession(context(tmp_path, tmp_path / "age.key", cfg, runner)) as sess:
        ct = sess.encrypt(rel, SECRET)
    (tmp_path / "kubernetes").mkdir()
    (tmp_path / rel).write_bytes(ct)
    from gitops_render.secrets.sops import decrypt_file
    ctx = context(tmp_path, tmp_path / "age.key", None, runner)  # type: ignore[arg-type]
    assert yaml.safe_load(decrypt_file(ctx, tmp_path / rel)) == yaml.safe_load(SECRET)
