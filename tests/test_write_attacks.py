"""The write stage under attack (issue 12) and against settings mistakes (issue 11), as operator stories.

Each test is named after the finding it reproduces: given a repo prepared the way the attack
prepared it, the run refuses (exit 2, nothing touched) or does exactly what the guarantee says.
The repos are tiny (no schema, no secrets) and rendered into the repository root, with a real
``.git`` beside the output like an operator's clone.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner, Result

from gitops_render.cli import cli
from gitops_render.core.errors import DataError, WriteError
from gitops_render.write import DesiredFile, apply_plan, load_manifest, make_plan, recover
from gitops_render.write.journal import JOURNAL_FILE, Journal, Phase, Removal, Rename
from gitops_render.write.manifest import MANIFEST_FILE, Manifest, sha256_hex

STATE = ".gitops-render"
AGE_KEY = b"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n"
TEMPLATES = {"kubernetes/apps/a.yaml.j2": "name: #{ name }#\n", "kubernetes/apps/b.yaml.j2": "b: 1\n",
             "kubernetes/flux/c.yaml.j2": "c: 1\n", "kubernetes/flux/d.yaml.j2": "d: 1\n"}


def mini_repo(root: Path, templates: dict[str, str] = TEMPLATES, extra_settings: str = "") -> Path:
    """A tiny operator repo: templates/ rendered into the repo root, cluster.yaml, age.key, a .git."""
    (root / "templates").mkdir(parents=True)
    (root / "gitops-render.toml").write_text(textwrap.dedent("""\
        [gitops-render]
        inputs = ["templates"]
        output = "."
        data = ["cluster.yaml"]
        jinja_suffix = ".j2"
        """) + extra_settings)
    (root / "cluster.yaml").write_text("name: demo\n")
    (root / "age.key").write_bytes(AGE_KEY)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n\tbare = false\n")
    for rel, text in templates.items():
        (root / "templates" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "templates" / rel).write_text(text)
    return root


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [args[0], "--root", str(root), *args[1:]], catch_exceptions=False)


def snapshot(root: Path) -> dict[str, object]:
    """Every entry below ``root`` (links by target, files by bytes and mode, directories by mode).

    The render's compile cache is left out: a run may refresh it (it is never committed)."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = path.relative_to(root).as_posix()
        if rel.startswith(f"{STATE}/cache/"):
            continue
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("other", stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


def rendered(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "kubernetes").rglob("*") if p.is_file())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return mini_repo(tmp_path / "repo")


# --------------------------------------------------------------------------- 12.1: symlinked state files


def test_attack_symlinked_lock_never_truncates_the_age_key(repo: Path) -> None:
    (repo / STATE).mkdir()
    (repo / STATE / "lock").symlink_to("../age.key")  # committed by someone, pointing at the private key
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2, res.output
    assert f"{STATE}/lock is a symlink" in res.output and "nothing was written" in res.output, res.output
    assert (repo / "age.key").read_bytes() == AGE_KEY
    assert snapshot(repo) == before


@pytest.mark.parametrize("entry", ["manifest.json", "journal.json", "cache"])
def test_attack_symlinked_state_file_is_refused_before_anything_is_opened(repo: Path, entry: str) -> None:
    (repo / STATE).mkdir()
    (repo / STATE / entry).symlink_to("../age.key")
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2 and "is a symlink" in res.output, res.output
    assert snapshot(repo) == before


def test_attack_symlinked_state_directory_is_refused(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / STATE).symlink_to(elsewhere)
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2 and "real directory" in res.output, res.output
    assert snapshot(repo) == before and list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------- 12.13: exit 2, not 3


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_attack_lock_that_is_a_directory_or_fifo_exits_2(repo: Path, kind: str) -> None:
    (repo / STATE).mkdir()
    if kind == "directory":
        (repo / STATE / "lock").mkdir()
    else:
        os.mkfifo(repo / STATE / "lock")
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2, res.output
    assert "cannot take the lock" in res.output and "internal error" not in res.output, res.output
    assert snapshot(repo) == before


