"""Hardening: an operator's repo holds the keys to their cluster, and the tool that rewrites it
must never lose work, leak a secret or corrupt the tree, whatever happens.

Each test tells one story: something hostile or broken happens (a symlink pointing out of the
repo, a second run at the same time, a template that trips over a secret, a broken sops,
kustomize or kubeconform, a huge tree) and the operator gets either the right tree or one clear
error with nothing written. Real sops/age/kubeconform/kustomize are used throughout; the only
exceptions are the deliberately broken executables of the tool-failure tests.

The fuzzed cluster.yaml lives in ``test_fuzz.py``, the CLI-level SIGKILL test in ``test_crash_cli.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import PROJECT, make_age_key
from operator_repo import configured_repo, set_values
from trees import files_holding, snapshot

from gitops_render.app.pipeline import RunOptions, run_render
from gitops_render.cli import cli
from gitops_render.core.errors import LockError, PathEscapeError
from gitops_render.write import DesiredFile, make_plan
from gitops_render.write.journal import JOURNAL_FILE
from gitops_render.write.manifest import Manifest

sys.path.insert(0, str(PROJECT / "bench"))
from synth import make_repo

GIB = 1024 ** 3
SECRET_FIELDS = ("litellm_master_key", "litellm_salt_key", "dragonfly_litellm_password")


# --------------------------------------------------------------------------- helpers


def cli_run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--root", str(root)], catch_exceptions=False)


def mini_repo(root: Path, templates: dict[str, str], output: str = "out") -> Path:
    """A tiny repo with no schema and no secrets, for path-safety stories."""
    (root / "templates").mkdir(parents=True)
    (root / "gitops-render.toml").write_text(textwrap.dedent(f"""\
        [gitops-render]
        inputs = ["templates"]
        output = "{output}"
        data = ["cluster.yaml"]
        jinja_suffix = ".j2"

        [gitops-render.delimiter]
        block_start = "{{%"
        block_end = "%}}"
        variable_start = "{{{{"
        variable_end = "}}}}"
        comment_start = "{{#"
        comment_end = "#}}"
        """))
    (root / "cluster.yaml").write_text("name: demo\n")
    for rel, text in templates.items():
        (root / "templates" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "templates" / rel).write_text(text)
    return root


# --------------------------------------------------------------------------- hostile templates and paths


@pytest.mark.parametrize("name", ["../escaped.yaml", "kubernetes/../../escaped.yaml", "/tmp/escaped.yaml",
                                  "kubernetes/a\x00b.yaml", ".git/hooks/post-checkout",
                                  ".gitops-render/manifest.json"])
def test_a_rendered_file_name_that_would_escape_the_output_is_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with pytest.raises(PathEscapeError):
        make_plan(root, {PurePosixPath(name) if "\x00" not in name else name: DesiredFile(b"x: 1\n")},
                  Manifest(), repo_root=root)
    assert not (tmp_path / "escaped.yaml").exists()


def test_a_tampered_manifest_cannot_prune_files_outside_the_output(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the operator's file\n")
    from gitops_render.write.manifest import sha256_hex
    with pytest.raises(PathEscapeError):
        make_plan(root, {}, Manifest({"../victim.txt": sha256_hex(victim.read_bytes())}), repo_root=root)
    assert victim.read_text() == "the operator's file\n"


def test_a_symlink_in_the_output_tree_pointing_outside_is_not_written_through(repo: Path, tmp_path: Path) -> None:
    # someone replaced kubernetes/apps/ai-system by a link to a directory outside the repo
    outside = tmp_path / "outside-ai-system"
    (repo / "kubernetes/apps/ai-system").rename(outside)
    (repo / "kubernetes/apps/ai-system").symlink_to(outside)
    before_outside = snapshot(outside)
    set_values(repo, litellm_replicas=2)
    before = snapshot(repo)

    res = cli_run(repo, "configure")

    assert res.exit_code == 2, res.output
    assert "symlink" in res.output and str(outside) in res.output, res.output
    assert snapshot(outside) == before_outside
    assert snapshot(repo) == before


def test_a_symlinked_output_directory_is_not_followed_out_of_the_repo(tmp_path: Path) -> None:
    root = mini_repo(tmp_path / "repo", {"app.yaml.j2": "name: {{ name }}\n"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "out").symlink_to(elsewhere)

    res = cli_run(root, "render")

    assert res.exit_code == 2, res.output
    assert "outside the repository" in res.output
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("link", ["file", "directory", "included"])
def test_a_symlink_in_the_template_tree_pointing_outside_is_not_followed(tmp_path: Path, link: str) -> None:
    secret_file = tmp_path / "etc" / "passwd"
    secret_file.parent.mkdir()
    secret_file.write_text("root:TOP-SECRET-OUTSIDE:0:0\n")
    (tmp_path / "etc" / "app.yaml.j2").write_text("stolen: TOP-SECRET-OUTSIDE\n")
    root = mini_repo(tmp_path / "repo", {"app.yaml.j2": "name: {{ name }}\n",
                                         "inc.yaml.j2": '{% include "linked/passwd" %}\n' if link == "included" else
                                         "x: 1\n"})
    if link == "file":
        (root / "templates" / "passwd").symlink_to(secret_file)
    elif link == "directory":
        (root / "templates" / "etc").symlink_to(secret_file.parent, target_is_directory=True)
    else:
        (root / "templates" / "linked").mkdir()
        (root / "templates" / "linked" / "passwd.partial").symlink_to(secret_file)
        (root / "templates" / "inc.yaml.j2").write_text('{% include "linked/passwd.partial" %}\n')

    res = cli_run(root, "render")

    assert res.exit_code == 2, res.output
    assert "symlink" in res.output and "outside the template inputs" in res.output, res.output
    assert not (root / "out").exists()
    assert files_holding(root, "TOP-SECRET-OUTSIDE") == []


def test_a_symlink_between_template_files_inside_the_tree_still_works(tmp_path: Path) -> None:
    root = mini_repo(tmp_path / "repo", {"a/app.yaml.j2": "name: {{ name }}\n"})
    (root / "templates" / "b").mkdir()
    (root / "templates" / "b" / "app.yaml.j2").symlink_to(root / "templates" / "a" / "app.yaml.j2")
    res = cli_run(root, "render")
    assert res.exit_code == 0, res.output
    assert (root / "out/b/app.yaml").read_text() == "name: demo\n"


# --------------------------------------------------------------------------- concurrency


def _cli_proc(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(root / "age.key")}
    return subprocess.Popen([sys.executable, "-m", "gitops_render", *args, "--root", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_configures_at_once_give_the_result_of_one(repo: Path) -> None:
    set_values(repo, litellm_replicas=3, dragonfly_litellm_password="concurrent-" + "p" * 30)
    procs = [_cli_proc(repo, "configure", "--no-validate") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = sorted(re.search(r"\d+ added, \d+ changed, \d+ removed, \d+ unchanged", o).group(0)
                       for o, _ in outs)
    # one run did the work, the other waited for the lock and found nothing left to do
    assert summaries[0].startswith("0 added, 0 changed, 0 removed"), summaries
    assert not summaries[1].startswith("0 added, 0 changed, 0 removed"), summaries
    check = cli_run(repo, "check", "--no-validate")
    assert check.exit_code == 0 and "drift: none" in check.output, check.output
    assert not (repo / ".gitops-render" / JOURNAL_FILE).exists()
    assert not [p for p in repo.rglob("*.gitops-render.tmp-*")]


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gitops_render.write.lock import RepoLock
    with RepoLock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold_lock(repo: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(repo / ".gitops-render"), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_refuses_a_held_lock_with_a_clear_message(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    before = snapshot(repo)
    holder = _hold_lock(repo, 60)
    try:
        with pytest.raises(LockError) as err:
            run_render(RunOptions(root=repo, lock_timeout=0.5))
    finally:
        holder.kill()
        holder.wait()
    text = str(err.value)
    assert f"another gitops-render run (pid {holder.pid}) holds the lock" in text
    assert f"kill {holder.pid}" in text and "no lock file to delete" in text
    assert snapshot(repo) == before


def test_a_second_run_waits_for_the_lock_and_then_does_its_work(repo: Path) -> None:
    set_values(repo, litellm_replicas=2)
    holder = _hold_lock(repo, 2)
    res = cli_run(repo, "render")  # waits (up to 30 s) for the holder, which exits after 2 s
    holder.wait()
    assert res.exit_code == 0, res.output
    assert re.search(r"[1-9]\d* changed", res.output), res.output
    assert "replicas: 2" in (repo / "kubernetes/apps/ai-system/litellm/app/helmrelease.yaml").read_text()


# --------------------------------------------------------------------------- secrets in errors


def _master_key(repo: Path) -> str:
    return yaml.safe_load((repo / "cluster.yaml").read_text())["litellm_master_key"]


@pytest.mark.parametrize("bad", ["nope-THIS-IS-A-SECRET-VALUE-1234567890", ["sk-LIST-" + "s" * 32]])
def test_a_schema_error_on_a_sensitive_field_names_the_field_and_masks_the_value(repo: Path, bad: object) -> None:
    set_values(repo, litellm_master_key=bad)
    before = snapshot(repo)
    res = cli_run(repo, "configure")
    assert res.exit_code == 2, res.output
    assert "litellm_master_key" in res.output and "***" in res.output, res.output
    for value in (bad if isinstance(bad, list) else [bad]):
        assert value not in res.output and value[5:25] not in res.output
    assert snapshot(repo) == before


@pytest.mark.parametrize("template", [
    "#% set lookup = {} %#\nvalue: #{ lookup[litellm_master_key] }#\n",
    "value: #{ {}[litellm_master_key ~ '-suffix'].x }#\n",
    "#% macro boom(v) %##{ {}[v] }##% endmacro %#value: #{ boom(litellm_master_key) }#\n",
])
def test_a_template_failing_after_reading_a_secret_does_not_print_it(repo: Path, template: str) -> None:
    key = _master_key(repo)
    (repo / "templates/config/kubernetes/apps/ai-system/litellm/app/debug.yaml.j2").write_text(template)
    before = snapshot(repo)
    res = cli_run(repo, "configure")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: template "), res.output
    assert key not in res.output and key[3:20] not in res.output, res.output
    assert "***" in res.output and "litellm_master_key" in res.output, res.output
    assert snapshot(repo) == before


def test_a_secret_written_into_a_plain_file_is_refused_and_masked(repo: Path) -> None:
    key = _master_key(repo)
    (repo / "templates/config/kubernetes/apps/ai-system/litellm/app/debug.yaml.j2").write_text(
        "oops: #{ litellm_master_key }#\n")
    before = snapshot(repo)
    res = cli_run(repo, "configure")
    assert res.exit_code == 1, res.output
    assert key not in res.output and "litellm_master_key" in res.output, res.output
    assert snapshot(repo) == before


# --------------------------------------------------------------------------- tool failures

BROKEN = {
    # crashes like a Go binary with a nil pointer
    "crashes": '#!/bin/sh\necho "panic: runtime error: invalid memory address or nil pointer dereference" >&2\n'
               'kill -SEGV $$\n',
    # never answers (GITOPS_RENDER_TIMEOUT=2 bounds it); exec so the timeout kills the sleeper itself
    "hangs": "#!/bin/sh\nexec sleep 600\n",
    # exits 0 but prints binary garbage
    "garbage": "#!/bin/sh\ncat >/dev/null 2>&1\nhead -c 512 /dev/urandom\nprintf '\\n{{{ :: not yaml\\n'\nexit 0\n",
    # a "sops" that encrypts nothing: hands its input (stdin or the file argument) back
    "echoes": '#!/bin/sh\nfor a; do last=$a; done\nif [ "$last" = /dev/stdin ]; then exec cat; else exec cat "$last"; fi\n',
}
TOOLS = ("sops", "kustomize", "kubeconform")
CASES = [(tool, kind) for tool in TOOLS for kind in ("missing", "crashes", "hangs", "garbage")] + [("sops", "echoes")]


@pytest.fixture(scope="module")
def tool_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configured repo whose cluster.yaml was then edited (a changed secret, a changed replica count)."""
    root = configured_repo(tmp_path_factory.mktemp("tools") / "repo")
    set_values(root, litellm_replicas=2, dragonfly_litellm_password="ROTATED-" + "r" * 32)
    return root


