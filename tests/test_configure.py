"""The operator's stories, told through the real ``gitops-render`` command.

Given a cluster repo made of this project's templates, schema, sample and settings,
``init`` then ``configure`` (run as ``gitops-render ...`` from the repo root, like
``task configure``) produce a validated, SOPS-encrypted Flux tree; re-running changes
nothing; a changed value re-encrypts only its secret; a new age key re-keys; a disabled
stack disappears and comes back; every input error stops with one readable message and
leaves the tree byte-identical. Real sops, age, kubeconform and kustomize; nothing is skipped.

``check`` and ``diff`` (the CI job and the review view) are in ``test_check_diff.py``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from combos import COMBOS, OIDC, Combo
from conftest import PROJECT, make_age_key
from operator_repo import (
    ACL_DIR,
    AI,
    APP,
    GITIGNORE,
    KEYCLOAK_DIR,
    LITELLM_SECRET,
    ROUTES,
    STATE,
    changed_paths,
    cli_env,
    clone,
    cluster,
    configured_repo,
    copy_project_repo,
    decrypted_docs,
    docs,
    fail_unless,
    files_holding,
    generated,
    gr,
    line_of,
    manifest,
    new_repo,
    ok,
    public_key,
    recipients,
    rendered_secrets,
    replace_line,
    secret_files,
    set_values,
    snapshot,
    sops_decrypt,
)

SCHEMA = json.loads((PROJECT / "schemas" / "cluster.schema.json").read_text())
GENERATED_FIELDS = {k: v["x-generate"] for k, v in SCHEMA["properties"].items() if "x-generate" in v}
ALPHABETS = {"hex": "0-9a-f", "alnum": "A-Za-z0-9", "base64url": "A-Za-z0-9_-"}






# =========================================================================== 1. init


def test_init_keeps_plaintext_data_and_the_key_out_of_git(tmp_path: Path) -> None:
    """init adds the ignore lines an operator needs, once, and keeps the repo's own lines."""
    root = copy_project_repo(tmp_path / "repo")
    (root / ".gitignore").write_text("node_modules/\n/cluster.yaml\n")
    res = ok(gr(root, "init"))
    assert "added to .gitignore: age.key, .gitops-render/cache/" in res.stdout, res.stdout
    lines = (root / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules/", "/cluster.yaml"]
    for wanted in ("age.key", ".gitops-render/cache/", ".gitops-render/lock", ".gitops-render/journal.json"):
        assert lines.count(wanted) == 1, (wanted, lines)
    assert "cluster.yaml" not in lines  # already ignored as /cluster.yaml
    before = (root / ".gitignore").read_bytes()
    assert "added to .gitignore" not in ok(gr(root, "init")).stdout
    assert (root / ".gitignore").read_bytes() == before


def test_init_never_freezes_a_schema_default_into_cluster_yaml(tmp_path: Path) -> None:
    """Given a sample that restates defaults (an older pack's), init writes them as comments:
    a later change of the default (an image tag) still reaches the repository."""
    root = copy_project_repo(tmp_path / "repo")
    sample = (root / "cluster.sample.yaml").read_text()
    (root / "cluster.sample.yaml").write_text(
        sample + 'litellm_image_tag: "main-v1.80.8-stable.1"  # pinned\nlitellm_replicas: 1\n'
        'litellm_db_instances: 3\nlitellm_self_hosted_models: []\n')
    ok(gr(root, "init"))
    text = (root / "cluster.yaml").read_text()
    data = cluster(root)
    assert 'litellm_image_tag' not in data and "litellm_replicas" not in data and "litellm_self_hosted_models" not in data
    assert '# litellm_image_tag: "main-v1.80.8-stable.1"  # pinned\n# litellm_replicas: 1\n' in text
    assert data["litellm_db_instances"] == 3  # not a default: the operator's value stays
    assert data["litellm_master_key"].startswith("sk-")  # generated secrets are filled, never commented out
    assert "# litellm_master_key" not in text


def test_init_creates_cluster_yaml_with_strong_generated_secrets_and_an_age_key(tmp_path: Path) -> None:
    root = copy_project_repo(tmp_path / "repo")
    res = ok(gr(root, "init"))
    assert "created cluster.yaml" in res.stdout and "created age key age.key" in res.stdout, res.stdout

    data = cluster(root)
    sample = yaml.safe_load((root / "cluster.sample.yaml").read_text())
    assert GENERATED_FIELDS, "the schema marks no generatable field"
    values = []
    for name, spec in GENERATED_FIELDS.items():
        pattern = re.escape(spec.get("prefix", "")) + f"[{ALPHABETS[spec.get('alphabet', 'alnum')]}]{{{spec['length']}}}"
        fail_unless(isinstance(data[name], str) and re.fullmatch(pattern, data[name]) is not None,
                    f"{name}: the generated value does not match {spec}")
        values.append(data[name])
    fail_unless(re.fullmatch(r"sk-[0-9a-f]{48}", data["litellm_master_key"]) is not None,
                "litellm_master_key is not sk- + 48 hex")
    fail_unless(len(set(values)) == len(values), "two generated secrets are equal")
    # everything else is the sample, comments included (only the empty secrets were filled in)
    assert {k: v for k, v in data.items() if k not in GENERATED_FIELDS or sample[k]} == \
           {k: v for k, v in sample.items() if k not in GENERATED_FIELDS or sample[k]}
    assert (root / "cluster.yaml").read_text().startswith((root / "cluster.sample.yaml").read_text()[:200])
    assert stat.S_IMODE((root / "cluster.yaml").stat().st_mode) == 0o600
    key = (root / "age.key").read_text()
    assert re.search(r"^# public key: age1[0-9a-z]{58}$", key, re.MULTILINE)
    assert re.search(r"^AGE-SECRET-KEY-1[0-9A-Z]{58}$", key, re.MULTILINE)
    assert stat.S_IMODE((root / "age.key").stat().st_mode) & 0o077 == 0, "age.key is readable by others"

    # a second repo gets different secrets and a different key: they are random, not derived
    other = new_repo(tmp_path / "other")
    fail_unless(all(cluster(other)[n] != data[n] for n in GENERATED_FIELDS), "init generated the same secret twice")
    assert public_key(other / "age.key") != public_key(root / "age.key")


def test_a_second_init_overwrites_nothing(tmp_path: Path) -> None:
    root = new_repo(tmp_path / "repo")
    set_values(root, litellm_replicas=3)  # the operator's edit must survive
    before = snapshot(root, mtimes=True)
    res = ok(gr(root, "init"))
    assert "kept cluster.yaml" in res.stdout and "kept age.key" in res.stdout, res.stdout
    assert changed_paths(before, snapshot(root, mtimes=True)) == []


# =========================================================================== 2. configure on the sample


def test_configure_on_the_sample_writes_the_expected_tree_and_validates(tmp_path: Path) -> None:
    root = new_repo(tmp_path / "repo")
    set_values(root, **OIDC)  # the Keycloak client integration is rendered only with OIDC on
    res = ok(gr(root, "configure"))
    assert res.stdout.rstrip().endswith("validation: ok"), res.stdout
    assert "secrets: 2 added" in res.stdout, res.stdout

    files = generated(root)
    expected = {
        ".sops.yaml",
        "kubernetes/flux/cluster/ks.yaml",
        "kubernetes/apps/kustomization.yaml",
        f"{AI}/namespace.yaml", f"{AI}/kustomization.yaml", f"{AI}/litellm/ks.yaml",
        f"{APP}/kustomization.yaml", f"{APP}/helmrelease.yaml", f"{APP}/ocirepository.yaml",
        f"{APP}/configmap.yaml", f"{APP}/postgresql.yaml", f"{APP}/secret.sops.yaml",
        f"{APP}/networkpolicy.yaml", f"{APP}/referencegrant.yaml",
        f"{APP}/servicemonitor.yaml", f"{APP}/grafana-dashboard.yaml",
        ROUTES,
        f"{KEYCLOAK_DIR}/ks.yaml", f"{KEYCLOAK_DIR}/app/kustomization.yaml",
        f"{KEYCLOAK_DIR}/app/secret.sops.yaml",
    }
    assert expected <= files, sorted(expected - files)
    # every file in the app folder is listed by its kustomization (nothing orphaned)
    listed = {r.removeprefix("./") for r in yaml.safe_load((root / APP / "kustomization.yaml").read_text())["resources"]}
    assert listed == {p.rsplit("/", 1)[1] for p in files if p.startswith(APP + "/") and not p.endswith("kustomization.yaml")}
    # the HTTPRoute really routes to LiteLLM
    routes = docs((root / ROUTES).read_text())
    assert routes and all(r["kind"] == "HTTPRoute" for r in routes)
    assert any("litellm" in json.dumps(r["spec"]["rules"]) for r in routes)

    # .sops.yaml is rendered with this repo's age public key
    sops_config = yaml.safe_load((root / ".sops.yaml").read_text())
    pub = public_key(root / "age.key")
    assert {rule["age"] for rule in sops_config["creation_rules"]} == {pub}

    # the manifest lists exactly the generated files, with their sha256
    assert set(manifest(root)) == files

    # every *.sops.* file: encrypted for this key, only data/stringData encrypted, metadata readable,
    # and it decrypts to exactly what was rendered
    plain = rendered_secrets(root)
    assert set(secret_files(root)) == set(plain) == {LITELLM_SECRET, f"{KEYCLOAK_DIR}/app/secret.sops.yaml"}
    for rel in secret_files(root):
        encrypted = docs((root / rel).read_text())
        assert encrypted and all(d["sops"]["age"] and d["sops"]["mac"] for d in encrypted), rel
        assert recipients(root, rel) == [pub]
        for doc, want in zip(encrypted, plain[rel], strict=True):
            assert doc["kind"] == "Secret" and doc["metadata"] == want["metadata"], rel  # readable
            assert doc.get("type") == want.get("type")
            for field in ("data", "stringData"):
                for value in (doc.get(field) or {}).values():
                    fail_unless(isinstance(value, str) and value.startswith("ENC[AES256_GCM,"),
                                f"{rel}: a {field} value is not encrypted")
        fail_unless(decrypted_docs(root, rel) == plain[rel], f"{rel}: sops --decrypt differs from the render")
        for doc in plain[rel]:
            for value in [*(doc.get("stringData") or {}).values(), *(doc.get("data") or {}).values()]:
                if len(value) >= 8:
                    fail_unless(value.encode() not in (root / rel).read_bytes(), f"{rel}: holds a plaintext value")


def test_configure_from_another_directory_with_root_uses_the_repos_own_key(sample_repo: Path, tmp_path: Path) -> None:
    """``--root DIR`` from elsewhere: the secrets stay encrypted to the repo's key, not to a key in the CWD."""
    root = clone(sample_repo, tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_age_key(elsewhere / "age.key")  # an unrelated key where the operator happens to stand
    before = snapshot(root)
    res = ok(gr(elsewhere, "configure", "--root", str(root)))
    assert "0 added, 0 changed, 0 removed" in res.stdout, res.stdout
    assert changed_paths(before, snapshot(root)) == []
    assert recipients(root, LITELLM_SECRET) == [public_key(root / "age.key")]
    # and with no key at all in the CWD it works the same
    shutil.rmtree(elsewhere)
    elsewhere.mkdir()
    ok(gr(elsewhere, "configure", "--root", str(root)))
    assert changed_paths(before, snapshot(root)) == []


# =========================================================================== 3. no churn


def test_configure_twice_changes_no_byte_and_no_mtime(repo: Path) -> None:
    before = snapshot(repo, mtimes=True)
    res = ok(gr(repo, "configure"))
    assert re.search(r"^0 added, 0 changed, 0 removed, \d+ unchanged$", res.stdout, re.MULTILINE), res.stdout
    assert "secrets: 1 unchanged" in res.stdout, res.stdout
    assert changed_paths(before, snapshot(repo, mtimes=True)) == []


def test_in_a_git_repo_a_rerun_leaves_git_status_clean(repo: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=op", "-c", "user.email=op@example.com",
                               "-c", "commit.gpgsign=false", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout

    (repo / ".gitignore").write_text(GITIGNORE)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "configured")
    assert git("status", "--porcelain") == ""
    ok(gr(repo, "configure"))
    assert git("status", "--porcelain") == ""
    # cluster.yaml and age.key are ignored, the manifest and the tree are committed
    tracked = set(git("ls-files").split())
    assert {f"{STATE}/manifest.json", ".sops.yaml", LITELLM_SECRET} <= tracked
    assert not {"cluster.yaml", "age.key"} & tracked


def test_changing_one_value_reencrypts_only_the_secret_that_holds_it(repo: Path) -> None:
    before = snapshot(repo)
    new_salt = "changed-salt-" + "q" * 40  # litellm_salt_key lives in the LiteLLM secret only
    set_values(repo, litellm_salt_key=new_salt)
    res = ok(gr(repo, "configure", "-v"))
    # the HelmRelease changes too: its checksum/secret annotation rolls the pods onto the new value
    assert "0 added, 2 changed, 0 removed" in res.stdout, res.stdout
    assert f"  ~ {LITELLM_SECRET}" in res.stdout and "secrets: 1 changed" in res.stdout, res.stdout
    assert changed_paths(before, snapshot(repo)) == sorted([LITELLM_SECRET, f"{APP}/helmrelease.yaml",
                                                            f"{STATE}/manifest.json", "cluster.yaml"])
    salt = {d["metadata"]["name"]: d for d in decrypted_docs(repo, LITELLM_SECRET)}["litellm-secret"]
    fail_unless(salt["stringData"]["LITELLM_SALT_KEY"] == new_salt, "the new salt key is not in the secret")
    fail_unless(files_holding(repo, new_salt) == [], "the new value is in plaintext on disk")


# =========================================================================== 4. key rotation


def test_a_new_age_key_rekeys_every_secret_only_when_confirmed_and_the_old_key_no_longer_decrypts(
        repo: Path, tmp_path: Path) -> None:
    old_key = tmp_path / "old-age.key"
    shutil.move(repo / "age.key", old_key)
    new_pub = make_age_key(repo / "age.key")
    old_plain = {rel: decrypted_docs(repo, rel, old_key) for rel in secret_files(repo)}

    # the new key cannot open the committed secrets: configure stops until the operator confirms the rotation
    before = snapshot(repo)
    refused = gr(repo, "configure", "--yes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "nothing written: 1 committed secret file(s)" in refused.stderr, refused.stderr
    assert "Flux would stop decrypting" in refused.stderr and "--rotate-age-key" in refused.stderr, refused.stderr
    assert changed_paths(before, snapshot(repo)) == []
    res = ok(gr(repo, "configure", "-v", "--rotate-age-key"))
    assert "secrets: 1 rekeyed" in res.stdout, res.stdout
    assert "  ~ .sops.yaml" in res.stdout and res.stdout.rstrip().endswith("validation: ok"), res.stdout
    assert {r["age"] for r in yaml.safe_load((repo / ".sops.yaml").read_text())["creation_rules"]} == {new_pub}
    for rel in secret_files(repo):
        assert recipients(repo, rel) == [new_pub], rel
        assert sops_decrypt(repo, rel, old_key).returncode != 0, f"the old key still decrypts {rel}"
        fail_unless(decrypted_docs(repo, rel) == old_plain[rel], f"{rel}: content changed by re-keying")
    # and it is stable under the new key
    before = snapshot(repo)
    ok(gr(repo, "configure"))
    assert changed_paths(before, snapshot(repo)) == []


# =========================================================================== 5. pruning


def test_disabling_litellm_removes_the_whole_stack_and_enabling_it_brings_it_back(tmp_path: Path) -> None:
    root = configured_repo(tmp_path / "repo", **OIDC)
    stack = {p for p in generated(root) if p.startswith(("kubernetes/apps/ai-system/", "kubernetes/apps/cache/",
                                                         "kubernetes/apps/identity/", "kubernetes/apps/network/"))}
    hand = root / AI / "NOTES.md"
    hand.write_text("# hand-written: who owns ai-system\n")
    hand_bytes = hand.read_bytes()
    first = snapshot(root)
    first_plain = {rel: decrypted_docs(root, rel) for rel in secret_files(root)}

    set_values(root, litellm_enabled=False)
    # most of the tree would go: the mass-deletion guard stops the run until the operator confirms it
    before = snapshot(root)
    refused = gr(root, "configure")
    assert refused.returncode == 2, refused.stderr
    assert f"would prune {len(stack)} of the {len(stack) + 3} files" in refused.stderr, refused.stderr
    assert "--allow-mass-prune" in refused.stderr and changed_paths(before, snapshot(root)) == []
    res = ok(gr(root, "configure", "--allow-mass-prune"))
    assert "0 added, " in res.stdout and f"{len(stack)} removed" in res.stdout, res.stdout
    assert generated(root) == {".sops.yaml", "kubernetes/flux/cluster/ks.yaml", "kubernetes/apps/kustomization.yaml",
                               f"{AI}/NOTES.md"}
    apps = yaml.safe_load((root / "kubernetes/apps/kustomization.yaml").read_text())
    assert not {"./ai-system", "./cache", "./identity", "./network"} & set(apps.get("resources") or []), apps
    for gone in (APP, ROUTES, KEYCLOAK_DIR, ACL_DIR, "kubernetes/apps/cache", "kubernetes/apps/identity",
                 "kubernetes/apps/network"):
        assert not (root / gone).exists(), gone
    assert [d for d in (root / "kubernetes").rglob("*") if d.is_dir() and not any(d.iterdir())] == []
    assert hand.read_bytes() == hand_bytes, "the hand-written file was touched"
    assert set(manifest(root)) == generated(root) - {f"{AI}/NOTES.md"}
    assert res.stdout.rstrip().endswith("validation: ok"), res.stdout

    set_values(root, litellm_enabled=True)
    res = ok(gr(root, "configure"))
    assert f"{len(stack)} added" in res.stdout, res.stdout
    again = snapshot(root)
    differs = changed_paths(first, again)
    # only the secrets differ in bytes (fresh encryption); the cluster.yaml re-dump is the operator's edit
    assert set(differs) <= set(secret_files(root)) | {f"{STATE}/manifest.json", "cluster.yaml"}, differs
    for rel in secret_files(root):
        fail_unless(decrypted_docs(root, rel) == first_plain[rel], f"{rel}: came back with other content")
    assert hand.read_bytes() == hand_bytes


def test_a_hand_edited_file_that_is_no_longer_generated_is_kept_with_a_warning(repo: Path) -> None:
    edited = repo / APP / "configmap.yaml"
    edited.write_text(edited.read_text() + "# tuned by hand\n")
    edited_bytes = edited.read_bytes()
    set_values(repo, litellm_enabled=False)
    res = gr(repo, "configure", "--allow-mass-prune")
    assert f"warning: {APP}/configmap.yaml: is no longer generated but was edited by hand" in res.stderr, res.stderr
    assert "1 kept (edited by hand)" in res.stdout, res.stdout
    assert edited.read_bytes() == edited_bytes
    assert not (repo / APP / "helmrelease.yaml").exists()
    # nothing applies the kept file any more, and validation says so (exit 1: a finding)
    assert res.returncode == 1, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert f"{APP}/configmap.yaml: orphan:" in res.stdout, res.stdout
    # the warning repeats until the operator decides; deleting the file resolves it
    assert "edited by hand" in gr(repo, "configure").stderr
    edited.unlink()
    res = ok(gr(repo, "configure"))
    assert "warning" not in res.stderr and f"{APP}/configmap.yaml" not in manifest(repo), res.stderr


# =========================================================================== 6. errors: exit 2, nothing written

PENDING_SALT = "pending-salt-" + "z" * 40  # an edit waiting to be written when the error strikes


def _break_yaml(root: Path) -> list[str]:
    n = replace_line(root / "cluster.yaml", r"litellm_replicas: 1", "litellm_replicas: [1")
    return [f"cluster.yaml:{n + 1}: invalid YAML", "hint:"]


def _duplicate_key(root: Path) -> list[str]:
    first = line_of(root / "cluster.yaml", "litellm_replicas:")
    with (root / "cluster.yaml").open("a") as fh:
        fh.write("litellm_replicas: 3\n")
    last = len((root / "cluster.yaml").read_text().splitlines())
    return [f"cluster.yaml:{last}: invalid YAML: duplicate key 'litellm_replicas' (first defined on line {first})",
            "hint: remove one of the two definitions"]


def _schema_violations(root: Path) -> list[str]:
    c = root / "cluster.yaml"
    a = replace_line(c, r'cloudflare_domain: .*', "cloudflare_domain: 42")
    b = replace_line(c, r"litellm_replicas: 1", 'litellm_replicas: "many"')
    d = replace_line(c, r'litellm_log_level: .*', 'litellm_log_level: "LOUD"')
    return ["3 schema violation(s):", f"cluster.yaml:{a}: cloudflare_domain: 42 is not of type 'string'",
            f"cluster.yaml:{b}: litellm_replicas: 'many' is not of type 'integer'",
            f"cluster.yaml:{d}: litellm_log_level: 'LOUD' is not one of", "hint: fix the values above"]


def _trailing_newline(root: Path) -> list[str]:
    """``$`` in a schema pattern means the end of the text: a value with a final newline is refused."""
    line = replace_line(root / "cluster.yaml", r"cloudflare_domain: .*", 'cloudflare_domain: "example.com\\n"')
    return [f"cluster.yaml:{line}: cloudflare_domain: 'example.com\\n' does not match"]


def _unknown_key(root: Path) -> list[str]:
    n = replace_line(root / "cluster.yaml", r"litellm_replicas: 1", "litellm_replica: 1")
    return [f"cluster.yaml:{n}: litellm_replica: unknown key (did you mean 'litellm_replicas'?)"]


def _template_syntax(root: Path) -> list[str]:
    (root / "templates/config/kubernetes/apps/ai-system/extra.yaml.j2").write_text("a: 1\nb: #{ litellm_replicas \n")
    return ["template templates/config/kubernetes/apps/ai-system/extra.yaml.j2:2: syntax error", "2 | b: #{"]


def _undefined_variable(root: Path) -> list[str]:
    (root / "templates/config/kubernetes/apps/ai-system/extra.yaml.j2").write_text(
        "a: 1\nb: #{ litellm_replicaz }#\n")
    return ["template templates/config/kubernetes/apps/ai-system/extra.yaml.j2:2: undefined: 'litellm_replicaz'",
            "hint: did you mean 'litellm_replicas'?"]


def _no_sops(root: Path) -> list[str]:
    return ["sops not installed", "hint:", "GITOPS_RENDER_SOPS"]


def _no_age_key(root: Path) -> list[str]:
    (root / "age.key").unlink()
    return ["age.key", "not found"]


def _bad_recipient(root: Path) -> list[str]:
    t = root / "templates/config/.sops.yaml.j2"
    t.write_text(t.read_text().replace("age: #{ age_key('public') | yaml_value }#", 'age: "age1thisisnotarecipient"'))
    return [f"sops could not encrypt {LITELLM_SECRET}", 'malformed recipient "age1thisisnotarecipient"',
            "hint: check the creation rule and its age recipients in templates/config/.sops.yaml.j2"]


ERRORS: dict[str, tuple[Callable[[Path], list[str]], dict[str, str]]] = {
    "malformed-yaml": (_break_yaml, {}),
    "duplicate-key": (_duplicate_key, {}),
    "schema-violations": (_schema_violations, {}),
    "unknown-key": (_unknown_key, {}),
    "trailing-newline-in-a-pattern-field": (_trailing_newline, {}),
    "template-syntax": (_template_syntax, {}),
    "undefined-variable": (_undefined_variable, {}),
    "missing-sops": (_no_sops, {"GITOPS_RENDER_SOPS": "/nonexistent/sops"}),
    "missing-age-key": (_no_age_key, {}),
    "bad-recipient": (_bad_recipient, {}),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_an_input_error_stops_configure_with_one_message_and_the_tree_unchanged(repo: Path, case: str) -> None:
    breaker, env = ERRORS[case]
    set_values(repo, litellm_salt_key=PENDING_SALT, litellm_replicas=1, litellm_log_level="INFO")
    expected = breaker(repo)
    before = snapshot(repo)

    res = gr(repo, "configure", env=cli_env(**env))

    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stderr.startswith("error: ") and len(re.findall(r"^error:", res.stderr, re.MULTILINE)) == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for fragment in expected:
        assert fragment in res.stderr, f"{fragment!r} not in:\n{res.stderr}"
    assert changed_paths(before, snapshot(repo)) == []
    fail_unless(files_holding(repo, PENDING_SALT) == [], "the pending secret value reached the disk in plaintext")
    assert not list(repo.rglob("*.tmp-*")) and not (repo / STATE / "journal.json").exists()


def test_a_failure_while_staging_the_write_leaves_the_tree_byte_identical(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up while the new files are staged (late: after render and sops): nothing changes."""
    from gitops_render.cli import cli
    from gitops_render.write import apply as write

    set_values(repo, litellm_salt_key=PENDING_SALT, litellm_replicas=2, litellm_enabled=True)
    before = snapshot(repo)
    real = write.write_new_file
    calls = {"n": 0}

    def disk_full_on_the_third_file(path: Path, data: bytes, mode: int | None) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data, mode)

    monkeypatch.setattr(write, "write_new_file", disk_full_on_the_third_file)
    res = CliRunner().invoke(cli, ["configure", "--root", str(repo)], catch_exceptions=False)
    assert calls["n"] == 3, "the failure was never injected"
    assert res.exit_code == 2, res.output
    assert "error: staging the output failed: No space left on device" in res.output, res.output
    assert "nothing was changed" in res.output, res.output
    assert changed_paths(before, snapshot(repo)) == []
    fail_unless(files_holding(repo, PENDING_SALT) == [], "the pending secret value reached the disk in plaintext")
    assert not list(repo.rglob("*.tmp-*")) and not (repo / STATE / "journal.json").exists()
    # the next run (disk freed) does the work
    monkeypatch.setattr(write, "write_new_file", real)
    res = CliRunner().invoke(cli, ["configure", "--root", str(repo)], catch_exceptions=False)
    assert res.exit_code == 0 and "3 changed" in res.output and "1 added" in res.output, res.output


# =========================================================================== 7. leak guard


def test_a_template_that_puts_the_master_key_into_a_configmap_is_refused(repo: Path) -> None:
    key = cluster(repo)["litellm_master_key"]
    template = repo / "templates/config" / APP / "configmap.yaml.j2"
    text = template.read_text()
    assert "data:\n" in text
    template.write_text(text.replace("data:\n", "data:\n  debug_master_key: #{ litellm_master_key | tojson }#\n", 1))
    set_values(repo, litellm_replicas=2)  # a change that would otherwise be written
    before = snapshot(repo)

    res = gr(repo, "configure")

    assert res.returncode == 1, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "sensitive value(s) found in plaintext output" in res.stderr, res.stderr
    assert f"{APP}/configmap.yaml" in res.stderr and "litellm_master_key" in res.stderr, res.stderr
    fail_unless(key not in res.stdout + res.stderr and key[3:19] not in res.stdout + res.stderr,
                "the leaked value is printed")
    assert changed_paths(before, snapshot(repo)) == []


# =========================================================================== 10. validation on by default


def test_configure_validates_by_default_and_no_validate_skips_it(repo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-schemas"
    empty.mkdir()
    set_values(repo, litellm_replicas=2)
    res = gr(repo, "configure", "--schema-location", str(empty))
    assert res.returncode == 1, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "could not find schema for HelmRelease" in res.stdout, res.stdout
    assert re.search(r"^validation: \d+ finding\(s\)$", res.stderr, re.MULTILINE), res.stderr

    set_values(repo, litellm_replicas=3)
    res = ok(gr(repo, "configure", "-v", "--no-validate", "--schema-location", str(empty)))
    assert "  ~ kubernetes/apps/ai-system/litellm/app/helmrelease.yaml" in res.stdout
    assert "validation" not in res.stdout + res.stderr and "finding" not in res.stdout, res.stdout


# =========================================================================== 11. every feature combination

# The combinations and their expectations are declared once, in combos.py. Each one is
# configured in process through the library (``run_configure``: render, leak guard, real sops,
# write, real kustomize + kubeconform); the command line is exercised for the few that differ
# in what the secrets and validation stages do (many secrets, none of LiteLLM's, another cache
# backend's, the whole stack gone), each followed by a no-op rerun.
CLI_COMBOS = ("all-features", "valkey", "self-hosted-only", "litellm-disabled")


@pytest.fixture(scope="module")
def fresh_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An init-ed repo never configured (each combination configures a copy from scratch)."""
    return new_repo(tmp_path_factory.mktemp("fresh") / "repo")


def _assert_tree(root: Path, combo: Combo) -> None:
    for rel in combo.present:
        assert (root / rel).is_file(), rel
    for rel in combo.absent:
        assert not (root / rel).exists(), rel
    for rel in secret_files(root):
        assert recipients(root, rel) == [public_key(root / "age.key")], rel
    assert set(manifest(root)) == generated(root)


@pytest.mark.parametrize("name", list(COMBOS))
def test_every_feature_combination_renders_encrypts_and_validates_clean(fresh_repo: Path, tmp_path: Path,
                                                                        name: str) -> None:
    from gitops_render.app.pipeline import RunOptions, run_configure

    root = clone(fresh_repo, tmp_path / "repo")
    set_values(root, **COMBOS[name].overrides)
    outcome = run_configure(RunOptions(root=root))
    assert outcome.validation_error is None, outcome.validation_error
    assert outcome.report is not None and list(outcome.report.findings) == [], outcome.report
    assert {d.action for d in outcome.decisions} <= {"added"}, outcome.decisions
    assert len(outcome.decisions) == len(secret_files(root))
    _assert_tree(root, COMBOS[name])


@pytest.mark.parametrize("name", CLI_COMBOS)
def test_configure_on_the_command_line_handles_a_combination_and_a_rerun_changes_nothing(
        fresh_repo: Path, tmp_path: Path, name: str) -> None:
    root = clone(fresh_repo, tmp_path / "repo")
    set_values(root, **COMBOS[name].overrides)
    res = ok(gr(root, "configure"))
    assert res.stdout.rstrip().endswith("validation: ok"), res.stdout
    assert f"secrets: {len(secret_files(root))} added" in res.stdout or not secret_files(root), res.stdout
    _assert_tree(root, COMBOS[name])
    before = snapshot(root)
    assert "0 added, 0 changed, 0 removed" in ok(gr(root, "configure")).stdout
    assert changed_paths(before, snapshot(root)) == []


# =========================================================================== 12. the Taskfile


def test_the_readmes_taskfile_lists_the_daily_tasks() -> None:
    task = PROJECT / ".venv" / "bin" / "task"
    exe = str(task) if task.is_file() else shutil.which("task")
    assert exe, "task is not installed: run scripts/install-tools.sh (it installs go-task-bin into .venv)"
    env = {**os.environ, "NO_COLOR": "1", "TASK_COLOR_RESET": "0"}  # CI=true makes task colour its output
    res = subprocess.run([exe, "--list"], cwd=PROJECT, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout)
    listed = set(re.findall(r"^\* ([\w-]+):", plain, re.MULTILINE))
    assert {"configure", "render", "doctor", "init", "test", "check", "diff", "validate"} <= listed, res.stdout


# =========================================================================== 13. the command line


def _commands() -> list[tuple[str, ...]]:
    from gitops_render.cli import cli

    names: list[tuple[str, ...]] = [()]
    for name, cmd in cli.commands.items():
        names.append((name,))
        names.extend((name, sub) for sub in getattr(cmd, "commands", {}))
    return names


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "gitops-render")
def test_every_commands_help_shows_an_example_and_its_exit_codes(command: tuple[str, ...]) -> None:
    from gitops_render.cli import cli

    res = CliRunner().invoke(cli, [*command, "--help"])
    assert res.exit_code == 0, res.output
    assert re.search(r"^  example: gitops-render \S", res.output, re.MULTILINE), res.output
    assert re.search(r"^  exit codes: 0 ", res.output, re.MULTILINE), res.output


@pytest.mark.parametrize("args", [("doctor", "--config", "x.yaml"), ("doctor", "--yes"), ("doctor", "-v"),
                                  ("init", "--config", "x.yaml"), ("init", "--yes"), ("init", "-v"),
                                  ("validate", "--yes"), ("check", "--yes"), ("diff", "--yes"), ("diff", "-v")])
def test_an_option_a_command_would_ignore_is_refused_as_a_usage_error(args: tuple[str, ...], tmp_path: Path) -> None:
    from gitops_render.cli import cli

    res = CliRunner().invoke(cli, [*args, "--root", str(tmp_path)])
    assert res.exit_code == 2 and "No such option" in res.output, res.output
    assert list(tmp_path.iterdir()) == []


def test_configure_prints_a_summary_by_default_and_the_file_list_with_verbose(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    res = ok(gr(repo, "configure"))
    assert res.stdout.splitlines() == ["1 added, 2 changed, 0 removed, 18 unchanged", "secrets: 1 unchanged",
                                       "validation: ok"], res.stdout
    set_values(repo, litellm_replicas=3)
    res = ok(gr(repo, "configure", "--verbose"))
    assert "  ~ kubernetes/apps/ai-system/litellm/app/helmrelease.yaml\n" in res.stdout, res.stdout
    assert "  = .sops.yaml\n" in res.stdout, res.stdout  # -v lists unchanged files too


def test_completion_prints_a_script_for_each_shell_and_the_script_completes_commands(tmp_path: Path) -> None:
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "#compdef gitops-render"),
                          ("fish", "complete --no-files --command gitops-render")):
        res = ok(gr(tmp_path, "completion", shell))
        assert marker in res.stdout and "_GITOPS_RENDER_COMPLETE" in res.stdout, res.stdout
    # what the bash script asks the program when the operator presses TAB after `gitops-render con`
    env = cli_env(_GITOPS_RENDER_COMPLETE="bash_complete", COMP_WORDS="gitops-render con", COMP_CWORD="1")
    assert ok(gr(tmp_path, env=env)).stdout.split() == ["plain,configure"]
    assert gr(tmp_path, "completion", "powershell").returncode == 2


def test_doctor_checks_minimum_versions_not_exact_pins() -> None:
    from gitops_render.app.bootstrap import parse_version
    from gitops_render.core.runner import MIN_VERSIONS

    def accepted(tool: str, printed: str) -> bool:
        found, minimum = parse_version(printed), parse_version(MIN_VERSIONS[tool])
        assert found is not None and minimum is not None
        return found >= minimum

    # what cluster-template's mise pins today, and what this repo builds
    assert accepted("sops", "sops 3.13.3 (latest)") and accepted("kubeconform", "v0.8.0")
    assert accepted("sops", "sops 3.11.0") and accepted("kustomize", "v5.8.0") and accepted("age", "v1.3.1")
    assert not accepted("sops", "sops 3.8.1") and not accepted("kubeconform", "v0.6.3")


def test_doctor_passes_on_a_configured_repo_and_names_the_schema_locations(sample_repo: Path) -> None:
    res = ok(gr(sample_repo, "doctor"))
    assert re.search(r"^\[    ok \] schemas: .*kubernetes-schemas/core/.* \(local\)$", res.stdout, re.MULTILINE), res.stdout
    assert "install-tools" not in res.stdout


def test_doctor_offline_says_the_schema_host_is_unreachable_within_seconds(sample_repo: Path, tmp_path: Path) -> None:
    import time

    env = cli_env(GITOPS_RENDER_SCHEMA_LOCATION="https://127.0.0.1:9/{{ .ResourceKind }}.json;"
                                                f"{tmp_path}/missing/{{{{ .ResourceKind }}}}.json")
    began = time.monotonic()
    res = gr(sample_repo, "doctor", env=env)
    assert time.monotonic() - began < 10, "doctor took too long to notice it is offline"
    assert res.returncode == 1, res.stdout
    assert "schemas: https://127.0.0.1:9/{{ .ResourceKind }}.json: 127.0.0.1 unreachable" in res.stdout, res.stdout
    assert "fix: offline? point GITOPS_RENDER_SCHEMA_LOCATION at a local schema mirror" in res.stdout, res.stdout
    assert f"{tmp_path}/missing does not exist" in res.stdout, res.stdout


def test_validate_offline_names_the_unreachable_schema_host_and_a_local_mirror_still_validates(
        sample_repo: Path) -> None:
    """kubeconform waits ~40 s per host that does not answer; validate asks the host first (seconds)."""
    dead = "https://127.0.0.1:9/{{ .ResourceKind }}.json"
    res = gr(sample_repo, "validate", env=cli_env(GITOPS_RENDER_SCHEMA_LOCATION=dead))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"could not download schemas: {dead}: 127.0.0.1 unreachable" in res.stderr, res.stderr
    assert "offline schema mirror" in res.stderr
    # the mirror first, the dead host as a fallback: every schema is found locally, nothing to download
    mirror = cli_env()["GITOPS_RENDER_SCHEMA_LOCATION"]
    res = gr(sample_repo, "validate", env=cli_env(GITOPS_RENDER_SCHEMA_LOCATION=f"{mirror};{dead}",
                                                  GITOPS_RENDER_VALIDATE_CACHE="0"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_missing_tool_is_explained_with_its_release_page_and_mise(repo: Path, tmp_path: Path) -> None:
    res = gr(repo, "configure", env=cli_env(GITOPS_RENDER_KUSTOMIZE=str(tmp_path / "no-kustomize")))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "https://github.com/kubernetes-sigs/kustomize/releases, or `mise use kustomize`" in res.stderr, res.stderr
    assert "install-tools" not in res.stderr