def test_attack_disk_full_when_taking_the_lock_exits_2_and_leaves_no_state_dir(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(repo)

    def pwrite_disk_full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite_disk_full)
    res = run(repo, "render")
    assert res.exit_code == 2, res.output
    assert "cannot take the lock" in res.output and "No space left on device" in res.output, res.output
    assert snapshot(repo) == before  # the state directory this run created is gone again


@pytest.mark.parametrize("victim", [f"{STATE}/manifest.json", f"{STATE}/lock", "kubernetes/apps/a.yaml"])
def test_attack_unreadable_manifest_lock_or_output_exits_2(
        repo: Path, monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    assert run(repo, "render").exit_code == 0
    before = snapshot(repo)
    target = str(repo / victim)
    real_open = os.open

    def no_permission(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if os.fspath(path) == target:  # type: ignore[call-overload]
            raise PermissionError(errno.EACCES, "Permission denied", target)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_permission)
    (repo / "cluster.yaml").write_text("name: changed\n")  # so that the render has work to do
    res = run(repo, "render")
    assert res.exit_code == 2, res.output
    assert "Permission denied" in res.output and "internal error" not in res.output, res.output
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if k != "cluster.yaml"} == {k: v for k, v in before.items()
                                                                       if k != "cluster.yaml"}


# --------------------------------------------------------------------------- 12.11: .git, inputs, tampered manifest


def test_attack_symlink_into_git_is_never_written_through(repo: Path) -> None:
    (repo / "kubernetes").symlink_to(".git")  # inside the root, so "safe" by the old rule
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2 and "never writes" in res.output and ".git" in res.output, res.output
    assert snapshot(repo) == before


def test_attack_tampered_manifest_cannot_prune_git_config_through_a_symlink(repo: Path) -> None:
    assert run(repo, "render").exit_code == 0
    (repo / "gitlink").symlink_to(".git")
    config = (repo / ".git/config").read_bytes()
    entries = dict(load_manifest(repo / STATE).files)
    entries["gitlink/config"] = sha256_hex(config)
    (repo / STATE / MANIFEST_FILE).write_bytes(Manifest(entries).dump())
    res = run(repo, "render")
    assert res.exit_code == 2 and "never writes, replaces or deletes" in res.output, res.output
    assert (repo / ".git/config").read_bytes() == config


def test_attack_tampered_manifest_never_prunes_the_inputs_of_the_run(repo: Path) -> None:
    assert run(repo, "render").exit_code == 0
    inputs = ["gitops-render.toml", "cluster.yaml", "templates/kubernetes/apps/a.yaml.j2"]
    entries = dict(load_manifest(repo / STATE).files)
    entries.update({rel: sha256_hex((repo / rel).read_bytes()) for rel in inputs})
    (repo / STATE / MANIFEST_FILE).write_bytes(Manifest(entries).dump())
    before = {rel: (repo / rel).read_bytes() for rel in inputs}
    res = run(repo, "render")
    assert res.exit_code == 0, res.output
    assert {rel: (repo / rel).read_bytes() for rel in inputs} == before
    assert all(f"warning: {rel}: is listed in the manifest but is an input" in res.output for rel in inputs), res.output
    assert not set(inputs) & set(load_manifest(repo / STATE).files)


# --------------------------------------------------------------------------- 12.14: all-old or all-new


def test_attack_rename_failing_mid_apply_leaves_the_old_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, state = tmp_path / "repo", tmp_path / "repo" / STATE
    root.mkdir()
    old = {f"kubernetes/app{i}.yaml": f"v: old{i}\n".encode() for i in range(6)}
    new = {f"kubernetes/app{i}.yaml": f"v: new{i}\n".encode() for i in range(1, 8)}
    apply_plan(make_plan(root, {PurePosixPath(k): DesiredFile(v) for k, v in old.items()}, Manifest()), state)
    before = snapshot(root)
    plan = make_plan(root, {PurePosixPath(k): DesiredFile(v) for k, v in new.items()}, load_manifest(state))
    real_replace = os.replace
    into_tree = [0]

    def third_rename_into_the_tree_fails(src: object, dst: object) -> None:
        if str(dst).startswith(str(root / "kubernetes")) and STATE not in str(dst):
            into_tree[0] += 1
            if into_tree[0] == 3:
                raise OSError(errno.EROFS, "Read-only file system", str(dst))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", third_rename_into_the_tree_fails)
    with pytest.raises(WriteError) as err:
        apply_plan(plan, state)
    monkeypatch.undo()
    assert err.value.exit_code == 2 and "every change was undone" in str(err.value)
    assert into_tree[0] == 3 and snapshot(root) == before
    apply_plan(plan, state)  # the cause is gone: the next run writes the new tree
    assert {p: (root / p).read_bytes() for p in rendered(root)} == new


