"""Crash test: SIGKILL a real process in the middle of make_plan + apply_plan, many times.

The tree flips between two states A and B (files added, changed, removed with
their directories, unchanged).  A child process plans and applies the flip and
is killed with SIGKILL after a random delay.  After every kill:

* without a journal the tree is exactly A or exactly B;
* with a ``staging`` journal the outputs are still the old state, and
  ``recover`` rolls the staged files back (old state);
* with an ``apply`` journal (the kill landed in the apply window) ``recover``
  completes the flip (new state);
* after ``recover`` there is no journal, no staged temp file, no stray empty
  directory, and the manifest matches the tree.

A third of the delays are uniform over the whole run (measured in calibration
runs); the others start when the child reports (through the apply test hook)
that it passed the point of no return, and are uniform over the measured
length of the apply step.
The summary line (visible with ``-s`` and in the ``-rA`` report) counts where
the kills landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitops_render.core.fsio import is_temp_name
from gitops_render.write import recover
from gitops_render.write.journal import JOURNAL_FILE, Journal, Phase
from gitops_render.write.manifest import Manifest, sha256_hex

pytestmark = pytest.mark.slow

KILLS = 60
BUDGET_SECONDS = 35.0  # stop early (but after MIN_KILLS) if the machine is slow
MIN_KILLS = 20


def tree_state(variant: str) -> dict[str, str]:
    """The rendered files of state ``A`` or ``B`` (relpath -> text)."""
    apps = range(80) if variant == "A" else range(20, 100)
    files = {".sops.yaml": "creation_rules: []\n",
             "kubernetes/flux/cluster/ks.yaml": f"kind: Kustomization\nvariant: {variant}\n"}
    for i in apps:
        flavour = variant if i % 3 == 0 else "same"
        base = f"kubernetes/apps/ns{i % 7}/app{i}"
        files[f"{base}/ks.yaml"] = f"kind: Kustomization\nname: app{i}\n"
        files[f"{base}/app/helmrelease.yaml"] = f"kind: HelmRelease\nname: app{i}\nflavour: {flavour}\n"
        files[f"{base}/app/secret.sops.yaml"] = f"ENC[AES256_GCM,data:{flavour}{i},type:str]\n"
    return files


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path, PurePosixPath
    from gitops_render.write import DesiredFile, apply_plan, load_manifest, make_plan

    root, state, spec = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
    files = {PurePosixPath(k): DesiredFile(v.encode(), secret=".sops." in k) for k, v in spec.items()}
    start = time.monotonic()
    print("go", flush=True)

    def hook(point, index):  # test hook: report when the point of no return is reached
        if point == "journal":
            print("journal", time.monotonic() - start, flush=True)

    apply_plan(make_plan(root, files, load_manifest(state)), state, hook=hook)
    print("done", time.monotonic() - start, flush=True)
""")


@dataclass
class Flip:
    """A child process flipping the tree to one state."""

    root: Path
    state: Path
    script: Path
    spec: Path

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(self.script), str(self.root), str(self.state), str(self.spec)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "go", (line, proc.stderr.read() if proc.stderr else "")
        return proc


def outputs(root: Path) -> dict[str, str]:
    """Output files (state dir and staged temps left out)."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".gitops-render/") and not is_temp_name(path.name):
            found[rel] = path.read_text()
    return found


def leftovers(root: Path) -> list[str]:
    """Staged temp files anywhere, and directories that hold no file at all."""
    bad = [str(p) for p in root.rglob("*") if is_temp_name(p.name)]
    for dirpath, dirnames, filenames in os.walk(root):
        if not dirnames and not filenames and Path(dirpath) != root:
            bad.append(f"empty dir {dirpath}")
    return bad


def which(root: Path, states: dict[str, dict[str, str]]) -> str | None:
    """``"A"``/``"B"`` when the outputs are exactly that state, else None."""
    current = outputs(root)
    return next((name for name, files in states.items() if files == current), None)


def manifest_of(files: dict[str, str]) -> Manifest:
    return Manifest({k: sha256_hex(v.encode()) for k, v in files.items()})


def test_sigkill_during_apply_is_all_old_all_new_or_recovered(tmp_path: Path) -> None:
    root, state = tmp_path / "repo", tmp_path / "repo" / ".gitops-render"
    root.mkdir()
    states = {"A": tree_state("A"), "B": tree_state("B")}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    flips = {}
    for name, files in states.items():
        spec = tmp_path / f"{name}.json"
        spec.write_text(json.dumps(files))
        flips[name] = Flip(root, state, script, spec)

    # calibration: unkilled flips, to learn how long a run is and where the apply window lies
    windows = []
    for target in ("A", "B", "A", "B", "A", "B"):
        proc = flips[target].start()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        marks = dict(line.split() for line in out.splitlines() if line.strip())
        windows.append((float(marks["journal"]), float(marks["done"])))
    assert which(root, states) == "B"
    windows = sorted(windows[1:])  # the first run wrote the whole tree from nothing: not a flip
    apply_start = statistics.median(w[0] for w in windows)
    run_end = statistics.median(w[1] for w in windows)
    apply_len = statistics.median(w[1] - w[0] for w in windows)
    current = "B"

    rng = random.Random(20240601)
    landed: Counter[str] = Counter()
    started = time.monotonic()
    kills = 0
    while kills < KILLS and (kills < MIN_KILLS or time.monotonic() - started < BUDGET_SECONDS):
        target = "A" if current == "B" else "B"
        aimed = kills % 3 != 0
        proc = flips[target].start()
        if aimed:  # wait for the child to pass the point of no return, then kill within the apply window
            assert proc.stdout is not None
            proc.stdout.readline()
            time.sleep(rng.uniform(0, apply_len * 1.1))
        else:
            time.sleep(rng.uniform(0, run_end * 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        kills += 1

        journal = Journal.load(state / JOURNAL_FILE)
        if journal is None:
            now = which(root, states)
            assert now in (current, target), f"kill {kills}: half-written tree without a journal"
            assert not [p for p in leftovers(root) if "empty dir" in p], leftovers(root)
            where = "before staging" if now == current else "after apply"
        elif journal.phase is Phase.STAGING:
            assert which(root, states) == current, f"kill {kills}: outputs changed while only staging"
            where = "staging"
        else:
            where = "apply window"
        landed[where] += 1

        recover(state, root)
        now = which(root, states)
        expected = {"staging": current, "apply window": target}.get(where, now)
        assert now is not None and now == expected, f"kill {kills} ({where}): tree is {now}, expected {expected}"
        assert leftovers(root) == [], f"kill {kills} ({where})"
        assert not (state / JOURNAL_FILE).exists()
        assert Manifest.load(state / "manifest.json") == manifest_of(states[now])
        current = now

    elapsed = time.monotonic() - started
    summary = (f"crash test: {kills} SIGKILLs in {elapsed:.1f}s; a flip takes {run_end * 1000:.0f} ms, "
               f"apply step {apply_start * 1000:.0f}-{run_end * 1000:.0f} ms; landed: "
               + ", ".join(f"{k} {landed[k]}" for k in ("before staging", "staging", "apply window", "after apply")))
    print("\n" + summary)
    assert kills >= MIN_KILLS
    assert landed["apply window"] > 0, summary
