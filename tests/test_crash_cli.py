"""Crash test at the command line: SIGKILL the real `gitops-render configure` at random points.

The operator's repo has 200 templates and 12 secrets (``bench/synth.py``). Two data files flip
it between states A and B: every secret value changes, three apps (and their secrets) disappear,
deployments change. The data files live outside the repo, so the only plaintext of a secret value
that may exist is the operator's own data file.

Each round starts ``gitops-render configure --no-validate --config <other state>`` in its own
process group and kills the group with SIGKILL, either after a random delay over the whole run or
aimed at the write step (the test polls for the journal, then waits a random fraction of the
measured write window). After every kill:

* no file anywhere in the repo (staged temps, journal, state and cache directories included) and
  no sops temp directory holds a plaintext secret value;
* without a journal, and with a ``staging`` journal, the outputs are exactly A or exactly B
  (secrets compared by their decrypted content);
* with an ``apply`` journal (the kill landed in the apply window) the next invocation says it
  completed the interrupted run first and reaches exactly the state that run was heading for.

At the end one unkilled configure reaches the other state, with no journal, temp file or stray
manifest entry left. The summary (``-s`` / ``-rA``) counts the kills and where they landed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT, make_age_key

from gitops_render.app.pipeline import RunOptions, prepare
from gitops_render.core.fsio import is_temp_name
from gitops_render.core.naming import is_secret_path
from gitops_render.core.runner import ToolRunner
from gitops_render.write.journal import JOURNAL_FILE, Journal, Phase
from gitops_render.write.manifest import Manifest, sha256_hex

sys.path.insert(0, str(PROJECT / "bench"))
from synth import make_repo

pytestmark = pytest.mark.slow

MAX_KILLS = 75
MIN_KILLS = 12
KILL_BUDGET_SECONDS = 45.0  # the whole test stays well under 90 s, even on a busy CI machine
NOT_OUTPUTS = ("templates/", "gitops-render.toml", "makejinja.toml", "age.key", ".gitops-render/")


def state_b(a: dict[str, Any]) -> dict[str, Any]:
    """Every password rotated, apps 0/5/10 disabled (their files and secrets pruned), env and features changed."""
    b = json.loads(json.dumps(a))
    for i, (name, app) in enumerate(sorted(b["apps"].items())):
        app["password"] = f"pwB-{i:04d}-" + "y" * 20
        if i % 5 == 0:
            app["enabled"] = False
        if i % 3 == 0:
            app["env"]["var_0"] = f"flipped-{i}"
    b["features"]["f1"] = not b["features"]["f1"]
    return b


def passwords(doc: dict[str, Any]) -> list[str]:
    return [app["password"] for app in doc["apps"].values()]


class Expected:
    """What the outputs of one state are: plain files by bytes, secrets by decrypted documents."""

    def __init__(self, root: Path, data_file: Path) -> None:
        prep = prepare(RunOptions(root=root, data_files=(data_file,)))
        self.plain = {p.as_posix(): f.content for p, f in prep.result.files.items() if not is_secret_path(p)}
        self.secrets = {p.as_posix(): list(yaml.safe_load_all(f.content))
                        for p, f in prep.result.files.items() if is_secret_path(p)}
        assert len(self.secrets) >= 8 and len(self.plain) >= 100


class Tree:
    """Reads the repo's outputs; decrypts each distinct ciphertext once with the real sops."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = ToolRunner()
        self.env = {"SOPS_AGE_KEY_FILE": str(root / "age.key"), "SOPS_AGE_KEY": ""}
        self.plain_of: dict[str, list[Any]] = {}

    def outputs(self) -> dict[str, bytes]:
        found = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(NOT_OUTPUTS) and not is_temp_name(path.name):
                found[rel] = path.read_bytes()
        return found

    def _decrypt(self, rel: str, data: bytes) -> None:
        digest = sha256_hex(data)
        if digest not in self.plain_of:
            res = self.runner.run("sops", ["--decrypt", "--input-type", "yaml", "--output-type", "yaml",
                                           "/dev/stdin"], input=data, env=self.env, text=True)
            self.plain_of[digest] = list(yaml.safe_load_all(res.stdout))

    def state(self, expected: dict[str, Expected]) -> str | None:
        """``"A"``/``"B"`` when the outputs are exactly that state, else None."""
        now = self.outputs()
        for name, exp in expected.items():
            if set(now) != set(exp.plain) | set(exp.secrets):
                continue
            if any(now[rel] != content for rel, content in exp.plain.items()):
                continue
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda rel: self._decrypt(rel, now[rel]), exp.secrets))
            if all(self.plain_of[sha256_hex(now[rel])] == docs for rel, docs in exp.secrets.items()):
                return name
        return None


def plaintext_on_disk(places: list[Path], needles: list[str]) -> list[str]:
    raw = [n.encode() for n in needles]
    bad = []
    for place in places:
        for path in place.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                bad.extend(f"{path}: {n.decode()[:8]}..." for n in raw if n in data)
    return bad


