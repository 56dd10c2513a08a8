"""Benchmark tiers on real trees: the onedr0p/cluster-template snapshot and the shipped templates.

Both sides run on Python 3.13, as cluster-template's own ``uv run`` does: the status quo is
makejinja 2.9.1 (+ pydantic 2.13.4 for the repo's plugin) from ``.venv-makejinja``, then the
per-secret ``sops filestatus`` / ``sops --encrypt --in-place`` loop, and for configure
``kustomize build | kubeconform`` per kustomization (offline schemas); gitops-render runs from
``.venv-py313`` (+ pydantic). Both environments come from ``scripts/install-tools.sh --test``.

Per config and run, every side gets fresh checkouts (copies of one prepared checkout):

* cold: fresh checkout, no outputs, no ``.gitops-render/``;
* warm: the same command again, templates and data unchanged;
* one value changed: one data value edited (cluster-template: ``domain.name``, which the
  ``cluster-secrets`` secret and several manifests carry), then the command again.

The floor is the repository's plugin alone in a fresh interpreter (``Plugin(...).data()``:
interpreter start, imports, the plugin's own validation), the part of every run no renderer
can avoid; warm runs are also given as a multiple of it. A tree with several configs (the
snapshot has 8) is timed as the sum over its configs per run; medians over the runs.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from measure import (
    PROJECT,
    SHARED,
    STATUS_QUO,
    TOOLS,
    Sample,
    age_key,
    byte_compile_gitops_render,
    env_for,
    ratio,
    run_measured,
)

PY313 = PROJECT / ".venv-py313" / "bin"
MJ313 = PROJECT / ".venv-makejinja" / "bin"
SNAPSHOT = SHARED / "real-repos" / "onedr0p-cluster-template-ae73246.tar.gz"
CT_CONFIGS = ("public", "private", "selfhosted", "no-webhook", "direct", "internal", "multi-controller",
              "single-node")
STEPS = ("cold", "warm", "one value changed")
SQ = "status quo"
GR = "gitops-render"


@dataclass(frozen=True)
class RealTree:
    """A prepared checkout and how to drive it."""

    label: str
    base: Path  #: checkout with its inputs made; copied for every measurement
    configs: tuple[str, ...]
    apply: Callable[[Path, str], None]  #: install one config into a copy
    bump: Callable[[Path], None]  #: change one value
    secret_roots: str  #: where the status quo's encrypt loop looks
    floor: tuple[str, ...]  #: the plugin alone (run in the repo root)


def _require(path: Path) -> str:
    if not path.exists():
        raise SystemExit(f"bench: {path} not found; run scripts/install-tools.sh --test")
    return str(path)


def _stub_makejinja(dest: Path) -> Path:
    """A two-line ``makejinja`` package, so the floor does not pay for importing makejinja itself."""
    pkg = dest / "makejinja"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import plugin\n")
    (pkg / "plugin.py").write_text("class Plugin:\n    pass\n\n\nData = Functions = object\n")
    return dest


def cluster_template(work: Path, configs: tuple[str, ...] = CT_CONFIGS) -> RealTree:
    """The snapshot unpacked, with the inputs its CI makes (README of shared/real-repos)."""
    if not SNAPSHOT.is_file():
        raise SystemExit(f"bench: {SNAPSHOT} not found (set GITOPS_RENDER_SHARED)")
    with tarfile.open(SNAPSHOT) as tar:
        tar.extractall(work, filter="fully_trusted")
    repo = work / "cluster-template"
    age_key(repo)
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-C", "deploy-key", "-f", str(repo / "deploy.key"), "-q",
                    "-P", ""], check=True, capture_output=True)
    (repo / "flux-webhook-token.txt").write_text("0123456789abcdef0123456789abcdef\n")
    (repo / "cloudflare-tunnel.json").write_text('{"AccountTag":"fake","TunnelSecret":"fake","TunnelID":"fake"}\n')
    stub = _stub_makejinja(work / "floor-stub")

    def apply(dest: Path, config: str) -> None:
        shutil.copy2(dest / ".github" / "template-tests" / "valid" / f"{config}.toml", dest / "cluster.toml")

    def bump(dest: Path) -> None:
        text = (dest / "cluster.toml").read_text()
        new = text.replace('name = "example.com"', 'name = "example.org"', 1)
        if new == text:
            raise SystemExit("bench: no domain name to change in cluster.toml")
        (dest / "cluster.toml").write_text(new)

    floor = (_require(PY313 / "python"), "-c",
             f"import sys; sys.path[:0] = [{str(stub)!r}, 'template/scripts']; import plugin; "
             "plugin.Plugin({}).data()")
    label = f"cluster-template ({len(configs)} config{'s' if len(configs) > 1 else ''})"
    return RealTree(label, repo, configs, apply, bump, "bootstrap kubernetes talos", floor)


def _env(tree: RealTree, repo: Path) -> dict[str, str]:
    env = env_for(repo)
    env["MAKEJINJA"] = _require(MJ313 / "makejinja")
    env["SECRET_ROOTS"] = tree.secret_roots
    env["PATH"] = f"{PY313}:{TOOLS}:{env['PATH']}"
    return env


def _command(tree: RealTree, repo: Path, command: str, side: str) -> tuple[list[str], dict[str, str], tuple[int, ...]]:
    env = _env(tree, repo)
    if side == SQ:
        return ["bash", "-c", STATUS_QUO], ({**env, "VALIDATE": "0"} if command == "render" else env), (0,)
    # configure exits 1 when validation has findings: the run is complete and timed all the same
    return [_require(PY313 / "gitops-render"), command, "--quiet", "--yes"], env, (0, 1)


def _fresh(tree: RealTree, tmp: Path, config: str) -> Path:
    repo = tmp / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(tree.base, repo, symlinks=True)
    tree.apply(repo, config)
    return repo


def tier_real(tree: RealTree, runs: int, rows: list[list[str]], notes: list[str]) -> None:
    """Status quo vs gitops-render, render and configure, cold / warm / one value changed; and the floor."""
    byte_compile_gitops_render(Path(_require(PY313 / "gitops-render")))
    sums: dict[tuple[str, ...], list[float]] = {}
    peak: dict[tuple[str, ...], float] = {}
    exits: dict[str, int] = {}

    def record(key: tuple[str, ...], run: int, s: Sample) -> None:
        sums.setdefault(key, [0.0] * runs)[run] += s.seconds
        peak[key] = max(peak.get(key, 0.0), s.max_rss_mib)

    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp_name:
        tmp = Path(tmp_name)
        for run in range(runs):  # interleaved: drift of the machine hits every side alike
            for config in tree.configs:
                repo = _fresh(tree, tmp, config)
                env = _env(tree, repo)
                record(("floor",), run, run_measured(list(tree.floor), repo, env))
                record(("makejinja",), run, run_measured([env["MAKEJINJA"], "-q"], repo, env))
                for command in ("render", "configure"):
                    for side in (SQ, GR):
                        repo = _fresh(tree, tmp, config)
                        cmd, env, ok = _command(tree, repo, command, side)
                        for step in STEPS:
                            if step == "one value changed":
                                tree.bump(repo)
                            sample = run_measured(cmd, repo, env, ok=ok)
                            record((command, step, side), run, sample)
                            if sample.code:
                                exits[f"{command}, {step}"] = exits.get(f"{command}, {step}", 0) + 1

    def row(step: str, key: tuple[str, ...], baseline: float | None = None, suffix: str = "") -> float:
        t = statistics.median(sums[key])
        speedup = ratio(baseline, t) if baseline is not None else ("1.0×" if "baseline" in step else "-")
        rows.append([tree.label, step + suffix, f"{t:.2f}", speedup, f"{peak[key]:.0f}"])
        return t

    floor = row("floor: the repo's plugin alone (interpreter start + plugin work)", ("floor",))
    makejinja = row("makejinja 2.9.1 alone, cold (reference)", ("makejinja",))
    for command in ("render", "configure"):
        chain = "makejinja + sops loop" + (" + kubeconform.sh" if command == "configure" else "")
        for step in STEPS:
            base = row(f"{command}, {step}: status quo ({chain}, baseline)", (command, step, SQ))
            ours = statistics.median(sums[command, step, GR])
            suffix = ""
            if step == "warm":
                suffix = f" ({ours / floor:.1f}× the floor)"
            elif command == "render" and step == "cold":
                suffix = f" ({makejinja / ours:.2f}× makejinja alone)"
            row(f"{command}, {step}: gitops-render", (command, step, GR), base, suffix)
    for what, count in sorted(exits.items()):
        notes.append(f"{tree.label}: gitops-render {what} exited 1 (validation findings) in {count} of "
                     f"{runs * len(tree.configs)} runs; timed all the same")
