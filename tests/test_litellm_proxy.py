"""The rendered LiteLLM stack against its real consumer, the LiteLLM proxy, as the pod runs it.

For every option combination of the matrix (``tests/test_litellm_stack.py`` and
``tests/test_configure.py`` combination lists) and for both installed proxies (``deployed``:
the version the HelmRelease deploys; ``newest``: the newest release that installs here, see
``scripts/install-litellm.sh``), the proxy is started ONCE with what the rendered HelmRelease
gives the container (``litellm_pod.pod_spec``: env / envFrom with the Secrets decrypted in
memory, the mounted config.yaml unchanged, the args) and the in-cluster peers on loopback
(a real redis-server demanding the pod's credentials). Combinations that give the pod
byte-identical input share one start. Then:

- every model and guardrail the file declares is really loaded;
- the cache answers ``/cache/ping`` with the pod's own Redis settings;
- ``/metrics/`` answers an unauthenticated scrape, as the ServiceMonitor makes it;
- the linter (``tests/litellm_lint.py``, version-aware) finds no dead key.

The other tests are unit tests of the linter and of the pod-spec reader.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from combos import COMBOS, stack_combos
from litellm_harness import (
    PROXY_ROLES,
    REPO_ROOT,
    LiteLLMNotInstalled,
    LiteLLMProxy,
    ProxyInstall,
    ProxyStartupError,
    proxy_install,
)
from litellm_lint import (
    GENERAL_SETTINGS_KEYS,
    LITELLM_SETTINGS_KEYS,
    NOT_READ_BY_VERSION,
    PROVIDER_PREFIXES,
    ROUTER_SETTINGS_KEYS,
    TOP_LEVEL_KEYS,
    lint_config,
    lint_text,
)
from litellm_pod import CLOSED_PORT, PodSpec, PodSpecError, loopback_env, pod_spec
from stack_helpers import render_stack

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "litellm"
APP = "kubernetes/apps/ai-system/litellm/app"
DASHBOARD_TEMPLATE = REPO_ROOT / "templates/config" / APP / "grafana-dashboard.yaml.j2"


MATRIX: dict[str, dict[str, Any]] = {f"stack:{name}": dict(over) for name, over in stack_combos().items()}
"""Every combination of the one list (tests/combos.py) that deploys LiteLLM: name -> cluster.yaml overrides."""


# ------------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Observation:
    """What one proxy start showed (the proxy is stopped before any assertion runs)."""

    version: str
    startup_seconds: float
    error: str
    models: Counter[tuple[str, str]]
    guardrails: Counter[str]
    cache: tuple[int, Any]
    metrics_status: int
    notes: tuple[str, ...]
    log_tail: str


def _observe(spec: PodSpec, install: ProxyInstall) -> Observation:
    proxy = LiteLLMProxy(spec, install, startup_timeout=120)
    try:
        proxy.start()
    except ProxyStartupError as exc:
        proxy.stop()
        return Observation(install.version, 0.0, proxy.mask(str(exc))[-3000:], Counter(),
                           Counter(), (0, None), 0, tuple(proxy.notes), "")
    try:
        models = Counter((m.get("model_name"), (m.get("litellm_params") or {}).get("model"))
                         for m in proxy.model_info())
        guardrails = Counter(g.get("guardrail_name") for g in proxy.guardrails())
        cache = proxy.cache_ping() if spec.config().get("litellm_settings", {}).get(
            "cache") else (0, None)
        metrics_status, _ = proxy.metrics()
        return Observation(install.version, proxy.startup_seconds, "", models, guardrails, cache,
                           metrics_status, tuple(proxy.notes), proxy.log_tail(40))
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def installs() -> dict[str, ProxyInstall]:
    try:
        return {role: proxy_install(role) for role in PROXY_ROLES}
    except LiteLLMNotInstalled as exc:
        pytest.fail(f"the real LiteLLM proxy is not installed ({exc})", pytrace=False)


def image_tag(install: ProxyInstall) -> str:
    """The image tag an operator sets to deploy ``install``'s version (the deployed one is the default)."""
    return f"main-v{install.version}-stable"


