"""Synthetic cluster-template-like repositories for benchmarks and large-input tests.

``make_repo(dest, templates=1000, secrets=30)`` writes a repo with:

* ``gitops-render.toml`` and an equivalent ``makejinja.toml`` (same inputs, data,
  plugin, delimiters), so both tools render the same tree;
* ``templates/config/kubernetes/apps/<ns>/<app>/app/*.yaml.j2``: conditionals
  (whole-file feature gates), loops, an include of a partial and macros from an
  imported macro file;
* ``secrets`` templates named ``secret.sops.yaml.j2`` (Kubernetes Secrets);
* a Flux/kustomize structure like cluster-template's: ``kubernetes/flux/cluster/ks.yaml``
  (root) -> ``kubernetes/apps/kustomization.yaml`` -> ``<ns>/kustomization.yaml``
  (namespace + the apps' ``ks.yaml``) -> ``<ns>/<app>/app/kustomization.yaml`` listing
  exactly the files the gates render, so the status-quo validation loop and
  gitops-render's validation build the same kustomizations;
* ``templates/scripts/plugin.py``: a makejinja plugin deriving flags and values;
* ``cluster.yaml`` with the data the templates read.

The generator is deterministic (same arguments, same bytes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["make_repo"]

TOML_COMMON = """\
inputs = ["templates/config"]
output = "."
data = ["cluster.yaml"]
import_paths = ["templates/scripts"]
jinja_suffix = ".j2"
exclude_patterns = ["*.partial.yaml.j2"]
force = true
undefined = "strict"
"""

DELIMS = """\
[{table}.delimiter]
block_start = "#%"
block_end = "%#"
variable_start = "#{{"
variable_end = "}}#"
comment_start = "#|"
comment_end = "#|"
"""

PLUGIN = '''\
"""Derivations for the synthetic benchmark tree (makejinja plugin API)."""
import hashlib


def _feature_flags(data):
    return {f"feature_{i}_active": bool(data.get("features", {}).get(f"f{i}", False)) for i in range(10)}


def _app_values(data):
    return {"replicas_total": sum(a["replicas"] for a in data["apps"].values())}


class Plugin:
    def __init__(self, data):
        self._data = data

    def data(self):
        out = {}
        for derive in (_feature_flags, _app_values):
            out.update(derive(self._data))
        return out

    def filters(self):
        return [short_hash]

    def functions(self):
        return [app_port]


def short_hash(value):
    return hashlib.sha256(str(value).encode()).hexdigest()[:8]


def app_port(name):
    return 8000 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 1000
'''

MACROS = """\
#% macro labels(name, ns) %#
app.kubernetes.io/name: #{ name }#
app.kubernetes.io/part-of: #{ ns }#
#% endmacro %#
#% macro resources(cpu, mem) %#
resources:
  requests: {cpu: "#{ cpu }#m", memory: "#{ mem }#Mi"}
#% endmacro %#
"""

PARTIAL = """\
annotations:
  bench/generated: "true"
  bench/hash: "#{ name | short_hash }#"
"""

APP_TEMPLATE = """\
#% if apps[app].enabled and feature_{feature}_active %#
#% import "shared/macros.partial.yaml.j2" as m %#
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: #{{ app }}#-{idx}
  namespace: #{{ apps[app].namespace }}#
  labels:
    #{{ m.labels(app, apps[app].namespace) | indent(4) }}#
  #% set name = app_name %#
#% filter indent(2, first=True) %#
#% include "shared/annotations.partial.yaml.j2" %#
#% endfilter %#
spec:
  replicas: #{{ apps[app].replicas }}#
  selector:
    matchLabels:
      app.kubernetes.io/name: #{{ app }}#
  template:
    metadata:
      labels:
        app.kubernetes.io/name: #{{ app }}#
    spec:
      containers:
        - name: main
          image: "#{{ apps[app].image }}#:#{{ apps[app].tag }}#"
          ports:
            - containerPort: #{{ app_port(app) }}#
          env:
#% for key, value in apps[app].env.items() | sort %#
            - name: #{{ key | upper }}#
              value: "#{{ value }}#"
#% endfor %#
          #{{ m.resources(apps[app].cpu, apps[app].mem) | indent(10) }}#
#% endif %#
"""

SECRET_TEMPLATE = """\
#% if apps[app].enabled %#
---
apiVersion: v1
kind: Secret
metadata:
  name: #{ app }#-secret
  namespace: #{ apps[app].namespace }#
type: Opaque
stringData:
  password: "#{ apps[app].password }#"
  token: "#{ apps[app].password | short_hash }#-#{ replicas_total }#"
#% endif %#
"""

APP_KUSTOMIZATION = """\
#% if apps['{app}'].enabled %#
---
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
{resources}#% endif %#
"""

APP_KS = """\
#% if apps['{app}'].enabled %#
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {app}
  namespace: flux-system
spec:
  targetNamespace: {ns}
  path: ./kubernetes/apps/{ns}/{app}/app
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
    namespace: flux-system
  decryption:
    provider: sops
    secretRef:
      name: sops-age
  interval: 30m
#% endif %#
"""

NS_KUSTOMIZATION = """\
---
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ./namespace.yaml
{resources}"""

NAMESPACE = """\
---
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
"""

ROOT_KS = """\
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: cluster-apps
  namespace: flux-system
spec:
  interval: 1h
  path: ./kubernetes/apps
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
    namespace: flux-system
  decryption:
    provider: sops
    secretRef:
      name: sops-age
"""


SOPS_YAML = """\
---
creation_rules:
  - path_regex: kubernetes/.*\\.sops\\.ya?ml
    encrypted_regex: "^(data|stringData)$"
    mac_only_encrypted: true
    age: "#{ age_public_key }#"