def test_attack_failing_exec_post_says_the_tree_was_written(tmp_path: Path) -> None:
    root = mini_repo(tmp_path / "repo", extra_settings='exec_post = ["exit 7"]\n')
    res = run(root, "render")
    assert res.exit_code == 1, res.output
    assert "the tree was written (4 added" in res.output and "exec_post failed" in res.output, res.output
    assert "nothing was written" not in res.output
    assert len(rendered(root)) == 4


# --------------------------------------------------------------------------- 12.19: hand-written files


def test_attack_hand_written_file_at_a_generated_path_is_not_overwritten_silently(repo: Path) -> None:
    mine = repo / "kubernetes/apps/b.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# my own file, never generated\n")
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2, res.output
    assert "did not write would be overwritten" in res.output and "kubernetes/apps/b.yaml" in res.output, res.output
    assert "--yes" in res.output and snapshot(repo) == before
    res = run(repo, "render", "--yes")
    assert res.exit_code == 0 and mine.read_text() == "b: 1\n", res.output


# --------------------------------------------------------------------------- 12.20: tampered journal


def test_attack_tampered_journal_cannot_delete_files(repo: Path) -> None:
    assert run(repo, "render").exit_code == 0
    readme = repo / "README.md"
    readme.write_text("# the operator's readme\n")
    a = repo / "kubernetes/apps/a.yaml"
    journal = Journal(Phase.APPLY, str(repo.resolve()), removals=(
        Removal(PurePosixPath("README.md"), sha256_hex(readme.read_bytes())),  # not generated: not in the manifest
        Removal(PurePosixPath("kubernetes/apps/a.yaml"), sha256_hex(b"forged\n")),  # hash does not match
        Removal(PurePosixPath("cluster.yaml"), sha256_hex((repo / "cluster.yaml").read_bytes())),
    ))
    entries = dict(load_manifest(repo / STATE).files)
    entries["cluster.yaml"] = sha256_hex((repo / "cluster.yaml").read_bytes())  # listed, but an input
    (repo / STATE / MANIFEST_FILE).write_bytes(Manifest(entries).dump())
    journal.save(repo / STATE / JOURNAL_FILE)
    res = run(repo, "render")
    assert res.exit_code == 0, res.output
    assert readme.exists() and a.read_text() == "name: demo\n" and (repo / "cluster.yaml").exists()


@pytest.mark.parametrize("field, value", [("target", ".git/config"), ("tmp", "../../age.key"),
                                          ("tmp", "not-a-staging-name")])
def test_attack_tampered_journal_with_foreign_paths_is_refused(repo: Path, field: str, value: str) -> None:
    (repo / STATE).mkdir()
    rename = {"tmp": ".x.gitops-render.tmp-0123456789ab", "target": "kubernetes/x.yaml"} | {field: value}
    journal = Journal(Phase.APPLY, str(repo.resolve()), renames=(
        Rename(PurePosixPath("placeholder"), PurePosixPath("kubernetes/x.yaml"), sha256_hex(b"x")),))
    text = journal.dump().decode().replace('"placeholder"', f'"{rename["tmp"]}"')
    text = text.replace('"target": "kubernetes/x.yaml"', f'"target": "{rename["target"]}"')
    (repo / STATE / JOURNAL_FILE).write_text(text)
    with pytest.raises(DataError, match="journal"):
        recover(repo / STATE, repo)
    assert (repo / ".git/config").exists() and (repo / "age.key").read_bytes() == AGE_KEY


# --------------------------------------------------------------------------- 11.3: mass-deletion guard


