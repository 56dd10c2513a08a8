"""Validation renders the HelmRelease charts (a real ``helm template`` of app-template 4.5.0) and
cross-checks what they render against the rest of the tree.

Given the shipped LiteLLM stack configured with every option, an operator's edit that breaks a
reference into the chart's output (a Service port, a Secret key, a pod selector) is a finding of
``gitops-render validate``, found in the rendered Deployment and Service — no hand model of them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from combos import ALL_FEATURES, VALKEY
from conftest import offline_charts
from operator_repo import ROUTES, TOOLS, cli_env, clone, configured_repo, gr, replace_line

APP = "kubernetes/apps/ai-system/litellm/app"
HR = f"{APP}/helmrelease.yaml"
NETPOL = f"{APP}/networkpolicy.yaml"
CHART = "chart app-template@4.5.0 of HelmRelease ai-system/litellm"

EVERY_OPTION: dict[str, dict[str, Any]] = {
    "dragonfly": ALL_FEATURES,
    "valkey-sentinel": {**ALL_FEATURES, **VALKEY, "litellm_valkey_sentinel_enabled": True},
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: configured_repo(tmp_path_factory.mktemp(name) / "repo", **values)
            for name, values in EVERY_OPTION.items()}


@pytest.fixture
def stack(stacks: dict[str, Path], tmp_path: Path) -> Path:
    return clone(stacks["dragonfly"], tmp_path / "repo")


def validate(root: Path, **env: str | None) -> tuple[int, dict[str, Any], str]:
    res = gr(root, "validate", "--output", "json", env=cli_env(GITOPS_RENDER_VALIDATE_CACHE="0", **env))
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout), res.stdout + res.stderr


def refs(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f["file"], f["document"], f["message"]) for f in report["findings"] if f["check"] == "refs"]


def edit_document(path: Path, kind: str, name: str, old: str, new: str) -> None:
    """Replace the first ``old`` in the document ``kind``/``name`` of a multi-document file."""
    docs = path.read_text(encoding="utf-8").split("\n---\n")
    hits = [i for i, d in enumerate(docs) if f"kind: {kind}\n" in d
            and (yaml.safe_load(d) or {}).get("metadata", {}).get("name") == name]
    assert len(hits) == 1 and old in docs[hits[0]], (kind, name, old)
    docs[hits[0]] = docs[hits[0]].replace(old, new, 1)
    path.write_text("\n---\n".join(docs), encoding="utf-8")


@pytest.mark.parametrize("option", sorted(EVERY_OPTION))
def test_the_stack_with_every_option_renders_its_chart_and_validates_clean(stacks: dict[str, Path],
                                                                           option: str) -> None:
    code, report, _ = validate(stacks[option])
    assert report["findings"] == [] and code == 0
    assert not [n for n in report["notes"] if "not rendered" in n or "not in the tree" in n], report["notes"]


def test_an_httproute_backend_port_the_rendered_service_lacks_is_a_finding(stack: Path) -> None:
    edit_document(stack / ROUTES, "HTTPRoute", "litellm-internal", "port: 4000", "port: 4002")
    code, report, _ = validate(stack)
    assert code == 1
    assert refs(report) == [(ROUTES, "HTTPRoute network/litellm-internal",
                             "spec.rules[0].backendRefs[0]: Service ai-system/litellm has no port 4002 "
                             "(its ports: 4001, 4000)")]


def test_a_secret_key_ref_the_secret_lacks_is_a_finding_that_shows_no_value(stack: Path) -> None:
    replace_line(stack / HR, r"                    key: LITELLM_SALT_KEY", "                    key: LITELLM_SALT")
    code, report, output = validate(stack)
    assert code == 1
    [(file, document, message)] = refs(report)
    assert (file, document) == (HR, f"Deployment ai-system/litellm ({CHART})")
    assert message.startswith("container app env LITELLM_SALT_KEY: Secret ai-system/litellm-secret has no key "
                              "'LITELLM_SALT' (it has: "), message
    cluster = yaml.safe_load((stack / "cluster.yaml").read_text(encoding="utf-8"))
    for key in ("litellm_master_key", "litellm_salt_key", "litellm_db_password"):
        assert cluster.get(key) and str(cluster[key]) not in output, f"{key} leaked"


def test_a_network_policy_selector_that_matches_no_rendered_pod_is_a_finding(stack: Path) -> None:
    edit_document(stack / NETPOL, "NetworkPolicy", "litellm", "app.kubernetes.io/controller: litellm\n",
                  "app.kubernetes.io/controller: litellm-proxy\n")
    code, report, _ = validate(stack)
    assert code == 1
    assert refs(report) == [(NETPOL, "NetworkPolicy ai-system/litellm",
                             "spec.podSelector (app.kubernetes.io/controller=litellm-proxy, app.kubernetes.io/"
                             "instance=litellm, app.kubernetes.io/name=litellm) matches no pod in ai-system: not "
                             "the pods of HelmRelease ai-system/litellm (chart app-template@4.5.0) nor any in the "
                             "tree")]


@pytest.mark.parametrize(("file", "kind", "name", "old", "new", "message"), [
    (NETPOL, "NetworkPolicy", "litellm", "- port: 4000", "- port: 8080",
     "spec.ingress[0].ports[0]: port 8080 is not a port of the pods it admits traffic to "
     "(they listen on 4000, 4001)"),
    (NETPOL, "NetworkPolicy", "litellm-db-pooler", "app.kubernetes.io/controller: litellm\n",
     "app.kubernetes.io/controller: proxy\n",
     "spec.ingress[0].from[0].podSelector (app.kubernetes.io/controller=proxy"),
    (f"{APP}/servicemonitor.yaml", "ServiceMonitor", "litellm", "- port: http", "- port: metrics",
     "spec.endpoints[0].port 'metrics' is not a port name of the Service(s) it selects (health, http)"),
    (f"{APP}/pdb.yaml", "PodDisruptionBudget", "litellm", "app.kubernetes.io/instance: litellm",
     "app.kubernetes.io/instance: litellm-proxy", "spec.selector (app.kubernetes.io/controller=litellm"),
    (f"{APP}/hpa.yaml", "HorizontalPodAutoscaler", "litellm", "name: litellm\n  minReplicas",
     "name: litellm-proxy\n  minReplicas", "spec.scaleTargetRef: no Deployment ai-system/litellm-proxy"),
    (f"{APP}/referencegrant.yaml", "ReferenceGrant", "allow-network-to-litellm", "      name: litellm",
     "      name: litellm-api", "spec.to[0]: no Service ai-system/litellm-api: HelmRelease ai-system/litellm"),
], ids=["netpol-ingress-port", "netpol-peer", "servicemonitor-port", "pdb", "hpa", "referencegrant"])
def test_other_references_into_the_rendered_chart(stack: Path, file: str, kind: str, name: str, old: str, new: str,
                                                  message: str) -> None:
    edit_document(stack / file, kind, name, old, new)
    code, report, _ = validate(stack)
    assert code == 1
    found = refs(report)
    assert len(found) == 1 and found[0][0] == file and found[0][2].startswith(message), found


def test_values_that_the_chart_rejects_are_a_chart_finding(stack: Path) -> None:
    replace_line(stack / HR, r"        strategy: RollingUpdate", "        type: deploymentt")
    code, report, _ = validate(stack)
    assert code == 1
    assert [(f["file"], f["message"]) for f in report["findings"] if f["check"] == "chart"] == [
        (HR, "`helm template` of chart app-template@4.5.0 with these values failed: execution error at "
             "(app-template/templates/common.yaml:14:3): Not a valid controller.type (deploymentt)")]


def test_an_unavailable_chart_is_a_note_not_silence(stack: Path) -> None:
    edit_document(stack / ROUTES, "HTTPRoute", "litellm-internal", "port: 4000", "port: 4002")
    code, report, _ = validate(stack, GITOPS_RENDER_HELM_CHARTS=None)
    assert code == 0 and report["findings"] == []  # the Service only exists in the rendered chart
    cache = stack / ".gitops-render" / "cache" / "charts" / "app-template-4.5.0.tgz"
    assert ("HelmRelease ai-system/litellm (kubernetes/apps/ai-system/litellm/app/helmrelease.yaml): chart "
            f"app-template@4.5.0 not available offline: not rendered; put it at {cache}") in report["notes"]


def test_a_chart_pulled_into_the_chart_cache_is_rendered(stack: Path, shared_dir: Path) -> None:
    cache = stack / ".gitops-render" / "cache" / "charts"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(TOOLS / "helm"), "package", str(shared_dir / "charts" / "app-template-4.5.0" / "chart"),
                    "-d", str(cache)], check=True, capture_output=True)
    assert (cache / "app-template-4.5.0.tgz").is_file()
    edit_document(stack / ROUTES, "HTTPRoute", "litellm-internal", "port: 4000", "port: 4002")
    code, report, _ = validate(stack, GITOPS_RENDER_HELM_CHARTS=None)
    assert code == 1 and [m for _, _, m in refs(report) if "no port 4002" in m]
    shutil.rmtree(cache)


def test_a_chart_version_bump_without_its_values_schema_is_a_finding_unless_opted_out(stack: Path) -> None:
    """Renovate bumps app-template: its values would silently go unchecked, so validation says so."""
    oci = stack / APP / "ocirepository.yaml"
    oci.write_text(oci.read_text().replace("tag: 4.5.0", "tag: 4.6.0"))
    bumped = "app-template@4.6.0=" + offline_charts().split("=", 1)[1]  # the chart renders; only its schema lags
    code, report, _ = validate(stack, GITOPS_RENDER_HELM_CHARTS=bumped)
    stale = [f for f in report["findings"] if f["check"] == "helm-values"]
    assert code == 1 and len(stale) == 1, report["findings"]
    assert "chart app-template@4.6.0 has no values schema, but app-template@4.5.0 has one" in stale[0]["message"]
    settings = stack / "gitops-render.toml"
    settings.write_text(settings.read_text().replace("[gitops-render.validate]\n",
                                                     '[gitops-render.validate]\nstale_values_schema = "note"\n', 1))
    code, report, _ = validate(stack, GITOPS_RENDER_HELM_CHARTS=bumped)
    assert [f for f in report["findings"] if f["check"] == "helm-values"] == [] and code == 0, report["findings"]
    assert any("values not checked" in n for n in report["notes"]), report["notes"]
