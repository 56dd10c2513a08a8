"""Benchmark: gitops-render against the chain it replaces, measured in the same run.

    python3 bench/run.py            # full table (about 10-15 minutes on 2 cores)
    python3 bench/run.py --quick    # 3 runs, no 10 000-template tier, cluster-template public.toml only
    python3 bench/run.py --only real [--configs public,private]   # the real trees only

Prints a Markdown table of medians (seconds) and peak RSS (MiB) per step, with the
ratio against the baseline measured in the same run:

* render: gitops-render vs makejinja 2.8.1 on synthetic
  cluster-template-like trees of 100 / 1 000 / 10 000 templates (first run without
  a compiled-template cache, and rerun with templates unchanged);
* configure on a synthetic 1 000-template tree with 30+ secrets: first run, no-op
  rerun, rerun after one value changed — gitops-render vs the status quo (makejinja,
  then a ``sops filestatus`` / ``sops --encrypt --in-place`` loop per file, then
  ``kustomize build | kubeconform`` per kustomization), validation included on both sides;
* real trees (``bench/real.py``, Python 3.13, makejinja 2.9.1): the onedr0p/cluster-template
  snapshot (its 8 configs) and the shipped templates, render and configure, cold / warm /
  one value changed, against the status-quo chain, and the floor (the repo's plugin alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))
import real  # noqa: E402
from measure import (  # noqa: E402
    STATUS_QUO,
    Sample,
    _bin,
    age_key,
    byte_compile_gitops_render,
    clean_outputs,
    env_for,
    median,
    ratio,
    run_measured,
)
from synth import make_repo  # noqa: E402


def tier_render(label: str, make: Callable[[Path], None], runs: int, rows: list[list[str]]) -> None:
    """makejinja vs gitops-render render: first run (no compiled-template cache) and rerun."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        repo = Path(tmp) / "repo"
        make(repo)
        env = env_for(repo)
        gr = [_bin("gitops-render"), "render", "--quiet", "--yes"]
        mj_first: list[Sample] = []
        mj_rerun: list[Sample] = []
        cold: list[Sample] = []
        warm: list[Sample] = []
        for _ in range(runs):  # interleaved, so that drift of the machine hits both tools alike
            clean_outputs(repo)
            mj_first.append(run_measured([_bin("makejinja"), "-q"], repo, env))
            mj_rerun.append(run_measured([_bin("makejinja"), "-q"], repo, env))
            clean_outputs(repo)
            cold.append(run_measured(gr, repo, env))
            warm.append(run_measured(gr, repo, env))
        m_t, m_rss = median(mj_first)
        r_t, r_rss = median(mj_rerun)
        c_t, c_rss = median(cold)
        w_t, w_rss = median(warm)
        rows.append([label, "makejinja 2.8.1, first run (baseline)", f"{m_t:.2f}", "1.0×", f"{m_rss:.0f}"])
        rows.append([label, "gitops-render render, first run", f"{c_t:.2f}", ratio(m_t, c_t), f"{c_rss:.0f}"])
        rows.append([label, "makejinja 2.8.1, rerun (baseline)", f"{r_t:.2f}", "1.0×", f"{r_rss:.0f}"])
        rows.append([label, "gitops-render render, rerun (templates unchanged)", f"{w_t:.2f}", ratio(r_t, w_t),
                     f"{w_rss:.0f}"])


