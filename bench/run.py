"""Benchmark: gitops-render against the chain it replaces, measured in the same run.

    .venv/bin/python bench/run.py            # full table (takes a few minutes)
    .venv/bin/python bench/run.py --quick    # fewer runs, no 10 000-template tier

Prints a Markdown table of medians (seconds) and peak RSS (MiB) per step, with the
ratio against the baseline measured in the same run:

* render: gitops-render vs makejinja 2.8.1 on the shipped templates and on synthetic
  cluster-template-like trees of 100 / 1 000 / 10 000 templates (first run without
  a compiled-template cache, and rerun with templates unchanged);
* configure on a tree with 32 secrets: first run, no-op rerun, rerun after one value
  changed — gitops-render vs the status quo (makejinja, then a ``sops filestatus`` /
  ``sops --encrypt --in-place`` loop per file, then ``kustomize build | kubeconform``
  per kustomization), validation included on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))
from synth import make_repo  # noqa: E402

TOOLS = PROJECT / ".tools" / "bin"
VENV = PROJECT / ".venv" / "bin"


def _bin(name: str) -> str:
    for d in (VENV, TOOLS, Path(sys.executable).parent):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"bench: {name} not found; run scripts/install-tools.sh --test")
    return found


@dataclass
class Sample:
    seconds: float
    max_rss_mib: float


def run_measured(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, shell: bool = False) -> Sample:
    """Run a command, return wall time and the peak RSS of its process tree's largest member."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd if not shell else cmd[0], cwd=cwd, env=env, shell=shell,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({code}) in {cwd}:\n{stderr[-3000:]}")
    return Sample(elapsed, usage.ru_maxrss / 1024)


def median(samples: list[Sample]) -> tuple[float, float]:
    return statistics.median(s.seconds for s in samples), max(s.max_rss_mib for s in samples)


def env_for(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV}:{TOOLS}:{env.get('PATH', '')}"
    env["SOPS_AGE_KEY_FILE"] = str(repo / "age.key")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    shared = Path(os.environ.get("GITOPS_RENDER_SHARED", PROJECT.parent / "shared")) / "kubernetes-schemas"
    if shared.is_dir():
        env["GITOPS_RENDER_SCHEMA_LOCATION"] = ";".join(schema_locations(shared))
    return env


