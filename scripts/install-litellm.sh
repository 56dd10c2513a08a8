#!/usr/bin/env bash
# Installs the real LiteLLM proxy into ./.venv-litellm (or $LITELLM_VENV), at the version
# the rendered HelmRelease deploys, so that tests can start it against a rendered
# config.yaml (tests/litellm_harness.py, tests/test_litellm_proxy.py).
#
# The version has ONE source: the default of the LiteLLM image tag in
# schemas/cluster.schema.json (e.g. "main-v1.80.8-stable.1" -> pip version 1.80.8).
# LITELLM_VERSION overrides it. Idempotent: a venv that already has that version of
# litellm (and prometheus_client) is left alone.
#
# Usage: scripts/install-litellm.sh [--print-version]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LITELLM_VENV:-$here/.venv-litellm}
schema=$here/schemas/cluster.schema.json
python=${PYTHON:-python3}

# Reads the default of the image-tag property from the schema (first property named
# litellm_image_tag, anywhere in the schema, that has a string default).
schema_tag() {
  [[ -f "$schema" ]] || return 0
  "$python" - "$schema" <<'PY'
import json, sys

def walk(node):
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            prop = props.get("litellm_image_tag")
            if isinstance(prop, dict) and isinstance(prop.get("default"), str):
                yield prop["default"]
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)

with open(sys.argv[1], encoding="utf-8") as fh:
    print(next(walk(json.load(fh)), ""))
PY
}

# "main-v1.80.8-stable.1" / "v1.80.8-stable" / "1.80.8" -> "1.80.8"
tag_to_version() {
  "$python" -c '
import re, sys
m = re.search(r"(?:^|[^0-9.])v?([0-9]+\.[0-9]+\.[0-9]+)(?![0-9])", "-" + sys.argv[1])
print(m.group(1) if m else "")' "$1"
}

if [[ -n "${LITELLM_VERSION:-}" ]]; then
  version=$LITELLM_VERSION
  source_desc="LITELLM_VERSION"
else
  tag=$(schema_tag)
  if [[ -n "$tag" ]]; then
    source_desc="$schema (litellm_image_tag default \"$tag\")"
  else
    echo "install-litellm: no litellm_image_tag default in $schema (the one place the version is kept)" >&2
    exit 2
  fi
  version=$(tag_to_version "$tag")
  if [[ -z "$version" ]]; then
    echo "install-litellm: cannot derive a pip version from image tag \"$tag\"" >&2
    exit 2
  fi
fi

if [[ "${1:-}" == "--print-version" ]]; then
  echo "$version"
  exit 0
fi

installed_version() {
  [[ -x "$venv/bin/python" ]] || return 0
  "$venv/bin/python" - <<'PY' 2>/dev/null || true
from importlib import metadata
try:
    metadata.version("prometheus_client")
    print(metadata.version("litellm"))
except metadata.PackageNotFoundError:
    pass
PY
}

current=$(installed_version)
if [[ "$current" == "$version" && -x "$venv/bin/litellm" ]]; then
  echo "install-litellm: litellm $version already in $venv"
  exit 0
fi

echo "install-litellm: installing litellm[proxy]==$version from $source_desc into $venv" >&2
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
start=$(date +%s)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "litellm[proxy]==$version" prometheus_client
end=$(date +%s)
echo "install-litellm: litellm $(installed_version) installed in $((end - start)) s ($(du -sh "$venv" | cut -f1))" >&2
