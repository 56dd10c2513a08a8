"""Measurement machinery shared by the benchmark tiers (bench/run.py, bench/real.py).

Every step is a separate process started from the command line; ``run_measured`` gives
its wall time and the peak RSS of the largest process of its tree. ``STATUS_QUO`` is the
chain cluster-template's ``configure`` runs (makejinja, the per-secret sops loop, and
``kustomize build | kubeconform`` per kustomization as its ``kubeconform.sh`` does).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SHARED = Path(os.environ.get("GITOPS_RENDER_SHARED", PROJECT.parent / "shared"))

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
    code: int = 0


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
    return Sample(elapsed, usage.ru_maxrss / 1024, code)


def median(samples: list[Sample]) -> tuple[float, float]:
    return statistics.median(s.seconds for s in samples), max(s.max_rss_mib for s in samples)


def env_for(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV}:{TOOLS}:{env.get('PATH', '')}"
    env["SOPS_AGE_KEY_FILE"] = str(repo / "age.key")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    shared = SHARED / "kubernetes-schemas"
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


#: ``bash -c STATUS_QUO``; env MAKEJINJA (command, default ``makejinja``), SECRET_ROOTS (where the
#: encrypt loop looks, default ``kubernetes``), VALIDATE=0 (stop after encrypting)
STATUS_QUO = r"""
set -euo pipefail
PYTHONDONTWRITEBYTECODE=1 ${MAKEJINJA:-makejinja} -q
# cluster-template's encrypt-secrets task: two sops processes per secret file
find ${SECRET_ROOTS:-kubernetes} -type f -name "*.sops.*" -print | while read -r f; do
  if [ "$(sops filestatus "$f" | jq ".encrypted")" == "false" ]; then sops --encrypt --in-place "$f"; fi
done
[ "${VALIDATE:-1}" = 1 ] || exit 0
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


def byte_compile_gitops_render(exe: Path | None = None) -> None:
    """Byte-compile the installed gitops_render package, as ``pip install`` does.

    The benchmark runs with PYTHONDONTWRITEBYTECODE=1; an editable install has no
    ``__pycache__`` of its own, so without this every measured run would compile the
    package from source (makejinja and jinja2 come with their byte code).
    """
    exe = exe or Path(_bin("gitops-render"))
    first = exe.read_bytes()[:200].split(b"\n", 1)[0]
    shebang = first[2:].decode(errors="replace").strip() if first.startswith(b"#!") else ""
    python = shebang if "python" in shebang and " " not in shebang else sys.executable
    subprocess.run([python, "-c", "import compileall, os, gitops_render; "
                    "compileall.compile_dir(os.path.dirname(gitops_render.__file__), quiet=1)"],
                   check=False, capture_output=True)
