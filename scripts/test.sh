#!/usr/bin/env bash
# The project's test command (README and .ci/run): set up everything, then run the whole suite
# against the real sops, age, kubeconform, kustomize and LiteLLM proxy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/install-tools.sh --test
# Supported Pythons (3.11 runs the suite below): every module imports under 3.12 and 3.13 with
# warnings as errors. The real-repo tests (tests/test_real_cluster_template.py) then run
# gitops-render itself under 3.13 and 3.12 on onedr0p/cluster-template.
for py in "$here/.venv-py312/bin/python" "$here/.venv-py313/bin/python"; do
  PYTHONPATH="$here/src" "$py" -W error -c '
import importlib, pkgutil, sys, gitops_render
mods = [m.name for m in pkgutil.walk_packages(gitops_render.__path__, "gitops_render.") if m.name != "gitops_render.__main__"]
for m in mods:
    importlib.import_module(m)
print(f"python {sys.version.split()[0]}: {len(mods)} gitops_render modules import cleanly", file=sys.stderr)'
done
# Offline kubeconform schemas and chart schemas live beside the checkout in CI.
export GITOPS_RENDER_SHARED=${GITOPS_RENDER_SHARED:-$(cd "$here/.." && pwd)/shared}
exec "$here/.venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider "$@"