@pytest.fixture(scope="module")
def pod_specs(installs: dict[str, ProxyInstall]) -> dict[tuple[str, str], PodSpec]:
    """(role, combination) -> the pod as rendered for that role's image tag (an upgrade re-renders)."""
    specs: dict[tuple[str, str], PodSpec] = {}
    for name, over in MATRIX.items():
        deployed = pod_spec(render_stack(over))
        specs[("deployed", name)] = deployed
        # the upgrade as an operator makes it: the new tag, and no separate health app (gone in 1.106+,
        # which the schema says)
        upgraded = {**over, "litellm_image_tag": image_tag(installs["newest"])}
        if upgraded.get("litellm_separate_health_app"):
            upgraded["litellm_separate_health_app"] = False
        specs[("newest", name)] = pod_spec(render_stack(upgraded))
    return specs


@pytest.fixture(scope="module")
def started() -> dict[tuple[str, str], Observation]:
    """(role, pod digest) -> observation: one start per distinct pod input and version."""
    return {}


@pytest.fixture(scope="module", params=[(r, c) for r in PROXY_ROLES for c in MATRIX],
                ids=lambda rc: f"{rc[0]}-{rc[1]}")
def observed(request: pytest.FixtureRequest, installs: dict[str, ProxyInstall],
             pod_specs: dict[tuple[str, str], PodSpec],
             started: dict[tuple[str, str], Observation]) -> tuple[PodSpec, Observation]:
    role, combo = request.param
    spec = pod_specs[(role, combo)]
    key = (role, spec.digest())
    if key not in started:
        started[key] = _observe(spec, installs[role])
    return spec, started[key]


def _where(obs: Observation) -> str:
    return (f"LiteLLM {obs.version}; substituted: {list(obs.notes)}\n{obs.error or obs.log_tail}")


@pytest.mark.litellm
@pytest.mark.slow
def test_the_pod_starts_and_loads_every_model_and_guardrail_its_config_declares(
        observed: tuple[PodSpec, Observation]) -> None:
    spec, obs = observed
    assert not obs.error, f"the proxy does not start with the pod's environment: {_where(obs)}"
    config = spec.config()
    declared = Counter((m["model_name"], m["litellm_params"]["model"])
                       for m in config.get("model_list") or [])
    assert declared and obs.models == declared, (
        f"declared but not loaded: {sorted((declared - obs.models).elements())}; loaded but not "
        f"declared: {sorted((obs.models - declared).elements())}; {_where(obs)}")
    wanted = Counter(g["guardrail_name"] for g in config.get("guardrails") or [])
    assert obs.guardrails == wanted, f"guardrails {obs.guardrails} vs {wanted}; {_where(obs)}"


@pytest.mark.litellm
@pytest.mark.slow
def test_the_cache_answers_with_the_pods_own_redis_settings(
        observed: tuple[PodSpec, Observation]) -> None:
    spec, obs = observed
    assert not obs.error, _where(obs)
    if not spec.config().get("litellm_settings", {}).get("cache"):
        assert obs.cache == (0, None)
        return
    status, payload = obs.cache
    assert status == 200 and isinstance(payload, dict) and payload.get("status") == "healthy", (
        f"GET /cache/ping -> {status}: {json.dumps(payload)[:1500]}\n{_where(obs)}")


@pytest.mark.litellm
@pytest.mark.slow
def test_metrics_answer_an_unauthenticated_scrape_like_the_servicemonitors(
        observed: tuple[PodSpec, Observation]) -> None:
    spec, obs = observed
    assert not obs.error, _where(obs)
    if "prometheus" not in (spec.config().get("litellm_settings", {}).get("callbacks") or []):
        return
    assert obs.metrics_status == 200, (
        f"GET /metrics/ without credentials -> {obs.metrics_status} on LiteLLM {obs.version}: "
        "Prometheus cannot scrape it (set litellm_settings.require_auth_for_metrics_endpoint: "
        "false, or give the ServiceMonitor the master key)")