@pytest.mark.parametrize(("tool", "kind"), CASES, ids=[f"{t}-{k}" for t, k in CASES])
def test_a_broken_tool_stops_configure_with_its_name_and_the_fix_and_nothing_written(
        tool_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str, kind: str) -> None:
    repo = tool_repo
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(repo / "age.key"))
    if kind == "missing":
        exe = tmp_path / f"no-{tool}-here"
    else:
        exe = tmp_path / f"broken-{tool}-{kind}"
        exe.write_text(BROKEN[kind])
        exe.chmod(0o755)
    monkeypatch.setenv(f"GITOPS_RENDER_{tool.upper()}", str(exe))
    monkeypatch.setenv("GITOPS_RENDER_TIMEOUT", "2")
    before = snapshot(repo)

    res = cli_run(repo, "configure")

    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and "Traceback" not in res.output, res.output
    first = res.output.splitlines()[0]
    assert tool in first, res.output
    assert "hint:" in res.output and ("install" in res.output or "GITOPS_RENDER_" in res.output), res.output
    if kind == "hangs":
        assert "did not finish within 2s" in res.output, res.output
    assert snapshot(repo) == before, "a broken tool let configure write"
    assert files_holding(repo, "ROTATED-" + "r" * 32) == []
    assert not list(repo.rglob("*.gitops-render.tmp-*"))