def schema_locations(base: Path) -> list[str]:
    return [f"{base}/core/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/"
            f"{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            f"{base}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"]


def age_key(repo: Path) -> str:
    subprocess.run([str(TOOLS / "age-keygen"), "-o", str(repo / "age.key")], check=True, capture_output=True)
    for line in (repo / "age.key").read_text().splitlines():
        if line.startswith("# public key: "):
            return line.split(": ", 1)[1]
    raise SystemExit("no public key")


def clean_outputs(repo: Path) -> None:
    for name in ("kubernetes", ".gitops-render", ".sops.yaml"):
        p = repo / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


STATUS_QUO = r"""
set -euo pipefail
makejinja -q
find kubernetes -type f -name "*.sops.*" -print | while read -r f; do
  if [ "$(sops filestatus "$f" | jq ".encrypted")" == "false" ]; then sops --encrypt --in-place "$f"; fi
done
args=(-strict -ignore-missing-schemas -skip Secret -kubernetes-version 1.35.0)
IFS=';' read -ra locs <<< "${GITOPS_RENDER_SCHEMA_LOCATION:-default}"
for l in "${locs[@]}"; do args+=(-schema-location "$l"); done
while read -r k; do
  kustomize build "$(dirname "$k")" --load-restrictor=LoadRestrictionsNone | kubeconform "${args[@]}" >/dev/null
done < <(find kubernetes -name kustomization.yaml)
"""


def tier_render(label: str, make: Callable[[Path], None], runs: int, rows: list[list[str]]) -> None:
    """makejinja vs gitops-render render, cold (no compiled cache) and warm rerun."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        repo = Path(tmp) / "repo"
        make(repo)
        env = env_for(repo)
        mj: list[Sample] = []
        for _ in range(runs):
            clean_outputs(repo)
            mj.append(run_measured([_bin("makejinja"), "-q"], repo, env))
        cold: list[Sample] = []
        for _ in range(runs):
            clean_outputs(repo)
            cold.append(run_measured([_bin("gitops-render"), "render", "--quiet"], repo, env))
        warm = [run_measured([_bin("gitops-render"), "render", "--quiet"], repo, env) for _ in range(runs)]
        m_t, m_rss = median(mj)
        c_t, c_rss = median(cold)
        w_t, w_rss = median(warm)
        rows.append([label, "makejinja 2.8.1 (baseline)", f"{m_t:.3f}", "1.0×", f"{m_rss:.0f}"])
        rows.append([label, "gitops-render render, first run", f"{c_t:.3f}", f"{m_t / c_t:.1f}×", f"{c_rss:.0f}"])
        rows.append([label, "gitops-render render, rerun (templates unchanged)", f"{w_t:.3f}", f"{m_t / w_t:.1f}×",
                     f"{w_rss:.0f}"])


def tier_configure(label: str, templates: int, secrets: int, runs: int, rows: list[list[str]]) -> None:
    """Status quo chain vs gitops-render configure: first run, no-op rerun, one value changed."""
    results: dict[str, dict[str, list[Sample]]] = {"status quo": {}, "gitops-render": {}}
    for _ in range(runs):
        for who in ("status quo", "gitops-render"):
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                repo = Path(tmp) / "repo"
                repo.mkdir()
                pub = age_key(repo)
                make_repo(repo, templates=templates, secrets=secrets, age_public_key=pub)
                env = env_for(repo)
                if who == "status quo":
                    run = lambda: run_measured(["bash", "-c", STATUS_QUO], repo, env)  # noqa: E731
                else:
                    run = lambda: run_measured([_bin("gitops-render"), "configure", "--quiet"], repo, env)  # noqa: E731
                results[who].setdefault("first run", []).append(run())
                results[who].setdefault("no-op rerun", []).append(run())
                data = json.loads((repo / "cluster.yaml").read_text())
                first = sorted(data["apps"])[0]
                data["apps"][first]["password"] += "-changed"
                (repo / "cluster.yaml").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
                results[who].setdefault("one value changed", []).append(run())
    for step in ("first run", "no-op rerun", "one value changed"):
        b_t, b_rss = median(results["status quo"][step])
        g_t, g_rss = median(results["gitops-render"][step])
        rows.append([label, f"{step}: status quo chain (baseline)", f"{b_t:.3f}", "1.0×", f"{b_rss:.0f}"])
        rows.append([label, f"{step}: gitops-render configure", f"{g_t:.3f}", f"{b_t / g_t:.1f}×", f"{g_rss:.0f}"])


def shipped_repo(repo: Path) -> None:
    repo.mkdir(parents=True)
    for name in ("templates", "schemas"):
        shutil.copytree(PROJECT / name, repo / name)
    shutil.copy2(PROJECT / "gitops-render.toml", repo)
    shutil.copy2(PROJECT / "cluster.sample.yaml", repo)
    age_key(repo)
    env = env_for(repo)
    subprocess.run([_bin("gitops-render"), "init", "--root", str(repo)], check=True, env=env,
                   cwd=repo, capture_output=True, input=b"")
    # makejinja sees the same data with schema defaults applied and secrets plain: render it as
    # makejinja would in the status quo (plugin + strict undefined).
    sys.path.insert(0, str(PROJECT / "src"))
    from gitops_render.load import load_data
    from gitops_render.schema import load_schema, validate_data

    data = validate_data(load_data([repo / "cluster.yaml"]), load_schema(repo / "schemas" / "cluster.schema.json"))
    (repo / "cluster.full.json").write_text(json.dumps(data))
    toml = (repo / "gitops-render.toml").read_text().split("[gitops-render.secrets]")[0]
    toml = toml.replace("[gitops-render", "[makejinja").replace('data = ["cluster.yaml"]', 'data = ["cluster.full.json"]')
    toml = "\n".join(line for line in toml.splitlines() if not line.startswith("schema ="))
    toml = toml.replace('plugins = ["plugin:Plugin"]', 'loaders = ["plugin:Plugin"]')
    toml = toml.replace('inputs = ["templates/overrides", "templates/config"]', 'inputs = ["templates/config"]')
    (repo / "makejinja.toml").write_text(toml + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 runs, no 10 000-template tier")
    ap.add_argument("--only", choices=["render", "configure"], default=None)
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    rows: list[list[str]] = []
    if args.only in (None, "render"):
        tier_render("shipped templates", shipped_repo, runs, rows)
        for n in (100, 1000) if args.quick else (100, 1000, 10000):
            tier_render(f"synthetic {n} templates", lambda r, n=n: make_repo(r, templates=n, secrets=0),
                        runs if n < 10000 else max(1, runs // 2), rows)
    if args.only in (None, "configure"):
        tier_configure("synthetic 1000 templates, 32 secrets", 1000, 32, max(1, runs // 2 + 1), rows)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| tree | step | median s | ratio vs baseline | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