def test_sigkill_of_configure_never_leaves_a_mixed_tree_or_plaintext(tmp_path: Path) -> None:
    key = tmp_path / "age.key"
    root = make_repo(tmp_path / "repo", templates=200, secrets=12, age_public_key=make_age_key(key))
    (root / "age.key").write_bytes(key.read_bytes())
    data_dir = tmp_path / "operator-data"  # the operator's plaintext data files, outside the repo
    data_dir.mkdir()
    doc_a = json.loads((root / "cluster.yaml").read_text())
    (root / "cluster.yaml").unlink()
    data = {"A": data_dir / "A.yaml", "B": data_dir / "B.yaml"}
    data["A"].write_text(yaml.safe_dump(doc_a))
    data["B"].write_text(yaml.safe_dump(state_b(doc_a)))
    needles = passwords(doc_a) + passwords(state_b(doc_a))
    expected = {name: Expected(root, path) for name, path in data.items()}
    tree = Tree(root)
    state_dir = root / ".gitops-render"
    sops_temps = Path(tempfile.gettempdir())
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(root / "age.key")}

    def start(target: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "gitops_render", "configure", "--no-validate",
                                 "--root", str(root), "--config", str(data[target])],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def run_to_end(target: str) -> str:
        proc = start(target)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        return out

    def wait_for_journal(proc: subprocess.Popen[str]) -> float | None:
        """Poll until the journal appears (the write step began); its time, or None if the run ended first."""
        t0 = time.monotonic()
        while proc.poll() is None:
            if (state_dir / JOURNAL_FILE).exists():
                return time.monotonic() - t0
            time.sleep(0.0005)
        return None

    def wait_for_apply(proc: subprocess.Popen[str]) -> None:
        """Poll until the journal reaches its ``apply`` phase (or the run ends)."""
        while proc.poll() is None:
            try:
                if b'"phase": "apply"' in (state_dir / JOURNAL_FILE).read_bytes():
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.0002)

    # calibration: unkilled flips, to learn how long a run and its write step take
    run_to_end("A")
    assert tree.state(expected) == "A"
    runs, windows = [], []
    for target in ("B", "A", "B"):
        t0 = time.monotonic()
        proc = start(target)
        seen = wait_for_journal(proc)
        proc.communicate(timeout=120)
        assert proc.returncode == 0
        runs.append(time.monotonic() - t0)
        if seen is not None:
            windows.append(runs[-1] - seen)
        assert tree.state(expected) == target
    run_len, write_len = sorted(runs)[1], max(windows or [0.05])
    current = "B"

    rng = random.Random(20250101)
    landed: Counter[str] = Counter()
    completed_first = 0
    kills = 0
    started = time.monotonic()
    while kills < MAX_KILLS and (kills < MIN_KILLS or time.monotonic() - started < KILL_BUDGET_SECONDS):
        target = "A" if current == "B" else "B"
        proc = start(target)
        if kills % 3 == 1:  # aimed at the write step (staging + apply)
            wait_for_journal(proc)
            time.sleep(rng.uniform(0, write_len * 1.2))
        elif kills % 3 == 2:  # aimed at the apply step: the journal says "apply"
            wait_for_apply(proc)
            time.sleep(rng.uniform(0, write_len * 0.3))
        else:
            time.sleep(rng.uniform(0, run_len * 1.1))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate(timeout=60)
        kills += 1

        leaked = plaintext_on_disk([root, *sops_temps.glob("gitops-render-sops-*")], needles)
        assert not leaked, f"kill {kills}: plaintext secret values on disk: {leaked}"
        journal = Journal.load(state_dir / JOURNAL_FILE)
        now = tree.state(expected)
        if journal is None:
            assert now in (current, target), f"kill {kills}: a mixed tree without a journal"
            where = "before the write" if now == current else "after the write"
            current = now
        elif journal.phase is Phase.STAGING:
            assert now == current, f"kill {kills}: outputs changed while only staging"
            where = "staging"
        else:
            where = "apply window"
            out = run_to_end(target)  # the next invocation completes the interrupted run first
            assert "completed an interrupted earlier run first" in out, out
            completed_first += 1
            assert tree.state(expected) == target, f"kill {kills}: recovery did not reach {target}"
            current = target
        landed[where] += 1

    final = "A" if current == "B" else "B"
    out = run_to_end(final)
    assert tree.state(expected) == final, out
    assert not (state_dir / JOURNAL_FILE).exists()
    assert not [p for p in root.rglob("*") if is_temp_name(p.name)]
    manifest = Manifest.load(state_dir / "manifest.json")
    assert {p.as_posix() for p in manifest.paths()} == set(tree.outputs())
    assert plaintext_on_disk([root], needles) == []

    elapsed = time.monotonic() - started
    print(f"\nCLI crash test: {kills} SIGKILLs survived in {elapsed:.1f}s (run {run_len * 1000:.0f} ms, "
          f"write step {write_len * 1000:.0f} ms); landed: "
          + ", ".join(f"{k} {landed[k]}" for k in ("before the write", "staging", "apply window", "after the write"))
          + f"; {completed_first} interrupted applies completed by the next invocation")
    assert kills >= MIN_KILLS
    assert landed["apply window"] + landed["staging"] > 0