@pytest.mark.litellm
@pytest.mark.parametrize("role", PROXY_ROLES)
@pytest.mark.parametrize("combo", list(MATRIX))
def test_the_rendered_config_has_no_key_that_version_does_not_read(
        role: str, combo: str, installs: dict[str, ProxyInstall],
        pod_specs: dict[tuple[str, str], PodSpec]) -> None:
    version = installs[role].version
    findings = lint_text(pod_specs[(role, combo)].config_text, version)
    assert findings == [], f"LiteLLM {version}, {combo}:\n" + "\n".join(map(str, findings))


def test_the_matrix_covers_every_option_of_both_combination_lists() -> None:
    """No combination silently dropped: every one is in, only LiteLLM-off ones left out."""
    names = {n.split(":", 1)[1] for n in MATRIX}
    assert set(COMBOS) - names == {n for n, c in COMBOS.items() if c.overrides.get("litellm_enabled") is False}
    assert "stack:all-features" in MATRIX and "stack:valkey-sentinel" in MATRIX


# ------------------------------------------------------------------------ dashboard and allow-lists


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
            # a series renamed between LiteLLM versions is selected by a name pattern: one of its
            # names must be exported (checked as the pattern itself, see the caller)
            for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
                names.add(f"re:{pattern}")
            expr = re.sub(r'\{__name__=~"[^"]+"\}', "", expr)
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


