"""The LiteLLM ServiceMonitor and Grafana dashboard templates render to valid objects."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, offline_locations
from jinja2 import Environment, StrictUndefined
from operator_repo import TOOLS

APP = PROJECT / "templates/config/kubernetes/apps/ai-system/litellm/app"
KUBECONFORM = TOOLS / "kubeconform"

ENV = Environment(block_start_string="#%", block_end_string="%#", variable_start_string="#{",
                  variable_end_string="}#", comment_start_string="#|", comment_end_string="#|",
                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                  undefined=StrictUndefined)


def render(name: str, enabled: bool = True) -> str:
    return ENV.from_string((APP / name).read_text(encoding="utf-8")).render(
        litellm_monitoring_enabled=enabled)


@pytest.mark.parametrize("name", ["servicemonitor.yaml.j2", "grafana-dashboard.yaml.j2"])
def test_renders_nothing_when_monitoring_is_off(name: str) -> None:
    assert render(name, enabled=False).strip() == ""


def test_dashboard_configmap_and_json() -> None:
    src = (APP / "grafana-dashboard.yaml.j2").read_text(encoding="utf-8")
    body = src.split("data:", 1)[1].rsplit("#% endif %#", 1)[0]
    assert not any(d in body for d in ("#{", "#%", "#|")), "template delimiter inside the JSON"
    doc = yaml.safe_load(render("grafana-dashboard.yaml.j2"))
    assert doc["kind"] == "ConfigMap"
    assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert doc["metadata"]["annotations"]["grafana_folder"]
    (raw,) = doc["data"].values()
    dash = json.loads(raw)
    assert dash["uid"] and dash["schemaVersion"] >= 36
    (ds,) = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    visual = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(visual) == 17
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in visual:
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys() and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert re.search(r"\blitellm_[a-z_]+", t["expr"]), t["expr"]
            # counters are exported with the _total suffix
            for name in re.findall(r"\b(litellm_[a-z_]+_metric)\b(?!_)", t["expr"]):
                pytest.fail(f"{p['title']}: {name} lacks its _total/_bucket/_count suffix")


def test_servicemonitor_selects_the_app_template_service() -> None:
    doc = yaml.safe_load(render("servicemonitor.yaml.j2"))
    assert doc["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "litellm", "app.kubernetes.io/instance": "litellm",
        "app.kubernetes.io/service": "litellm"}
    (ep,) = doc["spec"]["endpoints"]
    assert ep["port"] == "http" and ep["path"] == "/metrics/"


def test_kubeconform_strict(tmp_path: Path, shared_dir: Path) -> None:
    """The real kubeconform, strict, against the offline schema mirror (a missing one fails the test)."""
    files = []
    for name in ("servicemonitor.yaml.j2", "grafana-dashboard.yaml.j2"):
        out = tmp_path / name.removesuffix(".j2")
        out.write_text(render(name), encoding="utf-8")
        files.append(str(out))
    proc = subprocess.run(
        [str(KUBECONFORM), "-strict", "-summary", "-kubernetes-version", "1.35.0",
         *(arg for location in offline_locations(shared_dir) for arg in ("-schema-location", location)), *files],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid: 2" in proc.stdout