def _bump_synthetic(repo: Path) -> None:
    """Change one value: the password of the first app (one secret changes)."""
    for name in ("cluster.yaml",):
        data = json.loads((repo / name).read_text())
        first = sorted(data["apps"])[0]
        data["apps"][first]["password"] += "-changed"
        (repo / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _bump_shipped(repo: Path) -> None:
    """Change one value: the LiteLLM replica count (in cluster.yaml and makejinja's data file)."""
    text = (repo / "cluster.yaml").read_text()
    new = re.sub(r"^litellm_replicas:\s*\d+", "litellm_replicas: 2", text, count=1, flags=re.M)
    if new == text:
        new = text + "\nlitellm_replicas: 2\n"
    (repo / "cluster.yaml").write_text(new)
    full = json.loads((repo / "cluster.full.json").read_text())
    full["litellm_replicas"] = 2
    (repo / "cluster.full.json").write_text(json.dumps(full))


def _synthetic_configure_repo(templates: int, secrets: int) -> Callable[[Path], None]:
    def make(repo: Path) -> None:
        repo.mkdir(parents=True)
        pub = age_key(repo)
        make_repo(repo, templates=templates, secrets=secrets, age_public_key=pub)
    return make


def tier_configure(label: str, make: Callable[[Path], None], bump: Callable[[Path], None], runs: int,
                   rows: list[list[str]], notes: list[str]) -> None:
    """Status quo chain vs gitops-render configure: first run, no-op rerun, one value changed."""
    results: dict[str, dict[str, list[Sample]]] = {"status quo": {}, "gitops-render": {}}
    for _ in range(runs):
        for who in ("status quo", "gitops-render"):
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                repo = Path(tmp) / "repo"
                make(repo)
                env = {**env_for(repo), "MAKEJINJA": _bin("makejinja")}  # makejinja 2.8.1, wherever _bin finds it
                if who == "status quo":
                    cmd = ["bash", "-c", STATUS_QUO]
                else:
                    cmd = [_bin("gitops-render"), "configure", "--quiet", "--yes"]
                for step in ("first run", "no-op rerun"):
                    results[who].setdefault(step, []).append(run_measured(cmd, repo, env))
                if who == "gitops-render":
                    secrets = sum(1 for _ in (repo / "kubernetes").rglob("*.sops.*"))
                    kustomizations = sum(1 for _ in (repo / "kubernetes").rglob("kustomization.yaml"))
                    templates = sum(1 for _ in (repo / "templates").rglob("*.j2"))
                    note = (f"{label}: {templates} templates, {secrets} secret files, "
                            f"{kustomizations} kustomizations")
                    if note not in notes:
                        notes.append(note)
                bump(repo)
                results[who].setdefault("one value changed", []).append(run_measured(cmd, repo, env))
    for step in ("first run", "no-op rerun", "one value changed"):
        b_t, b_rss = median(results["status quo"][step])
        g_t, g_rss = median(results["gitops-render"][step])
        rows.append([label, f"configure, {step}: status quo chain (baseline)", f"{b_t:.2f}", "1.0×", f"{b_rss:.0f}"])
        rows.append([label, f"configure, {step}: gitops-render", f"{g_t:.2f}", ratio(b_t, g_t), f"{g_rss:.0f}"])


def shipped_repo(repo: Path) -> None:
    """This repository's template set with cluster.sample.yaml, plus an equivalent makejinja setup."""
    repo.mkdir(parents=True)
    for name in ("templates", "schemas"):
        shutil.copytree(PROJECT / name, repo / name)
    shutil.copy2(PROJECT / "gitops-render.toml", repo)
    shutil.copy2(PROJECT / "cluster.sample.yaml", repo)
    env = env_for(repo)
    subprocess.run([_bin("gitops-render"), "init", "--root", str(repo)], check=True, env=env,
                   cwd=repo, capture_output=True, input=b"")
    # makejinja sees the same data with schema defaults applied (the status quo has no schema
    # step that fills defaults, so the data file carries them), the same plugin and undefined mode.
    sys.path.insert(0, str(PROJECT / "src"))
    from gitops_render.core.load import load_data
    from gitops_render.data.schema import load_schema, validate_data

    data = validate_data(load_data([repo / "cluster.yaml"]), load_schema(repo / "schemas" / "cluster.schema.json"))
    (repo / "cluster.full.json").write_text(json.dumps(data))
    toml = (repo / "gitops-render.toml").read_text().split("[gitops-render.secrets]")[0]
    toml = toml.replace("[gitops-render", "[makejinja")
    toml = toml.replace('data = ["cluster.yaml"]', 'data = ["cluster.full.json"]')
    toml = "\n".join(line for line in toml.splitlines() if not line.startswith("schema ="))
    toml = toml.replace('plugins = ["plugin:Plugin"]', 'loaders = ["plugin:Plugin"]')
    (repo / "makejinja.toml").write_text(toml + "\n")


def shipped_tree(dest: Path) -> real.RealTree:
    """The shipped templates as a real tree: its one sample config, its plugin as the floor."""
    shipped_repo(dest)
    floor = (str(real.PY313 / "python"), "-c",
             "import json, sys; sys.path.insert(0, 'templates/scripts'); import plugin; "
             "plugin.Plugin(json.load(open('cluster.full.json'))).data()")
    return real.RealTree("shipped templates", dest, ("cluster.sample.yaml",), lambda _repo, _config: None,
                         _bump_shipped, "kubernetes", floor)


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal")) / 1024 / 1024
    except (OSError, StopIteration):
        mem = 0.0
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per render measurement (median)")
    ap.add_argument("--quick", action="store_true", help="3 runs, no 10 000-template tier")
    ap.add_argument("--only", choices=["real", "render", "configure"], default=None,
                    help="real: the cluster-template snapshot and the shipped templates (Python 3.13, makejinja "
                         "2.9.1); render / configure: the synthetic trees")
    ap.add_argument("--configs", default="",
                    help="cluster-template configs to run, comma-separated (default: all 8)")
    ap.add_argument("--secrets", type=int, default=36,
                    help="secret templates in the configure tree (a few apps are disabled: 31 render)")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    rows: list[list[str]] = []
    notes: list[str] = []
    started = time.perf_counter()
    byte_compile_gitops_render()
    shipped = (PROJECT / "templates" / "config").is_dir() and (PROJECT / "cluster.sample.yaml").is_file()
    def attempt(label: str, tier: Callable[[], None]) -> None:
        """Run one tier; a failure (e.g. a template set being edited) is a row, not the end of the run."""
        before = len(rows)
        try:
            tier()
        except SystemExit as exc:
            first = next((ln for ln in str(exc).splitlines()[::-1] if ln.strip()), "failed")
            rows.append([label, f"failed: {first.strip()[:160]}", "-", "-", "-"])
        for r in rows[before:]:
            print("| " + " | ".join(r) + " |", file=sys.stderr, flush=True)

    if args.only in (None, "real"):
        configs = tuple(c for c in args.configs.split(",") if c) if args.configs else (
            ("public",) if args.quick else real.CT_CONFIGS)
        with tempfile.TemporaryDirectory(prefix="bench-trees-") as trees:
            attempt("cluster-template", lambda: real.tier_real(
                real.cluster_template(Path(trees) / "ct", configs), runs, rows, notes))
            if shipped:
                attempt("shipped templates", lambda: real.tier_real(
                    shipped_tree(Path(trees) / "shipped"), runs, rows, notes))
    if args.only in (None, "render"):
        for n in (100, 1000) if args.quick else (100, 1000, 10000):
            label = f"synthetic {n:,} templates".replace(",", " ")
            attempt(label, lambda n=n, label=label: tier_render(
                label, lambda r: make_repo(r, templates=n, secrets=0), runs if n < 10000 else 2, rows))
    if args.only in (None, "configure"):
        cruns = 2 if args.quick else 3
        attempt("synthetic 1 000 templates", lambda: tier_configure(
            "synthetic 1 000 templates", _synthetic_configure_repo(1000, args.secrets), _bump_synthetic,
            cruns, rows, notes))
    print(f"machine: {machine()}")
    print(f"runs: {runs} per render step and per real-tree step (Python 3.13 there), synthetic configure steps "
          f"{2 if args.quick else 3}; medians; "
          f"peak RSS = largest process of the run (max over runs); total {time.perf_counter() - started:.0f} s")
    for n in notes:
        print(f"tree: {n}")
    print()
    print("| tree | step | median s | speed-up vs baseline | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
