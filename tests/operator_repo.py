"""An operator's cluster repo driven through the real ``gitops-render`` command.

Helpers for the end-to-end stories of ``test_configure.py`` and ``test_check_diff.py``:
a repo made of this project's templates/schema/sample/settings, ``init``-ed and
``configure``-d by running ``gitops-render`` as a subprocess from the repo root (as
``task configure`` does), real sops/age/kubeconform/kustomize, the offline schema mirror.

Comparisons that involve secret values never let pytest print them: they go through
:func:`fail_unless` (a bare message, no introspection of the operands).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT, cli_env, copy_project_repo
from trees import changed_paths, files_holding, snapshot  # noqa: F401 (the stories import them from here)

TOOLS = PROJECT / ".tools" / "bin"
SOPS = TOOLS / "sops"
STATE = ".gitops-render"
AI = "kubernetes/apps/ai-system"
APP = f"{AI}/litellm/app"
LITELLM_SECRET = f"{APP}/secret.sops.yaml"
ROUTES = "kubernetes/apps/network/envoy-gateway/httproutes/app/httproutes.yaml"
KEYCLOAK_DIR = "kubernetes/apps/identity/keycloak/litellm-client"
KEYCLOAK_SECRET = f"{KEYCLOAK_DIR}/app/secret.sops.yaml"
# rendered by older template sets only: the ACL user now goes into the cluster's own ACL (docs/integration.md)
ACL_DIR = "kubernetes/apps/cache/dragonfly/litellm-acl"
GITIGNORE = "cluster.yaml\nage.key\n.gitops-render/cache/\n.gitops-render/lock\n.gitops-render/journal.json\n"


def fail_unless(condition: bool, message: str) -> None:
    """``assert condition`` that never prints the operands (they may hold secret values)."""
    if not condition:
        pytest.fail(message, pytrace=False)


def gr(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``gitops-render ARGS`` run from ``cwd`` (the repo root, like ``task``)."""
    return subprocess.run([sys.executable, "-m", "gitops_render", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=300)


def on_terminal(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, bytes]:
    """``gitops-render ARGS`` on a real terminal (a private tmux server): (exit code, raw bytes it wrote).

    stdout and stderr are both the tmux pane; the bytes are what the program sent to the
    terminal (``pipe-pane``), escape sequences included, before tmux interprets them.
    """
    tmux = shutil.which("tmux")
    assert tmux, "tmux is not installed (apt-get install tmux): the terminal stories need a real terminal"
    work = Path(tempfile.mkdtemp(prefix="gr-tty-"))
    raw, rc, go = work / "raw", work / "rc", work / "go"
    cmd = shlex.join([sys.executable, "-m", "gitops_render", *args])
    script = (f"cd {shlex.quote(str(cwd))}; while [ ! -e {go} ]; do sleep 0.02; done; "
              f"{cmd}; echo $? > {rc}.tmp; mv {rc}.tmp {rc}; sleep 60")
    sock = ["-L", f"gr-test-{os.getpid()}-{work.name}", "-f", "/dev/null"]
    run_env = {**(env or cli_env()), "TERM": "xterm-256color"}
    subprocess.run([tmux, *sock, "new-session", "-d", "-x", "200", "-y", "50", "sh", "-c", script],
                   env=run_env, check=True, timeout=30)
    try:
        subprocess.run([tmux, *sock, "pipe-pane", "-o", f"cat >> {raw}"], env=run_env, check=True, timeout=30)
        go.touch()
        deadline = time.monotonic() + timeout
        while not rc.exists():
            assert time.monotonic() < deadline, f"gitops-render {' '.join(args)} did not finish on the terminal"
            time.sleep(0.1)
        time.sleep(0.3)  # let pipe-pane flush the last bytes
        return int(rc.read_text()), raw.read_bytes()
    finally:
        subprocess.run([tmux, *sock, "kill-server"], env=run_env, check=False, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``res`` after checking it exited 0 (the output is tool output: already masked)."""
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def new_repo(dest: Path) -> Path:
    """A fresh operator repo after ``gitops-render init``."""
    root = copy_project_repo(dest)
    ok(gr(root, "init"))
    return root


def configured_repo(dest: Path, **values: Any) -> Path:
    """``init``, optional cluster.yaml edits, then a successful ``configure``."""
    root = new_repo(dest)
    if values:
        set_values(root, **values)
    ok(gr(root, "configure"))
    return root


def clone(src: Path, dest: Path) -> Path:
    """A copy of a repo (bytes, modes and mtimes kept)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def cluster(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "cluster.yaml").read_text(encoding="utf-8"))


def set_values(root: Path, **values: Any) -> None:
    """Edit cluster.yaml like an operator (comments are lost: the file is re-dumped)."""
    doc = cluster(root)
    doc.update(values)
    (root / "cluster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def replace_line(path: Path, pattern: str, new: str) -> int:
    """Replace the one line matching ``pattern`` (regex, whole line) with ``new``; return its 1-based number."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if re.fullmatch(pattern, line.rstrip("\n"))]
    assert len(hits) == 1, f"{pattern!r} matches {len(hits)} lines of {path.name}"
    lines[hits[0]] = new + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    return hits[0] + 1


def line_of(path: Path, prefix: str) -> int:
    """1-based number of the first line of ``path`` starting with ``prefix``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith(prefix):
            return number
    raise AssertionError(f"no line starting with {prefix!r} in {path.name}")


def generated(root: Path) -> set[str]:
    """Files of the rendered tree on disk: everything under kubernetes/ plus .sops.yaml."""
    out = {p.relative_to(root).as_posix() for p in (root / "kubernetes").rglob("*") if p.is_file()}
    if (root / ".sops.yaml").is_file():
        out.add(".sops.yaml")
    return out


def secret_files(root: Path) -> list[str]:
    return sorted(p for p in generated(root) if ".sops." in Path(p).name and p != ".sops.yaml")


def manifest(root: Path) -> dict[str, str]:
    import json

    return json.loads((root / STATE / "manifest.json").read_text())["files"]


def public_key(key_file: Path) -> str:
    match = re.search(r"^# public key: (age1[0-9a-z]+)$", key_file.read_text(), re.MULTILINE)
    assert match, f"{key_file.name} has no public key line"
    return match.group(1)


def sops_decrypt(root: Path, rel: str, key_file: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real ``sops --decrypt`` of ``rel`` with ``key_file`` (default: the repo's age.key)."""
    env = cli_env(SOPS_AGE_KEY_FILE=str(key_file or root / "age.key"))
    return subprocess.run([str(SOPS), "--decrypt", rel], cwd=root, env=env, capture_output=True, timeout=60)


def docs(text: bytes | str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def decrypted_docs(root: Path, rel: str, key_file: Path | None = None) -> list[Any]:
    res = sops_decrypt(root, rel, key_file)
    fail_unless(res.returncode == 0, f"sops --decrypt {rel} failed (exit {res.returncode})")
    return docs(res.stdout)


def rendered_secrets(root: Path) -> dict[str, list[Any]]:
    """The plaintext secrets configure would produce now (rendered in memory, nothing written)."""
    from gitops_render.app.pipeline import RunOptions, prepare

    prep = prepare(RunOptions(root=root))
    return {p.as_posix(): docs(c) for p, c in prep.secret_plaintexts().items()}


def recipients(root: Path, rel: str) -> list[str]:
    meta = yaml.safe_load_all((root / rel).read_text())
    return sorted({r["recipient"] for d in meta if d for r in d["sops"]["age"]})


def git(repo: Path, *args: str) -> str:
    """``git ARGS`` in ``repo`` as an operator without a git identity of their own would run it."""
    return subprocess.run(["git", "-c", "user.name=op", "-c", "user.email=op@example.com", "-c", "commit.gpgsign=false",
                           *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def committed(repo: Path) -> Path:
    """The configured repo as a git repository with one commit (cluster.yaml and the key ignored)."""
    (repo / ".gitignore").write_text(GITIGNORE)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "configured")
    return repo