def test_a_render_that_finds_no_inputs_deletes_nothing(repo: Path) -> None:
    assert run(repo, "render").exit_code == 0
    (repo / "empty").mkdir()
    settings = (repo / "gitops-render.toml").read_text().replace('inputs = ["templates"]', 'inputs = ["empty"]')
    (repo / "gitops-render.toml").write_text(settings)
    before = snapshot(repo)
    res = run(repo, "render")
    assert res.exit_code == 2, res.output
    assert "would prune 4 of the 4 files" in res.output and "renders 0" in res.output, res.output
    assert "found no inputs" in res.output and "--allow-mass-prune" in res.output, res.output
    assert snapshot(repo) == before
    res = run(repo, "render", "--allow-mass-prune")
    assert res.exit_code == 0 and rendered(repo) == [], res.output


def test_pruning_more_than_half_of_the_tree_needs_a_confirmation(repo: Path) -> None:
    assert run(repo, "render").exit_code == 0
    for rel in ("kubernetes/apps/a.yaml.j2", "kubernetes/apps/b.yaml.j2", "kubernetes/flux/c.yaml.j2"):
        (repo / "templates" / rel).unlink()
    res = run(repo, "render")
    assert res.exit_code == 2 and "would prune 3 of the 4 files" in res.output, res.output
    assert len(rendered(repo)) == 4
    (repo / "templates/kubernetes/apps/a.yaml.j2").write_text("name: #{ name }#\n")
    (repo / "templates/kubernetes/apps/b.yaml.j2").write_text("b: 1\n")
    res = run(repo, "render")  # half of them: an ordinary change
    assert res.exit_code == 0 and "1 removed" in res.output, res.output


# --------------------------------------------------------------------------- 11.5: a tidy state directory


def test_a_failed_render_leaves_no_state_directory(tmp_path: Path) -> None:
    root = mini_repo(tmp_path / "repo", templates={"kubernetes/bad.yaml.j2": "#{ name | no_such_filter }#\n"})
    before = snapshot(root)
    res = run(root, "render")
    assert res.exit_code == 2, res.output
    assert snapshot(root) == before and not (root / STATE).exists()


def test_the_state_directory_lets_git_commit_only_the_manifest(repo: Path) -> None:
    subprocess.run(["git", "init", "-q", str(repo / "clone")], check=True)
    clone = repo / "clone"
    root = mini_repo(clone / "r")
    assert run(root, "render").exit_code == 0
    assert (root / STATE / "lock").exists() and (root / STATE / "cache").exists()
    subprocess.run(["git", "-C", str(clone), "add", "-A"], check=True)
    staged = subprocess.run(["git", "-C", str(clone), "diff", "--cached", "--name-only"], check=True,
                            capture_output=True, text=True).stdout.split()
    assert [p for p in staged if f"/{STATE}/" in p] == [f"r/{STATE}/{MANIFEST_FILE}"], staged


# --------------------------------------------------------------------------- 11.7: directory modes


def test_copy_metadata_gives_output_directories_the_template_directory_mode_like_makejinja(tmp_path: Path) -> None:
    def make(dest: Path) -> Path:
        root = mini_repo(dest, extra_settings="copy_metadata = true\n")
        os.chmod(root / "templates/kubernetes/apps", 0o750)
        os.chmod(root / "templates/kubernetes", 0o711)
        return root

    ours = make(tmp_path / "ours")
    assert run(ours, "render").exit_code == 0
    theirs = make(tmp_path / "theirs")
    (theirs / "makejinja.toml").write_text((theirs / "gitops-render.toml").read_text().replace(
        "[gitops-render]", "[makejinja]"))
    (theirs / "gitops-render.toml").unlink()
    proc = subprocess.run([sys.executable, "-m", "makejinja"], cwd=theirs, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for rel in ("kubernetes", "kubernetes/apps", "kubernetes/flux"):
        mine, makejinja = stat.S_IMODE(os.stat(ours / rel).st_mode), stat.S_IMODE(os.stat(theirs / rel).st_mode)
        assert mine == makejinja, (rel, oct(mine), oct(makejinja))
    assert stat.S_IMODE(os.stat(ours / "kubernetes/apps").st_mode) == 0o750
    os.chmod(ours / "templates/kubernetes/apps", 0o755)  # a mode-only change of a template dir is applied
    res = run(ours, "render")
    assert res.exit_code == 0 and stat.S_IMODE(os.stat(ours / "kubernetes/apps").st_mode) == 0o755, res.output
