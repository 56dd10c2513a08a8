#!/usr/bin/env bash
# Installs the real LiteLLM proxy twice, so tests can start it on a rendered config.yaml with
# the environment the pod gets (tests/litellm_harness.py, tests/test_litellm_proxy.py):
#
#   deployed  the version the HelmRelease deploys, into ./.venv-litellm ($LITELLM_VENV).
#             ONE source: the default of litellm_image_tag in schemas/cluster.schema.json
#             ("main-v1.80.8-stable.1" -> 1.80.8).
#   newest    the newest release that installs from the registry here, into
#             ./.venv-litellm-newest ($LITELLM_NEWEST_VENV). ONE source: LITELLM_NEWEST_VERSION
#             below (releases after it need a newer certifi than the registry serves).
#
# Each venv gets what the official image ships next to litellm and what changes behaviour:
# redis-py at the image's pin (LiteLLM reads REDIS_* variables through redis-py's signature, so
# the version decides which variables count), prometheus_client, langfuse and opentelemetry (callbacks
# the config names fail at startup without them). Also installs redis-server (Debian) when it is
# missing and apt-get is usable: the harness starts a real one on loopback.
# Idempotent: a venv that already holds exactly these versions is left alone.
#
# Usage: scripts/install-litellm.sh [deployed|newest|all] [--print-version]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
schema=$here/schemas/cluster.schema.json
python=${PYTHON:-python3}

# The newest litellm[proxy] that installs here. Bump deliberately; add its redis pin below.
LITELLM_NEWEST_VERSION=1.108.7

# redis-py the official image of each LiteLLM version ships:
# - 1.80.8: the image installs `pip wheel -r requirements.txt`; LiteLLM's requirements.txt pins
#   redis==5.2.1 (unchanged from the 1.7x releases until after 1.83).
# - 1.108.7: no requirements pin in the wheel metadata (redis comes in through redisvl /
#   hiredis ranges); litellm/caching/redis_cluster_node_isolation.py names the one redis-py
#   it is verified against, _VERIFIED_REDIS_VERSIONS = {"5.3.1"}, the image's pin.
redis_for() {
  case "$1" in
    1.80.8) echo 5.2.1 ;;
    1.108.7) echo 5.3.1 ;;
    *) echo "install-litellm: no redis-py pin known for litellm $1; add it to redis_for() in $0" >&2
       return 2 ;;
  esac
}
# Image pins (LiteLLM requirements.txt) of the callback packages the rendered config uses.
# 1.80.8: langfuse 2.59.7 and opentelemetry 1.25.0 (its requirements.txt). 1.108.7 refuses
# langfuse 2.x for the 'langfuse' callback ("litellm requires langfuse>=4.7,<5"), so its image
# ships a 4.x: 4.18.0, the newest here, with the opentelemetry it needs (1.45.2).
PROMETHEUS_CLIENT=0.20.0
langfuse_for() { case "$1" in 1.80.8) echo 2.59.7 ;; *) echo 4.18.0 ;; esac; }
otel_for() { case "$1" in 1.80.8) echo 1.25.0 ;; *) echo 1.45.2 ;; esac; }

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

deployed_version() {
  if [[ -n "${LITELLM_VERSION:-}" ]]; then
    echo "$LITELLM_VERSION"
    return
  fi
  local tag version
  tag=$(schema_tag)
  if [[ -z "$tag" ]]; then
    echo "install-litellm: no litellm_image_tag default in $schema (the one place the version is kept)" >&2
    return 2
  fi
  version=$(tag_to_version "$tag")
  if [[ -z "$version" ]]; then
    echo "install-litellm: cannot derive a pip version from image tag \"$tag\"" >&2
    return 2
  fi
  echo "$version"
}

which_set=all
print_only=0
for arg in "$@"; do
  case "$arg" in
    deployed|newest|all) which_set=$arg ;;
    --print-version) print_only=1 ;;
    *) echo "usage: $0 [deployed|newest|all] [--print-version]" >&2; exit 2 ;;
  esac
done

roles=()
case "$which_set" in
  all) roles=(deployed newest) ;;
  *) roles=("$which_set") ;;
esac

version_of() {
  case "$1" in
    deployed) deployed_version ;;
    newest) echo "${LITELLM_NEWEST_VERSION}" ;;
  esac
}
venv_of() {
  case "$1" in
    deployed) echo "${LITELLM_VENV:-$here/.venv-litellm}" ;;
    newest) echo "${LITELLM_NEWEST_VENV:-$here/.venv-litellm-newest}" ;;
  esac
}

if (( print_only )); then
  for role in "${roles[@]}"; do
    v=$(version_of "$role")
    if (( ${#roles[@]} > 1 )); then echo "$role $v redis==$(redis_for "$v")"; else echo "$v"; fi
  done
  exit 0
fi

# "litellm redis prometheus_client langfuse" versions in a venv (empty when absent).
installed_set() {
  [[ -x "$1/bin/python" ]] || return 0
  "$1/bin/python" - <<'PY' 2>/dev/null || true
from importlib import metadata
try:
    print(" ".join(metadata.version(p) for p in ("litellm", "redis", "prometheus_client", "langfuse",
                                                  "opentelemetry-sdk")))
except metadata.PackageNotFoundError:
    pass
PY
}

if ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-litellm: installing redis-server (apt)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >/dev/null
  else
    echo "install-litellm: redis-server is missing; install it (Debian: apt-get install redis-server)" >&2
    exit 2
  fi
fi

for role in "${roles[@]}"; do
  version=$(version_of "$role")
  redis=$(redis_for "$version")
  venv=$(venv_of "$role")
  otel=$(otel_for "$version")
  langfuse=$(langfuse_for "$version")
  want="$version $redis $PROMETHEUS_CLIENT $langfuse $otel"
  if [[ "$(installed_set "$venv")" == "$want" && -x "$venv/bin/litellm" ]]; then
    echo "install-litellm: $role litellm $version (redis $redis) already in $venv"
    continue
  fi
  echo "install-litellm: installing $role litellm[proxy]==$version redis==$redis into $venv" >&2
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  start=$(date +%s)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "litellm[proxy]==$version" "redis==$redis" "prometheus_client==$PROMETHEUS_CLIENT" \
    "langfuse==$langfuse" "opentelemetry-api==$otel" "opentelemetry-sdk==$otel" \
    "opentelemetry-exporter-otlp==$otel"
  end=$(date +%s)
  got=$(installed_set "$venv")
  if [[ "$got" != "$want" ]]; then
    echo "install-litellm: $venv holds \"$got\", wanted \"$want\"" >&2
    exit 1
  fi
  echo "install-litellm: $role litellm $version installed in $((end - start)) s ($(du -sh "$venv" | cut -f1))" >&2
done
