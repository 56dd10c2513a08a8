"""The rendered LiteLLM config.yaml against its real consumer, the LiteLLM proxy.

- ``@pytest.mark.litellm`` tests start the real proxy (``.venv-litellm``, created by
  ``scripts/install-litellm.sh``) on the rendered config of the FULL feature set and of a
  MINIMAL one (one provider) and check that every model and guardrail the file declares is
  really loaded, that the linter finds nothing, and that the metric names the Grafana
  dashboard queries exist in the proxy's /metrics/ exposition.
- The other tests are unit tests of ``tests/litellm_lint.py`` (each rule catches its case).

The rendered config comes from ``tests/stack_helpers.render_stack(overrides)`` when that
helper exists, else from makejinja's CLI run the way gitops-render.toml describes (schema
defaults + overrides as data), else (no templates yet) from tests/fixtures/litellm/.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from litellm_harness import (  # noqa: E402
    INSTALL_HINT,
    REPO_ROOT,
    VENV_DIR,
    LiteLLMNotInstalled,
    LiteLLMProxy,
    litellm_executable,
)
from litellm_lint import (  # noqa: E402
    GENERAL_SETTINGS_KEYS,
    LITELLM_SETTINGS_KEYS,
    PROVIDER_PREFIXES,
    ROUTER_SETTINGS_KEYS,
    TOP_LEVEL_KEYS,
    lint_config,
    lint_text,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "litellm"
APP = "kubernetes/apps/ai-system/litellm/app"
CONFIGMAP_TEMPLATE = REPO_ROOT / "templates/config" / APP / "configmap.yaml.j2"
DASHBOARD_TEMPLATE = REPO_ROOT / "templates/config" / APP / "grafana-dashboard.yaml.j2"


def _dummy(prefix: str = "") -> str:
    return prefix + secrets.token_hex(20)


# cluster.yaml overrides (variable names of schemas/cluster.schema.json)
COMMON = {
    "cloudflare_domain": "example.com",
    "repository_name": "example/cluster",
    "litellm_enabled": True,
    "litellm_master_key": _dummy("sk-"),
    "litellm_salt_key": _dummy(),
}
MINIMAL = {
    **COMMON,
    "azure_openai_us_east_api_key": _dummy(),
    "azure_openai_us_east_resource_name": "example-east",
    # everything else off, whatever cluster.sample.yaml says
    "azure_openai_us_east2_api_key": "",
    "azure_anthropic_api_key": "",
    "azure_cohere_rerank_api_key": "",
    "azure_cohere_embed_api_key": "",
    "litellm_guardrails_enabled": False,
    "litellm_presidio_enabled": False,
    "litellm_prompt_injection_check": False,
    "litellm_alerting_enabled": False,
    "litellm_langfuse_enabled": False,
}
FULL = {
    **MINIMAL,
    "monitoring_enabled": True,
    "litellm_monitoring_enabled": True,
    "dragonfly_enabled": True,
    "dragonfly_acl_enabled": True,
    "dragonfly_litellm_password": _dummy(),
    "azure_openai_us_east2_api_key": _dummy(),
    "azure_openai_us_east2_resource_name": "example-east2",
    "azure_anthropic_api_key": _dummy(),
    "azure_anthropic_api_base": "https://example-anthropic.services.ai.azure.com",
    "azure_cohere_rerank_api_key": _dummy(),
    "azure_cohere_rerank_api_base": "https://example-rerank.services.ai.azure.com",
    "azure_cohere_embed_api_key": _dummy(),
    "azure_cohere_embed_api_base": "https://example-embed.services.ai.azure.com",
    "litellm_guardrails_enabled": True,
    "litellm_presidio_enabled": True,
    "litellm_prompt_injection_check": True,
    "litellm_alerting_enabled": True,
    "litellm_slack_webhook_url": "https://hooks.slack.example/services/T0/B0/X",
    "litellm_langfuse_enabled": True,
    "litellm_langfuse_public_key": _dummy("pk-lf-"),
    "litellm_langfuse_secret_key": _dummy("sk-lf-"),
}
VARIANTS = {"full": FULL, "minimal": MINIMAL}


# ------------------------------------------------------------------------ rendering


def _schema_defaults() -> dict[str, Any]:
    path = REPO_ROOT / "schemas" / "cluster.schema.json"
    if not path.exists():
        return {}
    schema = json.loads(path.read_text(encoding="utf-8"))
    return {k: v["default"] for k, v in schema.get("properties", {}).items()
            if isinstance(v, dict) and "default" in v}


def _configmap_config(text: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and "config.yaml" in (
                doc.get("data") or {}):
            return yaml.safe_load(doc["data"]["config.yaml"])
    raise AssertionError("rendered configmap.yaml holds no ConfigMap with data.config.yaml")


def _render_with_makejinja(overrides: dict[str, Any], tmp: Path) -> str:
    exe = shutil.which("makejinja") or str(Path(sys.executable).with_name("makejinja"))
    settings = tomllib.loads((REPO_ROOT / "gitops-render.toml").read_text(encoding="utf-8"))
    gr = settings["gitops-render"]
    data = {**_schema_defaults(), **overrides}
    data_file = tmp / "cluster.yaml"
    data_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp / "out"
    cmd = [exe, "--output", str(out), "--data", str(data_file), "--force", "--quiet",
           "--jinja-suffix", gr.get("jinja_suffix", ".j2"),
           "--undefined", gr.get("undefined", "strict")]
    for inp in gr.get("inputs", []):
        if (REPO_ROOT / inp).exists():
            cmd += ["--input", str(REPO_ROOT / inp)]
    for pattern in gr.get("exclude_patterns", []):
        cmd += ["--exclude-pattern", pattern]
    for path in gr.get("import_paths", []):
        cmd += ["--import-path", str(REPO_ROOT / path)]
    for plugin in gr.get("plugins", []):
        cmd += ["--plugin", plugin]
    for key, value in gr.get("delimiter", {}).items():
        cmd += [f"--delimiter-{key.replace('_', '-')}", value]
    # The tree includes .sops.yaml.j2, which needs an age identity: a throwaway one.
    age_key = tmp / "age.key"
    keygen = REPO_ROOT / ".tools" / "bin" / "age-keygen"
    subprocess.run([str(keygen), "-o", str(age_key)], capture_output=True, check=True, timeout=60)
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(age_key)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    if proc.returncode != 0:
        raise AssertionError(f"makejinja failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return (out / APP / "configmap.yaml").read_text(encoding="utf-8")


def rendered_config(variant: str, tmp: Path) -> tuple[dict[str, Any], str]:
    """(config.yaml as a dict, where it came from) for ``variant`` ("full" / "minimal")."""
    overrides = VARIANTS[variant]
    try:
        stack_helpers = importlib.import_module("stack_helpers")
    except ModuleNotFoundError:
        stack_helpers = None
    sample_ok = stack_helpers is not None and Path(
        getattr(stack_helpers, "SAMPLE_FILE", REPO_ROOT / "cluster.sample.yaml")).exists()
    if sample_ok and hasattr(stack_helpers, "render_stack"):
        rendered = stack_helpers.render_stack(overrides)  # {relpath: [parsed docs]}
        docs = rendered.get(f"{APP}/configmap.yaml")
        assert docs, "render_stack() rendered no kubernetes/.../litellm/app/configmap.yaml"
        text = yaml.safe_dump_all(docs)
        return _configmap_config(text), "stack_helpers.render_stack"
    if CONFIGMAP_TEMPLATE.exists():
        return _configmap_config(_render_with_makejinja(overrides, tmp)), "makejinja CLI"
    return yaml.safe_load((FIXTURES / f"{variant}.yaml").read_text(encoding="utf-8")), "fixture"


# ------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def litellm_installed() -> Path:
    try:
        return litellm_executable()
    except LiteLLMNotInstalled as exc:
        pytest.fail(f"the real LiteLLM proxy is not installed ({exc}); {INSTALL_HINT}",
                    pytrace=False)


def _declared_models(config: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((m["model_name"], m["litellm_params"]["model"])
                   for m in config.get("model_list") or [])


def _loaded_models(info: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((m.get("model_name"), (m.get("litellm_params") or {}).get("model"))
                   for m in info)


def _declared_guardrails(config: dict[str, Any]) -> Counter[str]:
    return Counter(g["guardrail_name"] for g in config.get("guardrails") or [])


def _dashboard_metric_names() -> set[str]:
    from jinja2 import Environment, StrictUndefined
    env = Environment(block_start_string="#%", block_end_string="%#",
                      variable_start_string="#{", variable_end_string="}#",
                      comment_start_string="#|", comment_end_string="#|",
                      trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    text = env.from_string(DASHBOARD_TEMPLATE.read_text(encoding="utf-8")).render(
        litellm_monitoring_enabled=True)
    doc = yaml.safe_load(text)
    dash = json.loads(next(iter(doc["data"].values())))
    names: set[str] = set()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", target["expr"])
            names |= set(re.findall(r"\blitellm_[a-z0-9_]+", expr))
    return names


def _exposed_series_names(metrics_text: str) -> set[str]:
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


# ------------------------------------------------------------------------ proxy tests


@pytest.mark.litellm
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_rendered_config_lints_clean(variant: str, tmp_path: Path) -> None:
    config, source = rendered_config(variant, tmp_path)
    findings = lint_config(config)
    assert findings == [], f"linter findings on the {variant} config ({source}):\n" + "\n".join(
        map(str, findings))


@pytest.mark.litellm
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_proxy_loads_everything_the_rendered_config_declares(
        variant: str, litellm_installed: Path, tmp_path: Path) -> None:
    config, source = rendered_config(variant, tmp_path)
    declared = _declared_models(config)
    assert declared, f"the {variant} config declares no model"

    with LiteLLMProxy(config) as proxy:
        loaded = _loaded_models(proxy.model_info())
        guardrails = proxy.guardrails()
        log = proxy.log_text()

    missing = declared - loaded
    extra = loaded - declared
    assert not missing and not extra, (
        f"{variant} ({source}): /model/info differs from the file\n"
        f"declared but not loaded: {sorted(missing.elements())}\n"
        f"loaded but not declared: {sorted(extra.elements())}\n{log[-3000:]}")
    assert Counter(g.get("guardrail_name") for g in guardrails) == _declared_guardrails(config), (
        f"{variant} ({source}): guardrails loaded {guardrails} vs declared "
        f"{sorted(_declared_guardrails(config))}")


@pytest.mark.litellm
@pytest.mark.slow
def test_dashboard_queries_only_metrics_the_proxy_exports(
        litellm_installed: Path, tmp_path: Path) -> None:
    """Every litellm_* series the dashboard's PromQL names is in /metrics/ of the real proxy."""
    config = {
        "model_list": [{"model_name": "probe", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY",
            "mock_response": "ok"}, "model_info": {"id": "probe-1"}}],
        "litellm_settings": {"callbacks": ["prometheus"], "service_callback": ["prometheus_system"]},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    wanted = _dashboard_metric_names()
    assert wanted, "no litellm_* metric found in the dashboard"
    with LiteLLMProxy(config) as proxy:
        status, _ = proxy.request("POST", "/chat/completions", body={
            "model": "probe", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200
        exposed = _exposed_series_names(proxy.metrics_text())
    assert wanted <= exposed, f"not exported by LiteLLM: {sorted(wanted - exposed)}"


@pytest.mark.litellm
def test_allow_lists_match_the_installed_litellm(litellm_installed: Path) -> None:
    """The linter's allow-lists name only things the installed LiteLLM really reads."""
    probe = r"""
import inspect, json, pathlib, litellm
src = (pathlib.Path(litellm.__file__).parent / "proxy" / "proxy_server.py").read_text()
proxy_dir = pathlib.Path(litellm.__file__).parent / "proxy"
proxy_src = "".join(p.read_text(errors="replace") for p in proxy_dir.rglob("*.py"))
print(json.dumps({
    "router_args": inspect.getfullargspec(litellm.Router).args,
    "module_attrs": sorted(dir(litellm)),
    "providers": [str(getattr(p, "value", p)) for p in litellm.provider_list],
    "proxy_source_mentions": sorted({w for w in __import__("re").findall(r'"([a-z_0-9]+)"', proxy_src)}),
    "load_config_keys": sorted(set(__import__("re").findall(r'config\.get\("([a-z_]+)"', src))),
}))
"""
    out = subprocess.run([str(VENV_DIR / "bin" / "python"), "-c", probe], capture_output=True,
                         text=True, timeout=180, check=True)
    facts = json.loads(out.stdout)
    assert ROUTER_SETTINGS_KEYS <= set(facts["router_args"]), sorted(
        ROUTER_SETTINGS_KEYS - set(facts["router_args"]))
    special = {"cache", "cache_params", "callbacks", "success_callback", "failure_callback",
               "guardrails", "global_prompt_directory", "priority_reservation_settings",
               "model_group_settings", "post_call_rules", "max_internal_user_budget",
               "default_max_internal_user_budget", "custom_provider_map",
               "default_team_settings", "upperbound_key_generate_params",
               "prompt_injection_params", "mcp_aliases"}
    not_read = LITELLM_SETTINGS_KEYS - special - set(facts["module_attrs"])
    assert not not_read, f"litellm_settings keys that are no litellm attribute: {sorted(not_read)}"
    assert "service_callbacks" not in facts["module_attrs"]
    assert PROVIDER_PREFIXES <= set(facts["providers"]), sorted(
        PROVIDER_PREFIXES - set(facts["providers"]))
    unread_general = GENERAL_SETTINGS_KEYS - set(facts["proxy_source_mentions"])
    assert not unread_general, f"general_settings keys the proxy never names: {sorted(unread_general)}"
    top_level_read = set(facts["load_config_keys"]) | {"include", "search_tools", "credential_list"}
    assert TOP_LEVEL_KEYS <= top_level_read | {"callback_settings", "environment_variables"}, sorted(
        TOP_LEVEL_KEYS - top_level_read)


# ------------------------------------------------------------------------ linter unit tests

GOOD: dict[str, Any] = {
    "model_list": [
        {"model_name": "gpt-4.1", "litellm_params": {
            "model": "azure/gpt-4.1", "litellm_credential_name": "east", "rpm": 10, "tpm": 1000,
            "timeout": 120}, "model_info": {"id": "a", "access_groups": ["default-models"]}},
    ],
    "credential_list": [{"credential_name": "east", "credential_values": {
        "api_key": "os.environ/AZURE_API_KEY"}}],
    "litellm_settings": {"cache": True, "request_timeout": 600, "callbacks": ["prometheus"],
                         "service_callback": ["prometheus_system"]},
    "router_settings": {"routing_strategy": "simple-shuffle", "timeout": 120,
                        "retry_policy": {"TimeoutErrorRetries": 2}},
    "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY",
                         "background_health_checks": False},
    "environment_variables": {"STORE_MODEL_IN_DB": "true"},
    "guardrails": [{"guardrail_name": "cf", "litellm_params": {
        "guardrail": "litellm_content_filter", "mode": "pre_call"}}],
}


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = json.loads(json.dumps(base or GOOD))
    node: Any = cfg
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return cfg


def _rules(cfg: dict[str, Any]) -> set[str]:
    return {f.rule for f in lint_config(cfg)}


def test_lint_good_config_is_clean() -> None:
    assert lint_config(GOOD) == []


@pytest.mark.parametrize("fixture", ["full", "minimal"])
def test_lint_hand_written_fixtures_are_clean(fixture: str) -> None:
    assert lint_text((FIXTURES / f"{fixture}.yaml").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path,value,rule", [
    ("modell_list", [], "unknown-top-level-key"),
    ("litellm_settings.service_callbacks", ["prometheus_system"], "unknown-litellm-settings-key"),
    ("litellm_settings.tpm_limit", 100, "unknown-litellm-settings-key"),
    ("general_settings.master_kee", "x", "unknown-general-settings-key"),
    ("router_settings.cooldown_tme", 30, "unknown-router-settings-key"),
    ("general_settings.background_health_checks", "false", "quoted-boolean"),
    ("litellm_settings.cache", "True", "quoted-boolean"),
    ("model_list.0.model_info.access_groups", "default-models", "access-groups-not-a-list"),
    ("model_list.0.litellm_params.litellm_credential_name", "west", "unknown-credential"),
    ("model_list.0.litellm_params.model", "gpt-4.1", "model-without-provider"),
    ("model_list.0.litellm_params.model", "azzure/gpt-4.1", "unknown-provider"),
    ("model_list.0.litellm_params.rpm", "lots", "non-numeric"),
    ("model_list.0.litellm_params.tpm", "1M", "non-numeric"),
    ("model_list.0.litellm_params.timeout", "120s", "non-numeric"),
    ("router_settings.timeout", "120", "non-numeric"),
    ("router_settings.allowed_fails", "3", "non-numeric"),
    ("router_settings.retry_policy.TimeoutErrorRetries", "two", "non-numeric"),
    ("litellm_settings.request_timeout", "600", "non-numeric"),
    ("router_settings.routing_strategy", "simple_shuffle", "invalid-routing-strategy"),
    ("credential_list.0", {"credential_name": "east"}, "credential-without-values"),
    ("guardrails.0", {"litellm_params": {"guardrail": "x"}}, "guardrail-without-name"),
    ("guardrails.0.litellm_params.mode", "before_call", "invalid-guardrail-mode"),
    ("model_list.0", {"model_name": "x", "litellm_params": {}}, "invalid-deployment"),
])
def test_lint_rule_catches_its_case(path: str, value: Any, rule: str) -> None:
    assert rule in _rules(_with(path, value))


def test_lint_duplicate_model_id() -> None:
    cfg = json.loads(json.dumps(GOOD))
    cfg["model_list"].append(json.loads(json.dumps(cfg["model_list"][0])))
    findings = [f for f in lint_config(cfg) if f.rule == "duplicate-model-id"]
    assert len(findings) == 1 and "model_list[1]" in findings[0].path


def test_lint_service_callbacks_hint_names_the_fix() -> None:
    (finding,) = [f for f in lint_config(_with("litellm_settings.service_callbacks", ["x"]))]
    assert "service_callback" in finding.message and "singular" in finding.message


def test_lint_env_refs_and_environment_variables_are_not_flagged() -> None:
    cfg = _with("model_list.0.litellm_params.rpm", "os.environ/RPM")
    assert _rules(cfg) == set()


def test_lint_duplicate_yaml_keys() -> None:
    text = "model_list: []\nlitellm_settings:\n  cache: true\n  cache: false\n"
    assert "duplicate-yaml-key" in {f.rule for f in lint_text(text)}
