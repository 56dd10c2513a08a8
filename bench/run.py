"""Benchmark: gitops-render against the chain it replaces, measured in the same run.

    python3 bench/run.py            # full table (about 10-15 minutes on 2 cores)
    python3 bench/run.py --quick    # 3 runs, no 10 000-template tier (about 4 minutes)

Prints a Markdown table of medians (seconds) and peak RSS (MiB) per step, with the
ratio against the baseline measured in the same run:

* render: gitops-render vs makejinja 2.8.1 on the shipped templates and on synthetic
  cluster-template-like trees of 100 / 1 000 / 10 000 templates (first run without
  a compiled-template cache, and rerun with templates unchanged);
* configure on the shipped tree and on a synthetic 1 000-template tree with 30+
  secrets: first run, no-op rerun, rerun after one value changed — gitops-render vs the status quo (makejinja, then a ``sops filestatus`` /
  ``sops --encrypt --in-place`` loop per file, then ``kustomize build | kubeconform``
  per kustomization), validation included on both sides.
"""

from __future__ import annotations

import argparse
import json
import re
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
    for d in (VENV, TOOLS, Path(sys.executable).parent):  # .venv (scripts/), tools, this interpreter
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


def run_measured(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
                 ok: tuple[int, ...] = (0,)) -> Sample:
    """Run a command; wall time, and the peak RSS of the largest process of its tree.

    ``os.wait4`` reports the child's own usage merged with that of the descendants
    it waited for (Linux: ``ru_maxrss`` is the maximum over them), so for the
    status-quo shell chain this is the largest of makejinja/sops/kustomize/kubeconform.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code not in ok:
            err.seek(0)
            raise SystemExit(f"bench: {' '.join(cmd)} failed ({code}) in {cwd}:\n{err.read().decode()[-3000:]}")
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
# cluster-template's encrypt-secrets task: two sops processes per secret file
find kubernetes -type f -name "*.sops.*" -print | while read -r f; do
  if [ "$(sops filestatus "$f" | jq ".encrypted")" == "false" ]; then sops --encrypt --in-place "$f"; fi
done
# kubeconform.sh: one kustomize build + one kubeconform per kustomization (offline schemas)
args=(-strict -ignore-missing-schemas -skip Gateway,HTTPRoute,Secret -kubernetes-version 1.35.0)
IFS=';' read -ra locs <<< "${GITOPS_RENDER_SCHEMA_LOCATION:-default}"
for l in "${locs[@]}"; do args+=(-schema-location "$l"); done
find kubernetes/flux -maxdepth 1 -type f -name "*.yaml" -print0 | while IFS= read -r -d '' f; do
  kubeconform "${args[@]}" "$f" >/dev/null
done
while read -r k; do
  kustomize build "$(dirname "$k")" --load-restrictor=LoadRestrictionsNone | kubeconform "${args[@]}" >/dev/null
done < <(find kubernetes/flux kubernetes/apps -name kustomization.yaml 2>/dev/null | sort)
"""


def ratio(base: float, ours: float) -> str:
    return f"{base / ours:.1f}×" if ours > 0 else "-"


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
                env = env_for(repo)
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
    subprocess.run([_bin("gitops-render"), "init", "--root", str(repo), "--yes"], check=True, env=env,
                   cwd=repo, capture_output=True, input=b"")
    # makejinja sees the same data with schema defaults applied (the status quo has no schema
    # step that fills defaults, so the data file carries them), the same plugin and undefined mode.
    sys.path.insert(0, str(PROJECT / "src"))
    from gitops_render.core.load import load_data
    from gitops_render.data.schema import load_schema, validate_data

    data = validate_data(load_data([repo / "cluster.yaml"]), load_schema(repo / "schemas" / "cluster.schema.json"))
    (repo / "cluster.full.json").write_text(json.dumps(data))
    toml = (repo / "gitops-render.toml").read_text().split("[gitops-render.secrets]")[0]
    toml = toml.replace("[gitops-render", "[makejinja").replace('data = ["cluster.yaml"]', 'data = ["cluster.full.json"]')
    toml = "\n".join(line for line in toml.splitlines() if not line.startswith("schema ="))
    toml = toml.replace('plugins = ["plugin:Plugin"]', 'loaders = ["plugin:Plugin"]')
    (repo / "makejinja.toml").write_text(toml + "\n")


def byte_compile_gitops_render() -> None:
    """Byte-compile the installed gitops_render package, as ``pip install`` does.

    The benchmark runs with PYTHONDONTWRITEBYTECODE=1; an editable install has no
    ``__pycache__`` of its own, so without this every measured run would compile the
    package from source (makejinja and jinja2 come with their byte code).
    """
    exe = Path(_bin("gitops-render"))
    first = exe.read_bytes()[:200].split(b"\n", 1)[0]
    shebang = first[2:].decode(errors="replace").strip() if first.startswith(b"#!") else ""
    python = shebang if "python" in shebang and " " not in shebang else sys.executable
    subprocess.run([python, "-c", "import compileall, os, gitops_render; "
                    "compileall.compile_dir(os.path.dirname(gitops_render.__file__), quiet=1)"],
                   check=False, capture_output=True)


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                   if l.startswith("MemTotal")) / 1024 / 1024
    except (OSError, StopIteration):
        mem = 0.0
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per render measurement (median)")
    ap.add_argument("--quick", action="store_true", help="3 runs, no 10 000-template tier")
    ap.add_argument("--only", choices=["render", "configure"], default=None)
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

    if args.only in (None, "render"):
        for n in (100, 1000) if args.quick else (100, 1000, 10000):
            label = f"synthetic {n:,} templates".replace(",", " ")
            attempt(label, lambda n=n, label=label: tier_render(
                label, lambda r: make_repo(r, templates=n, secrets=0), runs if n < 10000 else 2, rows))
        if shipped:
            attempt("shipped templates", lambda: tier_render("shipped templates", shipped_repo, runs, rows))
    if args.only in (None, "configure"):
        cruns = 2 if args.quick else 3
        attempt("synthetic 1 000 templates", lambda: tier_configure(
            "synthetic 1 000 templates", _synthetic_configure_repo(1000, args.secrets), _bump_synthetic,
            cruns, rows, notes))
        if shipped:
            attempt("shipped templates", lambda: tier_configure(
                "shipped templates", shipped_repo, _bump_shipped, cruns, rows, notes))
    print(f"machine: {machine()}")
    print(f"runs: {runs} per render step, configure steps {2 if args.quick else 3}; medians; "
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