# --------------------------------------------------------------------------- large inputs


def _peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[int, int, str]:
    """Run ``cmd``; return (exit code, peak RSS in bytes of it and its waited-for children, stderr)."""
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen(cmd, env=env, stdout=null, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, err  # ru_maxrss is in KiB on Linux


def _synthetic_repo(tmp_path: Path, *, templates: int) -> Path:
    """A synthetic cluster repo (bench/synth.py) with 12 secrets and its own age key."""
    key = tmp_path / "age.key"
    pub = make_age_key(key)
    root = make_repo(tmp_path / "repo", templates=templates, secrets=12, age_public_key=pub)
    (root / "age.key").write_bytes(key.read_bytes())
    return root


@pytest.mark.slow
def test_a_ten_thousand_template_tree_renders_within_a_small_machines_memory(tmp_path: Path) -> None:
    root = _synthetic_repo(tmp_path, templates=10_000)
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(root / "age.key")}
    code, peak, err = _peak_rss([sys.executable, "-m", "gitops_render", "render", "--root", str(root), "-q"], env)
    print(f"\n10 000 templates: peak RSS {peak / 2**20:.0f} MiB")
    assert code == 0, err[-3000:]
    written = sum(1 for p in (root / "kubernetes").rglob("*") if p.is_file())
    assert written > 5_000  # some templates are gated off by the synthetic data
    assert peak < 1.5 * GIB


@pytest.mark.slow
def test_a_five_megabyte_cluster_yaml_renders_within_a_small_machines_memory(tmp_path: Path) -> None:
    root = _synthetic_repo(tmp_path, templates=200)
    doc = yaml.safe_load((root / "cluster.yaml").read_text())
    # an operator's inventory: thousands of hosts with labels and notes (read by no template)
    doc["inventory"] = {f"host-{i:05d}": {"ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                                           "labels": {f"l{k}": f"value-{i}-{k}" for k in range(6)},
                                           "note": "ü-ñ-漢字 " * 4}
                        for i in range(20_500)}
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    (root / "cluster.yaml").write_text(text, encoding="utf-8")
    size = (root / "cluster.yaml").stat().st_size
    assert size >= 5 * 10**6, size
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(root / "age.key")}
    code, peak, err = _peak_rss([sys.executable, "-m", "gitops_render", "render", "--root", str(root), "-q"], env)
    print(f"\n{size / 1e6:.1f} MB cluster.yaml: peak RSS {peak / 2**20:.0f} MiB")
    assert code == 0, err[-3000:]
    assert peak < 1.5 * GIB
