#!/usr/bin/env bash
# Sets up a machine for gitops-render, the same way for the README, Taskfile and .ci/run:
#  * the real tools gitops-render drives, at the versions the ecosystem pins, built with
#    `go install` into ./.tools/bin (or $GITOPS_RENDER_TOOLS): sops, age, age-keygen,
#    kubeconform, kustomize, helm (validation renders HelmRelease charts with `helm template`);
#  * a Python virtualenv ./.venv with gitops-render installed (editable) and `task` (go-task-bin);
#  * Graphviz (`dot`, for `gitops-render graph --format svg`): Debian's `graphviz` package with
#    apt-get when it is missing and this runs as root (otherwise it says how to install it);
#  * with --test: the test and dev dependencies (pytest, hypothesis, makejinja 2.8.1; the pinned
#    gates ruff, mypy, import-linter), the pinned
#    LiteLLM proxy in ./.venv-litellm (scripts/install-litellm.sh) for the real-consumer check,
#    and the environments of the real-repo tests (tests/test_real_cluster_template.py):
#    ./.venv-py313 and ./.venv-py312 (gitops-render + pydantic, which cluster-template's plugin
#    needs, on Python 3.13 / 3.12) and ./.venv-makejinja (makejinja 2.9.1 + pydantic on 3.13, the
#    chain cluster-template's own `just configure` runs). The interpreters come from pyenv
#    (~/.pyenv/versions/3.13.0, 3.12.1) or PATH; override with PYTHON313 / PYTHON312;
#    and the real Mermaid parser (npm mermaid + jsdom, pinned by tests/mermaid/package-lock.json) in
#    tests/mermaid/node_modules for the graph tests (needs Node.js >= 20 and npm); tmux for the
#    terminal stories; Graphviz (apt) for graph --format svg.
# Idempotent: a tool already present at the right version is not rebuilt.
#
# usage: scripts/install-tools.sh [--test]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${GITOPS_RENDER_TOOLS:-$here/.tools}
bin=$prefix/bin
mkdir -p "$bin"

SOPS_VERSION=${SOPS_VERSION:-v3.11.0}
AGE_VERSION=${AGE_VERSION:-v1.3.1}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.7.0}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$bin"
export GOFLAGS=${GOFLAGS:--mod=mod}

stamp() { echo "$bin/.$1.version"; }

go_tool() { # name module version
  local name=$1 module=$2 version=$3
  if [[ -x "$bin/$name" && "$(cat "$(stamp "$name")" 2>/dev/null)" == "$version" ]]; then
    return 0
  fi
  echo "install-tools: building $name $version ($module)" >&2
  if ! go install "$module@$version" 2>"$prefix/$name.log"; then
    echo "install-tools: retrying $name with GOSUMDB=off" >&2
    GOSUMDB=off go install "$module@$version" 2>>"$prefix/$name.log" || {
      cat "$prefix/$name.log" >&2; return 1; }
  fi
  echo "$version" > "$(stamp "$name")"
}

command -v go >/dev/null || { echo "install-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }

go_tool sops github.com/getsops/sops/v3/cmd/sops "$SOPS_VERSION" &
p1=$!
go_tool age filippo.io/age/cmd/age "$AGE_VERSION" && \
  go_tool age-keygen filippo.io/age/cmd/age-keygen "$AGE_VERSION" &
p2=$!
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" &
p3=$!
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" &
p4=$!
# `go install` embeds no full version (`helm version` prints v3.22): the stamp records v3.22.0
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" &
p5=$!
rc=0
for p in $p1 $p2 $p3 $p4 $p5; do wait "$p" || rc=1; done
[[ $rc == 0 ]] || { echo "install-tools: a tool failed to build (see $prefix/*.log)" >&2; exit 1; }

# Python side: the project in a virtualenv, plus task (go-task) from PyPI.
py=${PYTHON:-python3}
venv=$here/.venv
if [[ ! -x "$venv/bin/python" ]]; then
  "$py" -m venv "$venv"
fi
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test,dev]"
# the build backend pyproject.toml names (SPDX license expressions need setuptools >= 77): the wheel
# test builds without isolation, from this venv
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "setuptools>=77" wheel
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here$extras" go-task-bin
if [[ "${1:-}" == "--test" && -x "$here/scripts/install-litellm.sh" ]]; then
  bash "$here/scripts/install-litellm.sh"