@pytest.mark.litellm
@pytest.mark.slow
@pytest.mark.parametrize("role", PROXY_ROLES)
def test_dashboard_queries_only_metrics_the_proxy_exports(
        role: str, installs: dict[str, ProxyInstall], pod_specs: dict[tuple[str, str], PodSpec]) -> None:
    """The pod of the sample, one mock completion, then every litellm_* series the dashboard's
    PromQL names is in an unauthenticated /metrics/ scrape (as the ServiceMonitor makes it)."""
    base = pod_specs[(role, "stack:sample")]
    config = base.config()
    config["model_list"] = [{"model_name": "probe", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_key": "sk-probe-not-a-key", "mock_response": "ok"},
        "model_info": {"id": "probe-1"}}]
    spec = PodSpec(yaml.safe_dump(config, sort_keys=False), base.config_path, base.env,
                   base.args, base.secret_values)
    wanted = _dashboard_metric_names()
    assert wanted, "no litellm_* metric found in the dashboard"
    with LiteLLMProxy(spec, installs[role]) as proxy:
        status, _ = proxy.request("POST", "/chat/completions", body={
            "model": "probe", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200
        time.sleep(0.5)
        scrape, text = proxy.metrics()
    assert scrape == 200, f"unauthenticated GET /metrics/ -> {scrape} on {installs[role].version}"
    exposed = _exposed_series_names(text)
    missing = {w for w in wanted if (not any(re.fullmatch(w[3:], e) for e in exposed) if w.startswith("re:")
                                     else w not in exposed)}
    assert not missing, f"not exported by LiteLLM {installs[role].version}: {sorted(missing)}"


_FACTS_PROBE = r"""
import inspect, json, pathlib, re, litellm
root = pathlib.Path(litellm.__file__).parent
src = (root / "proxy" / "proxy_server.py").read_text()
proxy_src = "".join(p.read_text(errors="replace") for p in (root / "proxy").rglob("*.py"))
print(json.dumps({
    "router_args": inspect.getfullargspec(litellm.Router).args,
    "module_attrs": sorted(dir(litellm)),
    "providers": [str(getattr(p, "value", p)) for p in litellm.provider_list],
    "proxy_source_mentions": sorted(set(re.findall(r'"([a-z_0-9]+)"', proxy_src))),
    "load_config_keys": sorted(set(re.findall(r'config\.get\("([a-z_]+)"', src))),
}))
"""


@pytest.mark.litellm
@pytest.mark.parametrize("role", PROXY_ROLES)
def test_allow_lists_match_the_installed_litellm(role: str,
                                                 installs: dict[str, ProxyInstall]) -> None:
    """The linter's allow-lists, less what NOT_READ_BY_VERSION takes out for this version,
    name only things that installed LiteLLM really reads."""
    install = installs[role]
    out = subprocess.run([str(install.python), "-c", _FACTS_PROBE], capture_output=True,
                         text=True, timeout=180, check=True,
                         env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin",
                              "HOME": str(REPO_ROOT)})
    facts = json.loads(out.stdout)
    dead = NOT_READ_BY_VERSION.get(install.version, {})
    assert ROUTER_SETTINGS_KEYS - dead.get("router_settings", frozenset()) <= set(
        facts["router_args"]), sorted(ROUTER_SETTINGS_KEYS - set(facts["router_args"]))
    special = {"cache", "cache_params", "callbacks", "success_callback", "failure_callback",
               "guardrails", "global_prompt_directory", "priority_reservation_settings",
               "model_group_settings", "post_call_rules", "max_internal_user_budget",
               "default_max_internal_user_budget", "custom_provider_map",
               "default_team_settings", "upperbound_key_generate_params",
               "prompt_injection_params", "mcp_aliases"}
    not_read = (LITELLM_SETTINGS_KEYS - special - dead.get("litellm_settings", frozenset())
                - set(facts["module_attrs"]))
    assert not not_read, f"{install.version}: litellm_settings keys that are no attribute: " \
                         f"{sorted(not_read)}"
    assert "service_callbacks" not in facts["module_attrs"]
    assert set(facts["providers"]) >= PROVIDER_PREFIXES, sorted(
        PROVIDER_PREFIXES - set(facts["providers"]))
    unread = (GENERAL_SETTINGS_KEYS - dead.get("general_settings", frozenset())
              - set(facts["proxy_source_mentions"]))
    assert not unread, f"{install.version}: general_settings keys never named: {sorted(unread)}"
    top_level_read = set(facts["load_config_keys"]) | {"include", "search_tools", "credential_list"}
    assert top_level_read | {"callback_settings", "environment_variables"} >= TOP_LEVEL_KEYS, sorted(
        TOP_LEVEL_KEYS - top_level_read)
    for section, keys in dead.items():
        known = {"litellm_settings": LITELLM_SETTINGS_KEYS,
                 "general_settings": GENERAL_SETTINGS_KEYS}[section]
        assert keys <= known, f"NOT_READ_BY_VERSION[{install.version}] names unknown keys"


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
    (finding,) = list(lint_config(_with("litellm_settings.service_callbacks", ["x"])))
    assert "service_callback" in finding.message and "singular" in finding.message


def test_lint_env_refs_and_environment_variables_are_not_flagged() -> None:
    cfg = _with("model_list.0.litellm_params.rpm", "os.environ/RPM")
    assert _rules(cfg) == set()


def test_lint_duplicate_yaml_keys() -> None:
    text = "model_list: []\nlitellm_settings:\n  cache: true\n  cache: false\n"
    assert "duplicate-yaml-key" in {f.rule for f in lint_text(text)}


# ------------------------------------------------------------------------ pod-spec reader unit tests


def _pod(env: Any, env_from: Any = None, cm_data: dict[str, str] | None = None) -> dict[str, list[Any]]:
    container: dict[str, Any] = {"args": ["--config", "/app/config.yaml", "--port", "4000"], "env": env}
    if env_from is not None:
        container["envFrom"] = env_from
    hr = {"kind": "HelmRelease", "metadata": {"name": "litellm", "namespace": "ai"}, "spec": {"values": {
        "controllers": {"litellm": {"containers": {"app": container}}},
        "persistence": {"cfg": {"type": "configMap", "name": "litellm-config", "globalMounts": [
            {"path": "/app/config.yaml", "subPath": "config.yaml"}]}}}}}
    cms = [{"kind": "ConfigMap", "metadata": {"name": "litellm-config", "namespace": "ai"},
            "data": {"config.yaml": "model_list: []\n"}},
           {"kind": "ConfigMap", "metadata": {"name": "extra", "namespace": "ai"}, "data": cm_data or {}}]
    secret = {"kind": "Secret", "metadata": {"name": "s", "namespace": "ai"},
              "stringData": {"PW": "pw-from-secret", "URL": "redis://u:pw@valkey.cache.svc:6379"}}
    return {"hr.yaml": [hr], "cm.yaml": cms, "secret.sops.yaml": [secret]}


def test_pod_spec_resolves_env_the_way_kubernetes_does() -> None:
    spec = pod_spec(_pod(
        {"A": "x", "PW": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "PW"}}},
         "B": "$(A)-$(PW)-$(NOPE)-$$(A)", "C": {"valueFrom": {"configMapKeyRef": {"name": "extra", "key": "k"}}}},
        env_from=[{"secretRef": {"name": "s"}, "prefix": "S_"}], cm_data={"k": "from-cm"}))
    assert spec.env["PW"] == "pw-from-secret" and spec.env["S_URL"].startswith("redis://")
    assert spec.env["B"] == "x-pw-from-secret-$(NOPE)-$(A)" and spec.env["C"] == "from-cm"
    assert spec.config_text == "model_list: []\n" and spec.config_path == "/app/config.yaml"
    assert "pw-from-secret" in spec.secret_values


