#!/usr/bin/env bash
# The project's test command (README and .ci/run): set up everything, run the gates
# (ruff check, mypy --strict, import-linter: rule sets in pyproject.toml), then the whole
# suite against the real sops, age, kubeconform, kustomize and LiteLLM proxy.
# Every gate runs even when an earlier one fails (one run shows every problem); the script
# exits non-zero when any gate or pytest fails, including pytest's exit 5 ("no tests ran").
#
# usage: scripts/test.sh [pytest args...]     GATES=0 skips the gates (a quick local rerun)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/install-tools.sh --test
bin=$here/.venv/bin
failed=()
gate() { # name command...
  local name=$1; shift
  echo "gate: $name" >&2
  if ! "$@"; then failed+=("$name"); fi
}
if [[ "${GATES:-1}" != 0 ]]; then
  gate "ruff check" "$bin/ruff" check src templates/scripts
  gate "mypy --strict" "$bin/mypy"
  gate "lint-imports" "$bin/lint-imports"
fi
# Supported Pythons (3.11 runs the suite below): every module imports under 3.12 and 3.13 with
# warnings as errors. The real-repo tests (tests/test_real_cluster_template.py) then run
# gitops-render itself under 3.13 and 3.12 on onedr0p/cluster-template.
py_imports() {
  PYTHONPATH="$here/src" "$1" -W error -c '
import importlib, pkgutil, sys, gitops_render
mods = [m.name for m in pkgutil.walk_packages(gitops_render.__path__, "gitops_render.") if m.name != "gitops_render.__main__"]
for m in mods:
    importlib.import_module(m)
print(f"python {sys.version.split()[0]}: {len(mods)} gitops_render modules import cleanly", file=sys.stderr)'
}
for py in "$here/.venv-py312/bin/python" "$here/.venv-py313/bin/python"; do
  gate "imports under $py" py_imports "$py"
done
# Offline kubeconform schemas and chart schemas live beside the checkout in CI.
export GITOPS_RENDER_SHARED=${GITOPS_RENDER_SHARED:-$(cd "$here/.." && pwd)/shared}
rc=0
"$bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider "$@" || rc=$?
if [[ $rc != 0 ]]; then
  failed+=("pytest (exit $rc$([[ $rc == 5 ]] && echo ': no tests ran'))")
fi
if (( ${#failed[@]} )); then
  printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test.sh: all gates and tests passed" >&2
