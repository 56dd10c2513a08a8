"""The write stage, told as an operator's story: render, re-render, prune, crash, recover.

Everything runs on the real filesystem under ``tmp_path``.  Crashes are real:
a child process applies a plan and ``os._exit``s at a hook point chosen by the
test (the hook is an argument of ``apply_plan``; the environment variable that
picks the point is read only by the child script in this file).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

import pytest
from trees import snapshot

from gitops_render.core.errors import DataError, LockError, PathEscapeError, WriteError
from gitops_render.core.fsio import TEMP_MARKER, is_temp_name, temp_name_for
from gitops_render.write import (
    ChangeKind,
    DesiredFile,
    Plan,
    PlannedChange,
    WarningKind,
    apply_plan,
    load_manifest,
    make_plan,
    recover,
)
from gitops_render.write.journal import JOURNAL_FILE, Journal, Phase, Rename
from gitops_render.write.lock import RepoLock
from gitops_render.write.manifest import MANIFEST_FILE, Manifest, sha256_hex
from gitops_render.write.targets import safe_target

P = PurePosixPath
Files = Mapping[str, "bytes | DesiredFile"]


# --------------------------------------------------------------------------- helpers


def temp_files(root: Path) -> list[str]:
    """Staged temp files anywhere under ``root``."""
    return sorted(str(p) for p in root.rglob("*") if is_temp_name(p.name))


def desired(files: Files) -> dict[PurePosixPath, DesiredFile]:
    """Desired map from plain bytes (or ready DesiredFiles)."""
    return {P(k): v if isinstance(v, DesiredFile) else DesiredFile(v) for k, v in files.items()}


class WriteRepo:
    """A cluster repository whose output root is the repo root (like the real layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / ".gitops-render"
        root.mkdir(parents=True, exist_ok=True)

    def plan(self, files: Files, **kw: object) -> Plan:
        return make_plan(self.root, desired(files), load_manifest(self.state), **kw)  # type: ignore[arg-type]

    def render(self, files: Files, **kw: object) -> Plan:
        plan = self.plan(files, **kw)
        apply_plan(plan, self.state)
        return plan

    def write(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def manifest(self) -> Manifest:
        return load_manifest(self.state)


@pytest.fixture
def write_repo(tmp_path: Path) -> WriteRepo:
    """An empty output root for the write stage (not the configured ``repo`` of conftest)."""
    return WriteRepo(tmp_path / "repo")


OLD = {
    ".sops.yaml": b"creation_rules: []\n",
    "kubernetes/flux/cluster/ks.yaml": b"kind: Kustomization\n",
    "kubernetes/apps/default/echo/app/helmrelease.yaml": b"kind: HelmRelease\nname: echo\n",
    "kubernetes/apps/default/echo/ks.yaml": b"kind: Kustomization\nname: echo\n",
    "kubernetes/apps/default/old/app/deploy.yaml": b"kind: Deployment\nname: old\n",
    "kubernetes/apps/default/old/ks.yaml": b"kind: Kustomization\nname: old\n",
    "kubernetes/components/sops/cluster-secrets.sops.yaml": b"ENC[AES256_GCM,data:old]\n",
}
NEW = {
    ".sops.yaml": b"creation_rules: []\n",  # unchanged
    "kubernetes/flux/cluster/ks.yaml": b"kind: Kustomization\nspec: {}\n",  # changed
    "kubernetes/apps/default/echo/app/helmrelease.yaml": b"kind: HelmRelease\nname: echo\n",
    "kubernetes/apps/default/echo/ks.yaml": b"kind: Kustomization\nname: echo\n",
    # kubernetes/apps/default/old/** no longer generated -> pruned with its dirs
    "kubernetes/apps/network/new/app/gateway.yaml": b"kind: Gateway\n",  # added in new dirs
    "kubernetes/components/sops/cluster-secrets.sops.yaml": b"ENC[AES256_GCM,data:new]\n",  # changed secret
}


def expected_tree(files: Files) -> dict[str, bytes]:
    """Files of a rendered tree, without the state dir."""
    return {k: (v.content if isinstance(v, DesiredFile) else v) for k, v in files.items()}


def rendered_files(repo: WriteRepo) -> dict[str, bytes]:
    """Regular files in the repo outside the state dir and .git, staged temp files left out."""
    snap = snapshot(repo.root, skip=())
    return {k: v[2] for k, v in snap.items()  # type: ignore[misc]
            if v[0] == "file" and not k.startswith((".gitops-render/", ".git/"))
            and not is_temp_name(PurePosixPath(k).name)}


# --------------------------------------------------------------------------- plan objects


def test_desired_file_wants_bytes_and_never_shows_content() -> None:
    with pytest.raises(TypeError):
        DesiredFile("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DesiredFile(b"x", mode=0o100000)
    secret = DesiredFile(b"ENC[very-secret-ciphertext]", secret=True)
    assert "very-secret" not in repr(secret)
    change = PlannedChange(P("a.sops.yaml"), ChangeKind.ADDED, b"ENC[very-secret-ciphertext]", None, True)
    assert "very-secret" not in repr(change)
    assert change.digest == sha256_hex(b"ENC[very-secret-ciphertext]")


def test_first_render_plans_every_file_as_added_and_summarises(write_repo: WriteRepo) -> None:
    plan = write_repo.plan(OLD)
    assert [c.kind for c in plan.changes] == [ChangeKind.ADDED] * len(OLD)
    assert plan.summary() == f"{len(OLD)} added, 0 changed, 0 removed, 0 unchanged"
    assert not plan.is_noop
    assert set(plan.manifest.files) == set(OLD)
    assert snapshot(write_repo.root, skip=()) == {}  # planning writes nothing


def test_plan_lists_added_changed_removed_unchanged(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    plan = write_repo.plan(NEW)
    assert [c.path.as_posix() for c in plan.added] == ["kubernetes/apps/network/new/app/gateway.yaml"]
    assert [c.path.as_posix() for c in plan.changed] == ["kubernetes/components/sops/cluster-secrets.sops.yaml",
                                                         "kubernetes/flux/cluster/ks.yaml"]
    assert [c.path.as_posix() for c in plan.removed] == ["kubernetes/apps/default/old/app/deploy.yaml",
                                                         "kubernetes/apps/default/old/ks.yaml"]
    assert len(plan.unchanged) == 3
    assert plan.summary() == "1 added, 2 changed, 2 removed, 3 unchanged"
    assert all(c.content is None for c in plan.unchanged + plan.removed)
    assert plan.manifest == Manifest({k: sha256_hex(v) for k, v in NEW.items()})


def test_manifest_text_is_deterministic_sorted_and_newline_terminated() -> None:
    a = Manifest({"b/z.yaml": sha256_hex(b"z"), "a.yaml": sha256_hex(b"a")})
    b = Manifest({"a.yaml": sha256_hex(b"a"), "b/z.yaml": sha256_hex(b"z")})
    assert a.dump() == b.dump()
    doc = json.loads(a.dump())
    assert doc["generator"] == "gitops-render" and doc["version"] == 1
    assert list(doc["files"]) == ["a.yaml", "b/z.yaml"]
    assert a.dump().endswith(b"}\n") and b"\n  \"files\": {\n    \"a.yaml\"" in a.dump()
    assert Manifest.parse(a.dump(), "m.json") == a


def test_missing_manifest_is_empty_and_a_broken_one_is_reported_with_a_fix(tmp_path: Path) -> None:
    assert Manifest.load(tmp_path / "nope.json") == Manifest()
    broken = tmp_path / "manifest.json"
    broken.write_text('{\n<<<<<<< HEAD\n')
    with pytest.raises(DataError) as err:
        Manifest.load(broken)
    assert "manifest.json:2" in str(err.value) and "merge conflicts" in str(err.value)
    broken.write_text(json.dumps({"version": 1, "generator": "gitops-render",
                                  "files": {"../../etc/passwd": sha256_hex(b"")}}))
    with pytest.raises(DataError, match=r"\.\."):
        Manifest.load(broken)


# --------------------------------------------------------------------------- apply


def test_apply_produces_exactly_the_rendered_tree_and_the_manifest(write_repo: WriteRepo) -> None:
    result_plan = write_repo.render(OLD)
    assert rendered_files(write_repo) == expected_tree(OLD)
    assert write_repo.manifest() == result_plan.manifest
    assert (write_repo.state / MANIFEST_FILE).read_bytes() == result_plan.manifest.dump()
    assert not (write_repo.state / JOURNAL_FILE).exists()
    assert temp_files(write_repo.root) == []

    write_repo.render(NEW)
    assert rendered_files(write_repo) == expected_tree(NEW)
    assert not (write_repo.root / "kubernetes/apps/default/old").exists()
    assert write_repo.manifest() == Manifest({k: sha256_hex(v) for k, v in NEW.items()})


def test_apply_result_reports_what_happened(write_repo: WriteRepo) -> None:
    result = apply_plan(write_repo.plan(OLD), write_repo.state)
    assert len(result.written) == len(OLD) and result.manifest_written
    assert P("kubernetes") in result.created_dirs and P("kubernetes/apps/default/old/app") in result.created_dirs
    result = apply_plan(write_repo.plan(NEW), write_repo.state)
    assert set(result.removed) == {P("kubernetes/apps/default/old/app/deploy.yaml"),
                                   P("kubernetes/apps/default/old/ks.yaml")}
    assert set(result.removed_dirs) == {P("kubernetes/apps/default/old/app"), P("kubernetes/apps/default/old")}


def test_rerender_with_nothing_changed_touches_nothing(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    before = {p: os.stat(p) for p in write_repo.root.rglob("*")}
    time.sleep(0.02)
    plan = write_repo.plan(OLD)
    assert plan.is_noop and plan.summary() == f"0 added, 0 changed, 0 removed, {len(OLD)} unchanged"
    result = apply_plan(plan, write_repo.state)
    assert result.written == () and not result.manifest_written
    after = {p: os.stat(p) for p in write_repo.root.rglob("*")}
    assert before.keys() == after.keys()
    for path, st in before.items():
        assert (after[path].st_ino, after[path].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), path


def test_unchanged_files_keep_inode_and_mtime_while_others_are_replaced(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    kept = os.stat(write_repo.root / ".sops.yaml")
    changed = os.stat(write_repo.root / "kubernetes/flux/cluster/ks.yaml")
    time.sleep(0.02)
    write_repo.render(NEW)
    now_kept = os.stat(write_repo.root / ".sops.yaml")
    assert (now_kept.st_ino, now_kept.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert os.stat(write_repo.root / "kubernetes/flux/cluster/ks.yaml").st_ino != changed.st_ino  # atomic replace


def test_modes_given_are_applied_existing_modes_kept_new_files_follow_umask(write_repo: WriteRepo) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    write_repo.render({"script.sh": DesiredFile(b"#!/bin/sh\n", mode=0o755), "plain.yaml": b"a: 1\n"})
    assert stat.S_IMODE(os.stat(write_repo.root / "script.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(write_repo.root / "plain.yaml").st_mode) == 0o666 & ~umask

    os.chmod(write_repo.root / "plain.yaml", 0o600)  # the operator tightened it
    write_repo.render({"script.sh": DesiredFile(b"#!/bin/sh\n", mode=0o755), "plain.yaml": b"a: 2\n"})
    assert stat.S_IMODE(os.stat(write_repo.root / "plain.yaml").st_mode) == 0o600  # mode None keeps it

    plan = write_repo.plan({"script.sh": DesiredFile(b"#!/bin/sh\n", mode=0o700), "plain.yaml": b"a: 2\n"})
    assert [c.path.as_posix() for c in plan.changed] == ["script.sh"]  # mode-only change
    apply_plan(plan, write_repo.state)
    assert stat.S_IMODE(os.stat(write_repo.root / "script.sh").st_mode) == 0o700


# --------------------------------------------------------------------------- pruning


def test_pruning_removes_what_we_no_longer_generate_and_leaves_hand_written_files(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    notes = write_repo.write("kubernetes/apps/default/NOTES.md", b"my notes\n")
    mine = write_repo.write("kubernetes/apps/default/old/app/local-patch.yaml", b"mine\n")
    write_repo.render(NEW)
    assert notes.read_bytes() == b"my notes\n" and mine.read_bytes() == b"mine\n"
    assert not (write_repo.root / "kubernetes/apps/default/old/app/deploy.yaml").exists()
    assert not (write_repo.root / "kubernetes/apps/default/old/ks.yaml").exists()
    assert (write_repo.root / "kubernetes/apps/default/old/app").is_dir()  # holds a file we never wrote

    mine.unlink()  # the operator's own deletion empties old/app: not ours to clean up (git ignores it)
    write_repo.render({})  # everything pruned: every directory emptied *by pruning* goes too
    assert rendered_files(write_repo) == {"kubernetes/apps/default/NOTES.md": b"my notes\n"}
    assert not any((write_repo.root / "kubernetes/apps/default/old/app").iterdir())
    assert not (write_repo.root / "kubernetes/flux").exists()
    assert not (write_repo.root / "kubernetes/apps/default/echo").exists()
    assert write_repo.root.is_dir() and write_repo.state.is_dir()
    assert write_repo.manifest() == Manifest()


def test_empty_directories_that_were_empty_before_are_left_alone(write_repo: WriteRepo) -> None:
    (write_repo.root / "kubernetes/apps/empty-by-hand").mkdir(parents=True)
    write_repo.render({"kubernetes/apps/a.yaml": b"a\n"})
    write_repo.render({})
    assert (write_repo.root / "kubernetes/apps/empty-by-hand").is_dir()


def test_files_we_never_generated_are_never_touched(write_repo: WriteRepo) -> None:
    stray = write_repo.write("kubernetes/apps/stray.yaml", b"stray\n")
    readme = write_repo.write("README.md", b"# cluster\n")
    git_head = write_repo.write(".git/HEAD", b"ref: refs/heads/main\n")
    write_repo.render(OLD)
    write_repo.render({})
    assert stray.read_bytes() == b"stray\n" and readme.read_bytes() == b"# cluster\n"
    assert git_head.read_bytes() == b"ref: refs/heads/main\n"


def test_hand_edited_generated_file_that_is_no_longer_generated_is_kept_with_a_conflict(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    write_repo.write("kubernetes/apps/default/old/ks.yaml", b"kind: Kustomization\nname: old\n# tuned by hand\n")
    plan = write_repo.plan(NEW)
    assert [c.path.as_posix() for c in plan.removed] == ["kubernetes/apps/default/old/app/deploy.yaml"]
    [conflict] = plan.conflicts
    assert conflict.path == P("kubernetes/apps/default/old/ks.yaml") and conflict.kind is WarningKind.EDITED_KEPT
    assert "edited by hand" in str(conflict) and "manifest.json" in str(conflict)
    assert plan.summary().endswith(", 1 kept (edited by hand)")
    apply_plan(plan, write_repo.state)
    assert write_repo.read("kubernetes/apps/default/old/ks.yaml").endswith(b"# tuned by hand\n")
    assert "kubernetes/apps/default/old/ks.yaml" in write_repo.manifest()  # still ours: the warning repeats

    assert write_repo.plan(NEW).conflicts  # next run: same warning
    write_repo.write("kubernetes/apps/default/old/ks.yaml", OLD["kubernetes/apps/default/old/ks.yaml"])  # reverted
    write_repo.render(NEW)
    assert not (write_repo.root / "kubernetes/apps/default/old").exists()
    assert "kubernetes/apps/default/old/ks.yaml" not in write_repo.manifest()


def test_operator_deleting_a_kept_file_resolves_the_conflict(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    write_repo.write("kubernetes/apps/default/old/ks.yaml", b"edited\n")
    write_repo.render(NEW)
    (write_repo.root / "kubernetes/apps/default/old/ks.yaml").unlink()
    plan = write_repo.plan(NEW)
    assert not plan.conflicts and plan.manifest.digest_of("kubernetes/apps/default/old/ks.yaml") is None


def test_hand_edited_file_still_generated_is_overwritten_with_a_warning(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    write_repo.write(".sops.yaml", b"creation_rules: [edited]\n")
    plan = write_repo.plan(OLD)
    [warning] = plan.warnings
    assert warning.kind is WarningKind.EDITED_OVERWRITTEN and not warning.is_conflict
    apply_plan(plan, write_repo.state)
    assert write_repo.read(".sops.yaml") == OLD[".sops.yaml"]


def test_prune_off_keeps_old_files_and_remembers_them_for_a_later_prune(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    plan = write_repo.render(NEW, prune=False)
    assert not plan.removed
    assert {w.kind for w in plan.warnings} == {WarningKind.PRUNE_DISABLED}
    assert (write_repo.root / "kubernetes/apps/default/old/ks.yaml").exists()
    assert "kubernetes/apps/default/old/ks.yaml" in write_repo.manifest()
    write_repo.render(NEW)
    assert not (write_repo.root / "kubernetes/apps/default/old").exists()


def test_keep_leaves_existing_outputs_exactly_as_they_are(write_repo: WriteRepo) -> None:
    write_repo.render({"a.yaml": b"generated\n"})
    write_repo.write("a.yaml", b"operator version\n")
    write_repo.write("b.yaml", b"never ours\n")
    plan = write_repo.plan({"a.yaml": b"new\n", "b.yaml": b"new\n"}, keep={P("a.yaml"), P("b.yaml")})
    assert [c.kind for c in plan.changes] == [ChangeKind.UNCHANGED, ChangeKind.UNCHANGED]
    assert plan.manifest.digest_of("a.yaml") == sha256_hex(b"operator version\n")
    assert "b.yaml" not in plan.manifest  # never claimed: it is not ours to prune
    apply_plan(plan, write_repo.state)
    assert write_repo.read("a.yaml") == b"operator version\n" and write_repo.read("b.yaml") == b"never ours\n"
    plan = write_repo.plan({"c.yaml": b"c\n"}, keep={P("c.yaml")})  # nothing on disk to keep: written
    assert [c.kind for c in plan.changes if c.path == P("c.yaml")] == [ChangeKind.ADDED]


def test_manifest_entry_of_a_generated_file_that_became_a_directory_is_dropped(write_repo: WriteRepo) -> None:
    write_repo.render({"kubernetes/x": b"x\n"})
    (write_repo.root / "kubernetes/x").unlink()
    (write_repo.root / "kubernetes/x").mkdir()
    write_repo.write("kubernetes/x/own.yaml", b"own\n")
    plan = write_repo.plan({})
    assert [w.kind for w in plan.conflicts] == [WarningKind.NOT_A_FILE]
    apply_plan(plan, write_repo.state)
    assert write_repo.read("kubernetes/x/own.yaml") == b"own\n" and write_repo.manifest() == Manifest()


# --------------------------------------------------------------------------- path safety


@pytest.mark.parametrize("bad", ["../escape.yaml", "kubernetes/../../escape.yaml", "/etc/passwd", "a\x00b", "", "."])
def test_paths_that_could_leave_the_output_root_are_refused(write_repo: WriteRepo, bad: str) -> None:
    with pytest.raises(PathEscapeError):
        safe_target(write_repo.root, bad)
    with pytest.raises(PathEscapeError):
        write_repo.plan({bad: b"x"})
    assert snapshot(write_repo.root, skip=()) == {}


def test_symlink_inside_the_output_pointing_outside_is_refused(write_repo: WriteRepo, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (write_repo.root / "kubernetes").mkdir()
    (write_repo.root / "kubernetes/apps").symlink_to(outside)
    with pytest.raises(PathEscapeError, match="symlink") as err:
        write_repo.plan({"kubernetes/apps/x.yaml": b"x"})
    assert err.value.hint and "real directory" in err.value.hint
    (outside / "target.yaml").write_bytes(b"precious\n")
    (write_repo.root / "kubernetes/link.yaml").symlink_to(outside / "target.yaml")
    with pytest.raises(PathEscapeError):
        write_repo.plan({"kubernetes/link.yaml": b"overwrite\n"})
    assert (outside / "target.yaml").read_bytes() == b"precious\n" and list(outside.iterdir()) == [outside / "target.yaml"]


def test_pruning_never_follows_a_symlink_out_of_the_output(write_repo: WriteRepo, tmp_path: Path) -> None:
    write_repo.render({"kubernetes/apps/x.yaml": b"x\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_bytes(b"x\n")  # same bytes, so it would look prunable
    (write_repo.root / "kubernetes/apps/x.yaml").unlink()
    (write_repo.root / "kubernetes/apps").rmdir()
    (write_repo.root / "kubernetes/apps").symlink_to(outside)
    with pytest.raises(PathEscapeError):
        write_repo.plan({})
    assert (outside / "x.yaml").read_bytes() == b"x\n"


def test_symlinks_that_stay_inside_the_output_are_fine(write_repo: WriteRepo) -> None:
    (write_repo.root / "kubernetes/apps-v2").mkdir(parents=True)
    (write_repo.root / "kubernetes/apps").symlink_to("apps-v2")
    write_repo.render({"kubernetes/apps/x.yaml": b"x\n"})
    assert (write_repo.root / "kubernetes/apps-v2/x.yaml").read_bytes() == b"x\n"


def test_a_symlinked_output_directory_must_stay_inside_the_repository(tmp_path: Path) -> None:
    repo_root = tmp_path / "repo"
    elsewhere = tmp_path / "elsewhere"
    repo_root.mkdir()
    elsewhere.mkdir()
    (repo_root / "out").symlink_to(elsewhere)
    with pytest.raises(PathEscapeError, match="outside the repository"):
        make_plan(repo_root / "out", desired({"x.yaml": b"x"}), Manifest(), repo_root=repo_root)
    with pytest.raises(PathEscapeError):
        safe_target(repo_root / "out", "x.yaml", repo_root=repo_root)
    (repo_root / "real-out").mkdir()
    (repo_root / "inside").symlink_to("real-out")
    assert make_plan(repo_root / "inside", desired({"x.yaml": b"x"}), Manifest(), repo_root=repo_root).added


def test_git_and_state_dir_are_never_written_nor_pruned(write_repo: WriteRepo) -> None:
    for bad in (".git/config", ".gitops-render/manifest.json"):
        with pytest.raises(PathEscapeError, match="never touches"):
            write_repo.plan({bad: b"x"})
    git_head = write_repo.write(".git/HEAD", b"ref\n")
    write_repo.state.mkdir()
    (write_repo.state / MANIFEST_FILE).write_bytes(Manifest({".git/HEAD": sha256_hex(b"ref\n")}).dump())
    plan = write_repo.plan({})
    assert not plan.removed and [w.kind for w in plan.warnings] == [WarningKind.PROTECTED]
    apply_plan(plan, write_repo.state)
    assert git_head.read_bytes() == b"ref\n"


def test_apply_refuses_a_plan_that_writes_into_the_state_dir(write_repo: WriteRepo) -> None:
    plan = make_plan(write_repo.root, desired({".gitops-render/evil": b"x"}), Manifest(), protected=frozenset())
    with pytest.raises(PathEscapeError, match="state directory"):
        apply_plan(plan, write_repo.state)
    assert not (write_repo.state / "evil").exists()


def test_names_reserved_for_staged_files_are_refused(write_repo: WriteRepo) -> None:
    with pytest.raises(WriteError, match="reserved"):
        write_repo.plan({f"kubernetes/{temp_name_for('x.yaml')}": b"x"})


# --------------------------------------------------------------------------- file <-> directory


def test_a_file_where_a_directory_is_is_a_clear_error_and_nothing_is_written(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    before = snapshot(write_repo.root, skip=())
    files = dict(NEW)
    files["kubernetes/apps/default/echo"] = b"now a file\n"
    files.pop("kubernetes/apps/default/echo/ks.yaml")
    files.pop("kubernetes/apps/default/echo/app/helmrelease.yaml")
    with pytest.raises(WriteError, match="is a directory") as err:
        write_repo.plan(files)
    assert "nothing was written" in (err.value.hint or "")
    assert snapshot(write_repo.root, skip=()) == before


def test_a_directory_where_a_file_is_is_a_clear_error(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    before = snapshot(write_repo.root, skip=())
    with pytest.raises(WriteError, match="is a file"):
        write_repo.plan({".sops.yaml/inner.yaml": b"x\n"})
    with pytest.raises(WriteError, match="both a file"):
        write_repo.plan({"a": b"x", "a/b": b"y"})
    assert snapshot(write_repo.root, skip=()) == before


# --------------------------------------------------------------------------- failures before apply


def _count_calls(monkeypatch: pytest.MonkeyPatch, target: object, name: str, fail_at: int | None) -> list[int]:
    """Wrap ``target.name``; raise OSError(ENOSPC) on call number ``fail_at`` (1-based)."""
    real = getattr(target, name)
    calls = [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if fail_at is not None and calls[0] == fail_at:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
    return calls


@pytest.mark.parametrize("func", ["fsync", "replace", "write", "mkdir"])
def test_a_failure_at_any_call_either_leaves_the_tree_untouched_or_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, func: str) -> None:
    """Fail the Nth os.<func> call for every N of an apply; the operator never sees a half tree."""
    probe = WriteRepo(tmp_path / "probe")
    probe.render(OLD)
    with monkeypatch.context() as m:
        calls = _count_calls(m, os, func, None)
        probe.render(NEW)
    total = calls[0]
    assert total > 0
    untouched = recovered = completed = 0
    for n in range(1, total + 1):
        repo = WriteRepo(tmp_path / f"{func}-{n}")
        repo.render(OLD)
        before = snapshot(repo.root, skip=())
        plan = repo.plan(NEW)
        with monkeypatch.context() as m:
            _count_calls(m, os, func, n)
            try:
                apply_plan(plan, repo.state)
            except WriteError as exc:
                err = exc
            else:  # a harmless failure (best-effort final fsync, mkdir of an existing dir)
                assert rendered_files(repo) == expected_tree(NEW)
                assert temp_files(repo.root) == [] and not (repo.state / JOURNAL_FILE).exists()
                completed += 1
                continue
        assert "No space left on device" in str(err)
        if (repo.state / JOURNAL_FILE).exists():  # failed after the point of no return
            assert "run gitops-render again" in (err.hint or "")
            assert recover(repo.state, repo.root) is True
            assert rendered_files(repo) == expected_tree(NEW)
            assert repo.manifest() == plan.manifest
            recovered += 1
        else:
            assert "nothing was changed" in str(err)
            assert snapshot(repo.root, skip=()) == before, f"tree changed after failing os.{func} call {n}"
            untouched += 1
        assert temp_files(repo.root) == []
        assert not (repo.state / JOURNAL_FILE).exists()
    assert untouched > 0 and completed <= 1
    print(f"os.{func}: {total} calls: {untouched} failures left the tree untouched, "
          f"{recovered} were completed by recover, {completed} harmless")


def test_failure_while_staging_the_third_file_leaves_no_trace(write_repo: WriteRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    import gitops_render.write.apply as write_mod

    write_repo.render(OLD)
    before = snapshot(write_repo.root, skip=())
    real = write_mod.write_new_file
    seen = [0]

    def flaky(path: Path, data: bytes, mode: int | None) -> None:
        seen[0] += 1
        if seen[0] == 3:
            real(path, data[: len(data) // 2], mode)  # half a file is on disk ...
            raise OSError(5, "Input/output error")  # ... when the disk gives up
        real(path, data, mode)

    monkeypatch.setattr(write_mod, "write_new_file", flaky)
    with pytest.raises(WriteError, match="Input/output error"):
        apply_plan(write_repo.plan(NEW), write_repo.state)
    assert snapshot(write_repo.root, skip=()) == before
    assert temp_files(write_repo.root) == []


def test_staging_never_touches_the_output_tree(write_repo: WriteRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged files live in the state dir; new directories are made only after the point of no return."""
    import gitops_render.write.apply as write_mod

    write_repo.render(OLD)
    before = snapshot(write_repo.root, skip=())
    outputs_before = {k: v for k, v in before.items() if not k.startswith(".gitops-render")}
    plan = write_repo.plan(NEW)
    real = write_mod.write_new_file
    seen: list[Path] = []

    def fail_on_manifest(path: Path, data: bytes, mode: int | None) -> None:
        seen.append(path)
        if path.name.startswith(".manifest.json"):  # the last staged file: everything else is staged
            now = snapshot(write_repo.root, skip=())
            assert {k: v for k, v in now.items() if not k.startswith(".gitops-render")} == outputs_before
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(write_mod, "write_new_file", fail_on_manifest)
    with pytest.raises(WriteError, match="nothing was changed"):
        apply_plan(plan, write_repo.state)
    assert len(seen) == 4 and all(p.parent == write_repo.state for p in seen)
    assert not (write_repo.root / "kubernetes/apps/network").exists()
    assert snapshot(write_repo.root, skip=()) == before


def test_apply_refuses_to_start_while_an_interrupted_write_is_pending(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    (write_repo.state / JOURNAL_FILE).write_bytes(
        Journal(Phase.STAGING, str(write_repo.root.resolve())).dump())
    with pytest.raises(WriteError, match="interrupted"):
        apply_plan(write_repo.plan(NEW), write_repo.state)


def test_a_pruned_file_edited_between_plan_and_apply_aborts_cleanly(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    plan = write_repo.plan(NEW)
    write_repo.write("kubernetes/apps/default/old/ks.yaml", b"edited meanwhile\n")
    before = snapshot(write_repo.root, skip=())
    with pytest.raises(WriteError, match="changed while"):
        apply_plan(plan, write_repo.state)
    assert snapshot(write_repo.root, skip=()) == before


# --------------------------------------------------------------------------- crash + recovery


CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path, PurePosixPath
    from gitops_render.write import DesiredFile, apply_plan, load_manifest, make_plan

    root, state, spec = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
    point, _, index = os.environ["CRASH_AT"].partition(":")  # read by this test script only

    def hook(at, i):
        if at == point and i == int(index):
            os._exit(77)

    files = {PurePosixPath(k): DesiredFile(v.encode()) for k, v in spec.items()}
    apply_plan(make_plan(root, files, load_manifest(state)), state, hook=hook)
""")


def crash_apply(write_repo: WriteRepo, files: Mapping[str, bytes], at: str) -> int:
    """Apply ``files`` in a child process that dies at hook point ``at`` ("renamed:2")."""
    spec = write_repo.root.parent / "spec.json"
    spec.write_text(json.dumps({k: v.decode() for k, v in files.items()}))
    script = write_repo.root.parent / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(write_repo.root), str(write_repo.state), str(spec)],
                          env={**os.environ, "CRASH_AT": at}, capture_output=True, timeout=60)
    assert proc.returncode in (0, 77), proc.stderr.decode()
    return proc.returncode


def test_crash_while_staging_is_rolled_back_to_the_old_tree(write_repo: WriteRepo) -> None:
    write_repo.render(OLD)
    before = snapshot(write_repo.root, skip=())
    assert crash_apply(write_repo, NEW, "staged:1") == 77
    assert temp_files(write_repo.root)  # the crash left staged files behind ...
    assert temp_files(write_repo.root) == temp_files(write_repo.state)  # ... in the state dir only
    journal = Journal.load(write_repo.state / JOURNAL_FILE)
    assert journal is not None and journal.phase is Phase.STAGING
    assert rendered_files(write_repo) == expected_tree(OLD)  # targets untouched
    assert recover(write_repo.state, write_repo.root) is True
    assert snapshot(write_repo.root, skip=()) == before
    assert recover(write_repo.state, write_repo.root) is False  # idempotent


def test_attack_sigkill_while_staging_leaves_no_staged_file_in_the_output_tree(write_repo: WriteRepo) -> None:
    """A commit made right after a kill (before any next run) carries neither a temp file nor half a tree."""
    write_repo.render(OLD)
    for at in ("staged:0", "staged:2", "journal:0"):
        assert crash_apply(write_repo, NEW, at) == 77
        outside_state = [p for p in temp_files(write_repo.root) if not p.startswith(str(write_repo.state))]
        assert outside_state == [], (at, outside_state)
        recover(write_repo.state, write_repo.root)
        write_repo.render(OLD)


N_RENAMES = 3  # added + 2 changed files of OLD -> NEW


@pytest.mark.parametrize("at", ["journal:0", "renamed:0", "renamed:1", "renamed:2", "removed:0", "removed:1",
                                "rmdir:0", "manifest:0"])
def test_crash_after_the_journal_is_completed_by_the_next_run(write_repo: WriteRepo, at: str) -> None:
    write_repo.render(OLD)
    assert crash_apply(write_repo, NEW, at) == 77
    journal = Journal.load(write_repo.state / JOURNAL_FILE)
    assert journal is not None and journal.phase is Phase.APPLY and len(journal.renames) == N_RENAMES
    assert recover(write_repo.state, write_repo.root) is True
    assert rendered_files(write_repo) == expected_tree(NEW)
    assert write_repo.manifest() == Manifest({k: sha256_hex(v) for k, v in NEW.items()})
    assert temp_files(write_repo.root) == [] and not (write_repo.state / JOURNAL_FILE).exists()
    assert not (write_repo.root / "kubernetes/apps/default/old").exists()
    assert recover(write_repo.state, write_repo.root) is False
    assert write_repo.plan(NEW).is_noop


def test_recovery_accepts_targets_already_in_place_but_refuses_to_guess(write_repo: WriteRepo) -> None:
    write_repo.render({"a.yaml": b"old a\n", "b.yaml": b"old b\n"})
    write_repo.write("a.yaml", b"new a\n")  # renamed before the crash; staged copy gone
    journal = Journal(Phase.APPLY, str(write_repo.root.resolve()), renames=(
        Rename(P(temp_name_for("a.yaml")), P("a.yaml"), sha256_hex(b"new a\n")),
        Rename(P(temp_name_for("b.yaml")), P("b.yaml"), sha256_hex(b"new b\n")),  # lost: cannot finish
    ))
    journal.save(write_repo.state / JOURNAL_FILE)
    with pytest.raises(WriteError, match="cannot be completed") as err:
        recover(write_repo.state, write_repo.root)
    assert "b.yaml" in str(err.value) and "a.yaml:" not in str(err.value)
    assert "delete" in (err.value.hint or "")
    assert (write_repo.state / JOURNAL_FILE).exists()  # kept until the operator decides


def test_recovery_refuses_a_journal_of_another_tree(write_repo: WriteRepo, tmp_path: Path) -> None:
    write_repo.state.mkdir()
    Journal(Phase.APPLY, str(tmp_path / "elsewhere")).save(write_repo.state / JOURNAL_FILE)
    with pytest.raises(WriteError, match="was for"):
        recover(write_repo.state, write_repo.root)


def test_a_corrupt_journal_is_reported_not_guessed(write_repo: WriteRepo) -> None:
    write_repo.state.mkdir()
    (write_repo.state / JOURNAL_FILE).write_text("{ half")
    with pytest.raises(DataError, match="journal"):
        recover(write_repo.state, write_repo.root)


def test_a_tampered_journal_cannot_rename_outside_the_tree(write_repo: WriteRepo, tmp_path: Path) -> None:
    write_repo.state.mkdir()
    doc = json.loads(Journal(Phase.APPLY, str(write_repo.root.resolve())).dump())
    doc["removals"] = [{"path": "../victim.txt", "sha256": sha256_hex(b"v")}]
    (tmp_path / "victim.txt").write_bytes(b"v")
    (write_repo.state / JOURNAL_FILE).write_text(json.dumps(doc))
    with pytest.raises(DataError):
        recover(write_repo.state, write_repo.root)
    assert (tmp_path / "victim.txt").exists()


def test_attack_hand_written_file_with_a_staging_name_is_never_deleted(write_repo: WriteRepo) -> None:
    """Only the state dir holds staging files; a file in the tree with a staging-like name is the operator's."""
    write_repo.render(OLD)
    stale_state = write_repo.write(f".gitops-render/{temp_name_for('journal.json')}", b"{")
    in_tree = write_repo.write(f"kubernetes/flux/cluster/{temp_name_for('ks.yaml')}", b"hand-written\n")
    lookalike = write_repo.write(f".gitops-render/.ks.yaml{TEMP_MARKER}not-hex", b"mine")
    assert recover(write_repo.state, write_repo.root) is True
    assert not stale_state.exists() and lookalike.exists()
    assert in_tree.read_bytes() == b"hand-written\n"
    assert recover(write_repo.state, write_repo.root) is False


# --------------------------------------------------------------------------- lock


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gitops_render.write.lock import RepoLock
    with RepoLock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def hold_lock(state: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Start a process holding the repo lock for ``seconds``; yields once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(state), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_is_refused_with_the_holders_pid(write_repo: WriteRepo) -> None:
    for proc in hold_lock(write_repo.state, 30):
        assert (write_repo.state / "lock").read_text().strip() == str(proc.pid)
        started = time.monotonic()
        with pytest.raises(LockError) as err, RepoLock(write_repo.state, timeout=0.3):
            pass
        waited = time.monotonic() - started
        assert 0.25 <= waited < 5
        message = str(err.value)
        assert f"pid {proc.pid}" in message and str(write_repo.root.resolve()) in message and "waited 0.3s" in message
        assert "released automatically" in message
        with pytest.raises(LockError, match="not waiting"):
            RepoLock(write_repo.state, timeout=0).acquire()


def test_a_second_run_waits_for_the_first_to_finish(write_repo: WriteRepo) -> None:
    for _proc in hold_lock(write_repo.state, 0.5):
        started = time.monotonic()
        with RepoLock(write_repo.state, timeout=20) as lock:
            assert lock.held and (write_repo.state / "lock").read_text().strip() == str(os.getpid())
        assert 0.2 < time.monotonic() - started < 15
    assert (write_repo.state / "lock").read_text() == ""  # released: pid cleared, file kept


def test_a_killed_holder_never_leaves_a_stale_lock(write_repo: WriteRepo) -> None:
    for proc in hold_lock(write_repo.state, 30):
        proc.kill()
        proc.wait()
        with RepoLock(write_repo.state, timeout=5):
            pass


# --------------------------------------------------------------------------- secrets stay secret


def test_secret_ciphertext_never_appears_in_plan_reprs_or_errors(write_repo: WriteRepo) -> None:
    cipher = b"ENC[AES256_GCM,data:c2VjcmV0LXZhbHVl,type:str]\n"
    plan = write_repo.plan({"kubernetes/s.sops.yaml": DesiredFile(cipher, secret=True)})
    assert b"c2VjcmV0" not in repr(plan).encode()
    assert plan.changes[0].secret
    apply_plan(plan, write_repo.state)
    assert write_repo.read("kubernetes/s.sops.yaml") == cipher
    assert write_repo.plan({"kubernetes/s.sops.yaml": DesiredFile(cipher, secret=True)}).is_noop