def test_pod_spec_names_a_missing_secret_key() -> None:
    with pytest.raises(PodSpecError, match="Secret 's' has no key 'NOPE'"):
        pod_spec(_pod({"X": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "NOPE"}}}}))
    assert "X" not in pod_spec(_pod({"X": {"valueFrom": {"secretKeyRef": {
        "name": "s", "key": "NOPE", "optional": True}}}})).env


def test_loopback_env_moves_only_in_cluster_addresses() -> None:
    from litellm_pod import RedisServer

    redis = RedisServer(port=6400, sentinel_port=26400)
    env, notes = loopback_env({
        "DATABASE_URL": "postgresql://u:p@db-rw.ai.svc:5432/x", "REDIS_HOST": "valkey.cache.svc.cluster.local",
        "REDIS_PORT": "6379", "REDIS_URL": "redis://u:p%40w@valkey.cache.svc:6379/0",
        "REDIS_SENTINEL_NODES": '[["valkey.cache.svc", 26379]]', "OTEL_ENDPOINT": "http://tempo.monitoring.svc:4317",
        "PRESIDIO_API_BASE": "http://localhost:5002", "AZURE_API_BASE": "https://x.openai.azure.com",
        "SEPARATE_HEALTH_PORT": "4001"}, redis)
    assert "DATABASE_URL" not in env and env["REDIS_HOST"] == "127.0.0.1" and env["REDIS_PORT"] == "6400"
    assert env["REDIS_URL"] == "redis://u:p%40w@127.0.0.1:6400/0"
    assert json.loads(env["REDIS_SENTINEL_NODES"]) == [["127.0.0.1", 26400]]
    assert env["OTEL_ENDPOINT"] == f"http://127.0.0.1:{CLOSED_PORT}"
    assert env["PRESIDIO_API_BASE"] == f"http://127.0.0.1:{CLOSED_PORT}"
    assert env["AZURE_API_BASE"] == "https://x.openai.azure.com" and env["SEPARATE_HEALTH_PORT"] != "4001"
    assert len(notes) == 8 and not any("p%40w" in n for n in notes)
