#!/usr/bin/env bash
# The project's test command (README and .ci/run): set up everything, then run the whole suite
# against the real sops, age, kubeconform, kustomize and LiteLLM proxy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/install-tools.sh --test
# Offline kubeconform schemas and chart schemas live beside the checkout in CI.
export GITOPS_RENDER_SHARED=${GITOPS_RENDER_SHARED:-$(cd "$here/.." && pwd)/shared}
exec "$here/.venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider "$@"