"""


def make_repo(dest: Path, *, templates: int = 1000, secrets: int = 30, apps: int | None = None,
              age_public_key: str | None = None) -> Path:
    """Write a synthetic repo with about ``templates`` templates (``secrets`` of them secrets)."""
    dest.mkdir(parents=True, exist_ok=True)
    n_apps = apps or max(1, templates // 10)
    n_ns = min(20, n_apps)
    # structure templates: per app a kustomization + ks.yaml, per namespace two, two at the top
    structure = 2 * n_apps + 2 * n_ns + 2
    workload = max(n_apps, templates - secrets - structure)
    cfg = dest / "templates" / "config"
    (dest / "templates" / "scripts").mkdir(parents=True, exist_ok=True)
    (dest / "templates" / "scripts" / "plugin.py").write_text(PLUGIN)
    shared = cfg / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "macros.partial.yaml.j2").write_text(MACROS)
    (shared / "annotations.partial.yaml.j2").write_text(PARTIAL)
    data_apps = {}
    resources: dict[str, list[str]] = {}
    for a in range(n_apps):
        name = f"app{a:04d}"
        ns = f"ns{a % n_ns:02d}"
        data_apps[name] = {
            "enabled": a % 7 != 6, "namespace": ns, "replicas": 1 + a % 3, "image": f"ghcr.io/bench/{name}",
            "tag": f"1.{a % 10}.0", "cpu": 100 + a % 5 * 50, "mem": 128 * (1 + a % 4),
            "env": {f"var_{k}": f"value-{a}-{k}" for k in range(5)},
            "password": f"pw-{a:04d}-" + "x" * 20,
        }
        app_dir = cfg / "kubernetes" / "apps" / ns / name / "app"
        app_dir.mkdir(parents=True, exist_ok=True)
        resources[name] = []
        for i in range(workload // n_apps + (1 if a < workload % n_apps else 0)):
            feature = (a + i) % 10
            text = APP_TEMPLATE.format(feature=feature, idx=i).replace("apps[app]", f"apps['{name}']")
            text = text.replace("#{ app }#", name).replace("(app,", f"('{name}',").replace("app_port(app)", f"app_port('{name}')").replace("app_name", repr(name))
            (app_dir / f"deploy-{i:02d}.yaml.j2").write_text(text)
            resources[name].append(f"#% if feature_{feature}_active %#\n  - ./deploy-{i:02d}.yaml\n#% endif %#\n")
    for s in range(secrets):
        name = f"app{s % n_apps:04d}"
        ns = data_apps[name]["namespace"]
        sub = f"s{s:03d}" if s >= n_apps else ""
        d = cfg / "kubernetes" / "apps" / ns / name / "app" / sub
        d.mkdir(parents=True, exist_ok=True)
        text = SECRET_TEMPLATE.replace("apps[app]", f"apps['{name}']").replace("#{ app }#", name)
        if s >= n_apps:
            text = text.replace(f"name: {name}-secret", f"name: {name}-secret-{s}")
        (d / "secret.sops.yaml.j2").write_text(text)
        resources[name].append(f"  - ./{sub + '/' if sub else ''}secret.sops.yaml\n")
    apps_root = cfg / "kubernetes" / "apps"
    by_ns: dict[str, list[str]] = {}
    for name, app in data_apps.items():
        ns = app["namespace"]
        app_base = apps_root / ns / name
        text = APP_KUSTOMIZATION.format(app=name, resources="".join(resources[name]))
        if not resources[name]:
            text = text.replace("resources:\n", "resources: []\n")
        (app_base / "app" / "kustomization.yaml.j2").write_text(text)
        (app_base / "ks.yaml.j2").write_text(APP_KS.format(app=name, ns=ns))
        by_ns.setdefault(ns, []).append(f"#% if apps['{name}'].enabled %#\n  - ./{name}/ks.yaml\n#% endif %#\n")
    for ns, lines in sorted(by_ns.items()):
        (apps_root / ns / "namespace.yaml.j2").write_text(NAMESPACE.format(ns=ns))
        (apps_root / ns / "kustomization.yaml.j2").write_text(NS_KUSTOMIZATION.format(resources="".join(lines)))
    (apps_root / "kustomization.yaml.j2").write_text(
        "---\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        + "".join(f"  - ./{ns}\n" for ns in sorted(by_ns)))
    flux_dir = cfg / "kubernetes" / "flux" / "cluster"
    flux_dir.mkdir(parents=True, exist_ok=True)
    (flux_dir / "ks.yaml.j2").write_text(ROOT_KS)
    (cfg / ".sops.yaml.j2").write_text(SOPS_YAML)
    cluster = {"apps": data_apps, "features": {f"f{i}": i % 4 != 3 for i in range(10)},
               "age_public_key": age_public_key or "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"}
    (dest / "cluster.yaml").write_text(json.dumps(cluster, indent=1, sort_keys=True) + "\n")
    (dest / "gitops-render.toml").write_text(
        "[gitops-render]\n" + TOML_COMMON + 'plugins = ["plugin:Plugin"]\n\n' + DELIMS.format(table="gitops-render")
        + "\n[gitops-render.secrets]\nage_key_file = \"age.key\"\n"
        + "\n[gitops-render.validate]\nroots = [\"kubernetes\"]\nkubernetes_version = \"1.35.0\"\n"
        + "\n[gitops-render.cluster]\nprovided_sources = [\"flux-system/GitRepository/flux-system\"]\n")
    (dest / "makejinja.toml").write_text(
        "[makejinja]\n" + TOML_COMMON + 'loaders = ["plugin:Plugin"]\ncopy_metadata = true\n\n'
        + DELIMS.format(table="makejinja"))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--templates", type=int, default=1000)
    ap.add_argument("--secrets", type=int, default=30)
    args = ap.parse_args()
    make_repo(args.dest, templates=args.templates, secrets=args.secrets)


if __name__ == "__main__":
    main()
