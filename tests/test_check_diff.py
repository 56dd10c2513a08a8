"""``check`` (the CI job) and ``diff`` (the review view), through the real ``gitops-render`` command.

Given a repo configured from the sample: ``check`` passes until someone edits a rendered
file by hand or changes cluster.yaml without configuring, and passes again after configure;
without the age private key it still compares every non-secret file and the set of secret
files, and says that secret contents were not compared. ``diff`` shows unified diffs, with
secrets decrypted and every value masked. Neither command writes anything.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from conftest import make_age_key
from operator_repo import (
    APP,
    LITELLM_SECRET,
    changed_paths,
    cli_env,
    cluster,
    committed,
    fail_unless,
    git,
    gr,
    ok,
    on_terminal,
    public_key,
    set_values,
    snapshot,
)

HELMRELEASE = f"{APP}/helmrelease.yaml"






def check(repo: Path) -> tuple[int, str, str]:
    """Run ``gitops-render check``; assert it wrote nothing; return (exit, stdout, stderr)."""
    before = snapshot(repo)
    res = gr(repo, "check")
    assert "Traceback" not in res.stderr, res.stderr
    assert changed_paths(before, snapshot(repo)) == [], "check wrote to the tree"
    return res.returncode, res.stdout, res.stderr


# =========================================================================== check


def test_check_passes_on_a_freshly_configured_repo(repo: Path) -> None:
    code, out, err = check(repo)
    assert code == 0, out + err
    assert "drift: none" in out and out.rstrip().endswith("validation: ok"), out


def test_check_fails_after_a_hand_edit_of_a_rendered_file(repo: Path) -> None:
    target = repo / HELMRELEASE
    target.write_text(target.read_text().replace("replicas: 1", "replicas: 5"))
    code, out, err = check(repo)
    assert code == 1, out + err
    assert f"drift: 1 file(s) differ from what configure would produce:\n  changed: {HELMRELEASE}\n" in out, out
    assert "run `gitops-render configure`" in err, err


def test_check_fails_after_a_cluster_yaml_change_until_configure_is_run(repo: Path) -> None:
    set_values(repo, litellm_replicas=2, litellm_salt_key="new-salt-" + "s" * 40)
    code, out, err = check(repo)
    assert code == 1, out + err
    listed = set(re.findall(r"^  (\w+): (\S+)$", out, re.MULTILINE))
    assert listed == {("changed", HELMRELEASE), ("changed", f"{APP}/kustomization.yaml"),
                      ("added", f"{APP}/pdb.yaml"), ("changed", LITELLM_SECRET)}, out
    ok(gr(repo, "configure"))
    code, out, err = check(repo)
    assert code == 0 and "drift: none" in out, out + err


def test_without_the_private_key_check_compares_everything_but_secret_contents(repo: Path, tmp_path: Path) -> None:
    shutil.move(repo / "age.key", tmp_path / "age.key")  # the CI runner has no key
    code, out, err = check(repo)
    assert code == 0, out + err
    assert "secret contents were not compared" in out and "1 secret file(s) checked for presence only" in out, out
    assert "drift: none" in out and "validation: ok" in out, out

    # a hand edit of a non-secret file is still drift
    saved = (repo / HELMRELEASE).read_bytes()
    (repo / HELMRELEASE).write_text(saved.decode().replace("replicas: 1", "replicas: 5"))
    code, out, _ = check(repo)
    assert code == 1 and f"  changed: {HELMRELEASE}" in out, out
    (repo / HELMRELEASE).write_bytes(saved)

    # a removed secret file is drift too, key or no key
    (repo / LITELLM_SECRET).unlink()
    code, out, _ = check(repo)
    assert code == 1 and f"  added: {LITELLM_SECRET}" in out, out
    assert "secret contents were not compared" in out


# =========================================================================== diff


def test_diff_shows_a_unified_diff_of_a_changed_file_and_writes_nothing(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    before = snapshot(repo)
    res = ok(gr(repo, "diff"))
    assert changed_paths(before, snapshot(repo)) == []
    assert f"--- a/{HELMRELEASE}\n+++ b/{HELMRELEASE}\n@@ " in res.stdout, res.stdout
    assert "\n-        replicas: 1\n+        replicas: 2\n" in res.stdout, res.stdout
    assert f"--- a/{APP}/pdb.yaml\n+++ b/{APP}/pdb.yaml\n@@ -0,0 +1," in res.stdout, res.stdout  # a new file
    assert "\x1b[" not in res.stdout  # not a terminal: no colour


def test_diff_on_an_unchanged_repo_says_so(repo: Path) -> None:
    res = ok(gr(repo, "diff"))
    assert res.stdout == "no changes\n", res.stdout


def test_diff_of_a_changed_secret_masks_every_value_and_marks_the_changed_ones(repo: Path) -> None:
    old = cluster(repo)
    new_salt = "new-salt-" + "m" * 40
    set_values(repo, litellm_salt_key=new_salt)
    res = ok(gr(repo, "diff"))
    out = res.stdout + res.stderr
    assert f"--- a/{LITELLM_SECRET}\n+++ b/{LITELLM_SECRET}\n" in out, out
    assert '-  LITELLM_SALT_KEY: "***"\n+  LITELLM_SALT_KEY: "*** (changed)"\n' in out, out
    assert not re.search(r"^[-+]  (LITELLM_MASTER_KEY|DATABASE_URL|password):", out, re.MULTILINE), \
        "an unchanged value shows up as changed"
    assert '\n   LITELLM_MASTER_KEY: "***"\n' in out, out  # unchanged keys are context lines, still masked
    # the pods roll onto the new value: the HelmRelease's keyed checksum of the Secret changes
    assert f"--- a/{HELMRELEASE}\n" in out, out
    assert re.search(r'^\+ +checksum/secret: "[0-9a-f]{64}"$', out, re.MULTILINE), out
    for value in (new_salt, old["litellm_salt_key"], old["litellm_master_key"], old["litellm_db_password"]):
        fail_unless(value not in out and value[:16] not in out, "a secret value appears in the diff output")


def test_diff_color_adds_ansi_codes(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    coloured = ok(gr(repo, "diff", "--color")).stdout
    assert "\x1b[31m-        replicas: 1\x1b[0m" in coloured and "\x1b[32m+        replicas: 2\x1b[0m" in coloured
    assert f"\x1b[1m--- a/{HELMRELEASE}\x1b[0m" in coloured and "\x1b[36m@@ " in coloured
    assert "\x1b[" not in ok(gr(repo, "diff", "--no-color")).stdout


def test_diff_after_a_key_rotation_shows_the_new_recipient_in_sops_yaml(repo: Path, tmp_path: Path) -> None:
    old_pub = public_key(repo / "age.key")
    shutil.move(repo / "age.key", tmp_path / "old.key")
    new_pub = make_age_key(repo / "age.key")
    out = ok(gr(repo, "diff")).stdout
    assert '--- a/.sops.yaml\n+++ b/.sops.yaml\n' in out, out
    assert f'-    age: "{old_pub}"\n' in out and f'+    age: "{new_pub}"\n' in out, out
    assert "cannot decrypt" not in out.split("--- a/.sops.yaml", 1)[1].split("--- a/", 1)[0], out


def test_diff_exit_code_is_1_with_a_pending_change_and_0_without(repo: Path) -> None:
    assert ok(gr(repo, "diff", "--exit-code")).stdout == "no changes\n"
    set_values(repo, litellm_replicas=2)
    res = gr(repo, "diff", "--exit-code")
    assert res.returncode == 1 and "+        replicas: 2" in res.stdout, res.stdout + res.stderr
    assert ok(gr(repo, "diff")).stdout.startswith("--- a/")  # without --exit-code a diff is still exit 0


def test_without_the_key_diff_never_says_no_changes_about_secrets_it_could_not_read(repo: Path,
                                                                                    tmp_path: Path) -> None:
    set_values(repo, litellm_salt_key="new-salt-" + "k" * 40)  # a change inside a secret only
    shutil.move(repo / "age.key", tmp_path / "age.key")
    res = gr(repo, "diff", "--exit-code")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no changes\n" not in res.stdout and "1 secret file(s) not compared (no age key)" in res.stdout, res.stdout


# =========================================================================== diff --base


def test_diff_base_head_shows_the_built_change_against_the_last_commit(repo: Path) -> None:
    committed(repo)
    res = ok(gr(repo, "diff", "--base", "HEAD", "--exit-code"))  # nothing changed yet
    assert res.stdout.startswith("no changes against HEAD"), res.stdout
    set_values(repo, litellm_replicas=2, litellm_salt_key="new-salt-" + "b" * 40)
    ok(gr(repo, "configure"))
    before, status = snapshot(repo), git(repo, "status", "--porcelain")
    res = gr(repo, "diff", "--base", "HEAD", "--exit-code")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    # the built HelmRelease (kustomize build of the Flux Kustomization), not the file
    assert "--- HEAD: HelmRelease ai-system/litellm\n+++ working tree: HelmRelease ai-system/litellm\n" in out, out
    assert "\n-        replicas: 1\n+        replicas: 2\n" in out, out
    assert "+++ working tree: PodDisruptionBudget ai-system/litellm\n@@ -0,0 +1," in out, out
    # the secret decrypted in memory, every value masked, the changed one marked
    assert '-  LITELLM_SALT_KEY: "***"\n+  LITELLM_SALT_KEY: "*** (changed)"\n' in out, out
    for value in cluster(repo).values():
        if isinstance(value, str) and len(value) >= 16:
            fail_unless(value not in out, "a cluster.yaml value appears in diff --base output")
    assert changed_paths(before, snapshot(repo)) == [] and git(repo, "status", "--porcelain") == status
    assert git(repo, "worktree", "list").count("\n") == 1  # no worktree left behind

    md = ok(gr(repo, "diff", "--base", "HEAD", "--format", "markdown")).stdout
    assert md.startswith("<!-- gitops-render diff -->\n### gitops-render: built resources against `HEAD`\n"), md
    assert "| `flux-system/litellm` | 1 | 1 | 0 |" in md and "```diff\n--- HEAD: HelmRelease" in md, md


def test_diff_base_reports_a_secret_it_cannot_decrypt_as_not_compared(repo: Path, tmp_path: Path) -> None:
    committed(repo)
    set_values(repo, litellm_salt_key="new-salt-" + "n" * 40)
    ok(gr(repo, "configure"))
    shutil.move(repo / "age.key", tmp_path / "age.key")
    make_age_key(repo / "age.key")  # a key that cannot decrypt either side
    res = gr(repo, "diff", "--base", "HEAD", "--exit-code")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"secret {LITELLM_SECRET}: NOT COMPARED: the age key cannot decrypt it" in res.stdout, res.stdout
    assert "no changes" not in res.stdout


def test_diff_base_with_an_unknown_ref_is_a_usage_error(repo: Path) -> None:
    committed(repo)
    res = gr(repo, "diff", "--base", "no-such-branch")
    assert res.returncode == 2 and "'no-such-branch' is not a commit of this repository" in res.stderr, res.stderr


# =========================================================================== terminal manners


def test_on_a_terminal_diff_is_coloured_and_configure_shows_its_stages(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    code, raw = on_terminal(repo, "diff")
    assert code == 0 and b"\x1b[32m+        replicas: 2\x1b[0m" in raw, raw
    code, raw = on_terminal(repo, "configure")
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw).decode()
    assert code == 0, text
    for stage in ("render    21 files", "encrypt   1 secrets", "write     3 files", "validate  kustomize + kubeconform"):
        assert re.search(rf"\u2713 {re.escape(stage)}.* \(\d+\.\ds\)", text), text
    assert "1 added, 2 changed, 0 removed" in text and b"\x1b[" in raw


def test_with_no_color_a_terminal_gets_no_escape_sequence_at_all(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    env = cli_env(NO_COLOR="1")
    code, raw = on_terminal(repo, "diff", env=env)
    assert code == 0 and b"\n-        replicas: 1\r\n+        replicas: 2\r\n" in raw.replace(b"\r\r", b"\r"), raw
    assert b"\x1b" not in raw, raw
    code, raw = on_terminal(repo, "configure", env=env)
    assert code == 0 and b"\x1b" not in raw, raw
    assert re.search(rb"^render    21 files \(\d+\.\ds\)\r$", raw, re.MULTILINE), raw  # the stage lines, plain


def test_force_color_colours_a_piped_diff_unless_no_color_is_set(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    assert "\x1b[32m+        replicas: 2" in ok(gr(repo, "diff", env=cli_env(FORCE_COLOR="1"))).stdout
    assert "\x1b[" not in ok(gr(repo, "diff", env=cli_env(FORCE_COLOR="1", NO_COLOR="1"))).stdout
    assert "\x1b[" in ok(gr(repo, "diff", "--color", env=cli_env(NO_COLOR="1"))).stdout  # the flag wins
