#!/usr/bin/env bash
# The README's "main job" on a fresh machine: set up, create cluster.yaml from
# cluster.sample.yaml (with generated secrets) and an age key, then configure:
# render kubernetes/, encrypt secrets, validate.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/install-tools.sh
export PATH="$here/.venv/bin:$here/.tools/bin:$PATH"
# Without internet, point kubeconform at an offline schema mirror when one is beside the checkout.
shared=${GITOPS_RENDER_SHARED:-$here/../shared}
if [[ -z "${GITOPS_RENDER_SCHEMA_LOCATION:-}" && -d "$shared/kubernetes-schemas" ]]; then
  export GITOPS_RENDER_SCHEMA_LOCATION="$shared/kubernetes-schemas/core/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json;$shared/kubernetes-schemas/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
fi
# ...and the HelmRelease chart (app-template 4.5.0) at its offline copy, so validation renders it.
if [[ -z "${GITOPS_RENDER_HELM_CHARTS:-}" && -d "$shared/charts/app-template-4.5.0/chart" ]]; then
  export GITOPS_RENDER_HELM_CHARTS="app-template@4.5.0=$shared/charts/app-template-4.5.0/chart"
fi
gitops-render init
gitops-render configure --yes "$@"