fi

# The real-repo environments (--test). PyPI only; a venv whose stamp matches is left alone.
PYDANTIC_VERSION=${PYDANTIC_VERSION:-2.13.4}
MAKEJINJA_REAL_VERSION=${MAKEJINJA_REAL_VERSION:-2.9.1}

find_python() { # version (e.g. 3.13.0) -> interpreter path, or nothing
  local v=$1 var="PYTHON${1%.*}"; var=${var//./}
  local cand
  for cand in "${!var:-}" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v/bin/python" "$(command -v "python${v%.*}" || true)"; do
    if [[ -n "$cand" && -x "$cand" ]]; then echo "$cand"; return 0; fi
  done
}

py_venv() { # dir python stamp packages...
  local dir=$1 python=$2 want=$3; shift 3
  if [[ -x "$dir/bin/python" && "$(cat "$dir/.install-tools.stamp" 2>/dev/null)" == "$want" ]]; then
    return 0
  fi
  echo "install-tools: Python environment $dir ($want)" >&2
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$dir/.install-tools.stamp"
}

if [[ "${1:-}" == "--test" ]]; then
  for v in 3.13.0 3.12.1; do
    python=$(find_python "$v")
    if [[ -z "$python" ]]; then
      tag=${v%.*}
      echo "install-tools: Python $tag not found (pyenv install $v, or set PYTHON${tag//./}); the real-repo tests need it" >&2
      exit 1
    fi
    tag=${v%.*}; tag=${tag//./}
    project=$(sha256sum "$here/pyproject.toml" | cut -c1-12)
    py_venv "$here/.venv-py$tag" "$python" "$("$python" -V) gitops-render -e $here@$project pydantic==$PYDANTIC_VERSION" \
      -e "$here" "pydantic==$PYDANTIC_VERSION"
    if [[ "$v" == 3.13.0 ]]; then
      py_venv "$here/.venv-makejinja" "$python" "$("$python" -V) makejinja==$MAKEJINJA_REAL_VERSION pydantic==$PYDANTIC_VERSION" \
        "makejinja==$MAKEJINJA_REAL_VERSION" "pydantic==$PYDANTIC_VERSION"
    fi
  done
fi

# Graphviz: a system package (no Go or PyPI build of it); `graph --format svg` runs its `dot`.
if ! command -v dot >/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "install-tools: installing graphviz (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
  else
    echo "install-tools: Graphviz's dot is missing (for graph --format svg): apt-get install graphviz," \
         "brew install graphviz, or https://graphviz.org/download/" >&2
    [[ "${1:-}" == "--test" ]] && exit 1  # the graph tests render DOT with the real dot
  fi
fi

# tmux: the terminal stories run gitops-render on a real terminal (tests/operator_repo.on_terminal).
if [[ "${1:-}" == "--test" ]] && ! command -v tmux >/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "install-tools: installing tmux (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null
  else
    echo "install-tools: tmux is needed for the terminal tests: apt-get install tmux" >&2; exit 1
  fi
fi

# The real Mermaid parser for the graph tests, project-local (never global), from the lock file.
if [[ "${1:-}" == "--test" ]]; then
  mm=$here/tests/mermaid
  command -v npm >/dev/null || { echo "install-tools: npm (Node.js >= 20) is needed for the graph tests" >&2; exit 1; }
  if [[ ! -d "$mm/node_modules/mermaid" || "$mm/package-lock.json" -nt "$mm/node_modules/.package-lock.json" ]]; then
    echo "install-tools: installing mermaid and jsdom into $mm/node_modules (npm ci)" >&2
    npm ci --prefix "$mm" --no-audit --no-fund --loglevel=error >&2
  fi
fi
echo "install-tools: tools in $bin, Python environment in $venv" >&2
