"""templates/scripts/plugin.py, tested directly: every derived variable for each prerequisite combination."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from stack_helpers import SCRIPTS, filled_sample, schema

from gitops_render.data.schema import apply_defaults

_spec = importlib.util.spec_from_file_location("litellm_plugin_under_test", SCRIPTS / "plugin.py")
plugin = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
_spec.loader.exec_module(plugin)

BASE = {"cloudflare_domain": "example.com", "repository_name": "o/r", "litellm_enabled": True}


def derive(**over: Any) -> dict[str, Any]:
    data = apply_defaults({**BASE, **over}, schema())
    return plugin.Plugin(data).data()


def test_plugin_api_shape() -> None:
    p = plugin.Plugin(apply_defaults(dict(BASE), schema()))
    assert {f.__name__ for f in p.filters()} == {"url_quote", "url_host", "yaml_value", "yaml_block", "sha256",
                                                 "hmac_sha256"}
    assert {f.__name__ for f in p.functions()} == {"age_key"}
    assert "gitops_render" not in Path(SCRIPTS / "plugin.py").read_text()
    assert "gitops_render" not in Path(SCRIPTS / "litellm_wiring.py").read_text()


def test_data_keeps_input_and_adds_derived() -> None:
    out = derive(litellm_subdomain="llm")
    assert out["litellm_subdomain"] == "llm" and out["litellm_hostname"] == "llm.example.com"


def test_plugin_applies_schema_defaults_under_plain_makejinja(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SCRIPTS.parents[1])
    out = plugin.Plugin(dict(BASE)).data()
    assert out["litellm_replicas"] == 1 and out["litellm_hostname"] == "litellm.example.com"


def test_plugin_does_not_apply_schema_defaults_a_second_time_under_gitops_render() -> None:
    """Under gitops-render (a config with ``root``) the data arrives with the defaults applied
    by the schema stage; the plugin adds none of its own."""
    from types import SimpleNamespace

    data = apply_defaults(dict(BASE), schema())
    del data["litellm_log_level"]
    out = plugin.Plugin(data, SimpleNamespace(root=SCRIPTS.parents[1], secrets={})).data()
    assert "litellm_log_level" not in out
    assert out["litellm_hostname"] == "litellm.example.com"


# --------------------------------------------------------------------------- flags with prerequisites

FLAG_CASES = {
    # derived flag: (prerequisite keys, values that make it true)
    "litellm_oidc_enabled": {"keycloak_enabled": True, "litellm_oidc_enabled": True, "litellm_oidc_client_secret": "s" * 32},
    "litellm_backup_enabled": {"rustfs_enabled": True, "litellm_backup_enabled": True,
                               "litellm_s3_access_key": "ak", "litellm_s3_secret_key": "sk"},
    "litellm_monitoring_enabled": {"monitoring_enabled": True, "litellm_monitoring_enabled": True},
    "litellm_tracing_enabled": {"tracing_enabled": True, "litellm_tracing_enabled": True},
    "litellm_langfuse_enabled": {"litellm_langfuse_enabled": True, "litellm_langfuse_public_key": "pk",
                                 "litellm_langfuse_secret_key": "sk"},
    "litellm_presidio_enabled": {"litellm_guardrails_enabled": True, "litellm_presidio_enabled": True},
    "litellm_guardrails_enabled": {"litellm_guardrails_enabled": True},
    "litellm_prompt_injection_check": {"litellm_prompt_injection_check": True},
    "litellm_network_policies_enabled": {"network_policies_enabled": True},
    "litellm_autoscaling_enabled": {"litellm_autoscaling_enabled": True},
    "litellm_health_app_enabled": {"litellm_separate_health_app": True},
    "litellm_non_root": {"litellm_non_root_image": True},
    "litellm_db_pooler_enabled": {"litellm_db_pooler_enabled": True},
    "litellm_keycloak_client_enabled": {"keycloak_enabled": True, "litellm_oidc_enabled": True,
                                        "litellm_oidc_client_secret": "s" * 32},
    "litellm_self_hosted_enabled": {"litellm_self_hosted_models": [{"name": "m", "model": "x/y", "api_base": "http://v.llm.svc.cluster.local"}]},
    "litellm_dragonfly_acl_enabled": {"litellm_cache_backend": "dragonfly", "dragonfly_acl_enabled": True},
}
UNSET = {bool: False, str: "", list: []}


def _off(value: Any) -> Any:
    if value == "dragonfly":
        return "valkey"
    return UNSET[type(value)]


@pytest.mark.parametrize("flag", sorted(FLAG_CASES))
def test_flag_for_every_prerequisite_combination(flag: str) -> None:
    prereqs = FLAG_CASES[flag]
    keys = sorted(prereqs)
    neutral = {k: _off(v) for k, v in prereqs.items()}
    for mask in itertools.product((False, True), repeat=len(keys)):
        over = {k: (prereqs[k] if on else neutral[k]) for k, on in zip(keys, mask)}
        for enabled in (False, True):
            out = derive(**{**over, "litellm_enabled": enabled})
            assert out[flag] is (enabled and all(mask)), (flag, over, enabled)


@pytest.mark.parametrize(("slack", "discord", "flag", "expected"), [
    ("", "", True, False), ("https://hooks.slack.com/x", "", True, True), ("", "https://discord.com/api/webhooks/1/x", True, True),
    ("https://hooks.slack.com/x", "https://discord.com/api/webhooks/1/x", True, True),
    ("https://hooks.slack.com/x", "https://discord.com/api/webhooks/1/x", False, False),
])
def test_alerting(slack: str, discord: str, flag: bool, expected: bool) -> None:
    for enabled in (False, True):
        out = derive(litellm_enabled=enabled, litellm_alerting_enabled=flag,
                     litellm_slack_webhook_url=slack, litellm_discord_webhook_url=discord)
        assert out["litellm_alerting_enabled"] is (expected and enabled)
        assert out["litellm_alerting_discord"] is bool(expected and enabled and discord)
        if expected and enabled:
            assert out["litellm_alerting_webhook_url"] == (slack or discord + "/slack")
            assert all(out["litellm_alerting_fqdns"])
        else:
            assert out["litellm_alerting_webhook_url"] == "" and out["litellm_alerting_fqdns"] == []


PROVIDER_CREDENTIALS = {
    "azure_openai_us_east": {"azure_openai_us_east_api_key": "k", "azure_openai_us_east_resource_name": "east"},
    "azure_openai_us_east2": {"azure_openai_us_east2_api_key": "k", "azure_openai_us_east2_resource_name": "east2"},
    "azure_anthropic": {"azure_anthropic_api_key": "k", "azure_anthropic_api_base": "https://a"},
    "azure_cohere_rerank": {"azure_cohere_rerank_api_key": "k", "azure_cohere_rerank_api_base": "https://a"},
    "azure_cohere_embed": {"azure_cohere_embed_api_key": "k", "azure_cohere_embed_api_base": "https://a"},
}


@pytest.mark.parametrize("name", sorted(PROVIDER_CREDENTIALS))
def test_a_provider_is_listed_exactly_when_all_its_credentials_are_set(name: str) -> None:
    creds = PROVIDER_CREDENTIALS[name]
    for mask in itertools.product((False, True), repeat=len(creds)):
        over = {k: (v if on else "") for (k, v), on in zip(sorted(creds.items()), mask)}
        for enabled in (False, True):
            listed = [p["name"] for p in derive(**{**over, "litellm_enabled": enabled})["litellm_providers"]]
            assert listed == ([name] if enabled and all(mask) else []), (over, enabled)


def test_providers_carry_env_secret_keys_credential_and_models_declared_once() -> None:
    over = {k: v for creds in PROVIDER_CREDENTIALS.values() for k, v in creds.items()}
    out = derive(**over)
    by_name = {p["name"]: p for p in out["litellm_providers"]}
    assert list(by_name) == list(PROVIDER_CREDENTIALS)
    assert by_name["azure_openai_us_east"]["env"] == {"AZURE_API_BASE": "https://east.openai.azure.com",
                                                      "AZURE_API_VERSION": "2025-01-01-preview"}
    assert by_name["azure_openai_us_east2"]["env"]["AZURE_API_BASE_EAST2"] == "https://east2.openai.azure.com"
    assert by_name["azure_anthropic"]["secret_env"] == {"AZURE_ANTHROPIC_API_KEY": "k"}
    for provider in by_name.values():  # every model uses its provider's credential, every credential reads env vars
        credential = provider["credential"]
        assert all(m["litellm_params"]["litellm_credential_name"] == credential["credential_name"]
                   for m in provider["models"])
        env_vars = {v.removeprefix("os.environ/") for v in credential["credential_values"].values()}
        assert env_vars <= set(provider["env"]) | set(provider["secret_env"]), provider["name"]
    models = [m["model_name"] for m in out["litellm_model_list"]]
    assert len(models) == 26 and len(set(models)) == 26  # seed 001: 26 models
    assert len({m["model_info"]["id"] for m in out["litellm_model_list"]}) == 26
    assert out["litellm_credential_list"] == [p["credential"] for p in by_name.values()]
    assert out["litellm_provider_fqdn_patterns"][0] == "*.openai.azure.com"
    assert len(set(out["litellm_provider_fqdn_patterns"])) == len(out["litellm_provider_fqdn_patterns"])
    assert derive(**PROVIDER_CREDENTIALS["azure_anthropic"])["litellm_provider_fqdn_patterns"] == [
        "*.services.ai.azure.com"]


def test_a_catalogue_model_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "providers.yaml"
    bad.write_text("providers:\n  - name: p\n    models:\n      - {model_name: m, model: a/m, rmp: 1}\n")
    with pytest.raises(ValueError, match="p/m: unknown key.*rmp"):
        plugin.load_providers(bad)


# --------------------------------------------------------------------------- values


def test_hostname_and_keycloak_endpoints() -> None:
    out = derive(keycloak_subdomain="sso", keycloak_realm="home")
    assert out["litellm_hostname"] == "litellm.example.com"
    assert out["litellm_oidc_authorization_endpoint"] == "https://sso.example.com/realms/home/protocol/openid-connect/auth"
    assert out["litellm_oidc_token_endpoint"] == (
        "http://keycloak-service.identity.svc.cluster.local:8080/realms/home/protocol/openid-connect/token")
    assert out["litellm_oidc_userinfo_endpoint"].endswith("/realms/home/protocol/openid-connect/userinfo")


@pytest.mark.parametrize(("host", "expected"), [("", "https://cloud.langfuse.com"),
                                                 ("https://langfuse.example.com/", "https://langfuse.example.com")])
def test_langfuse_host(host: str, expected: str) -> None:
    out = derive(litellm_langfuse_host=host)
    assert out["litellm_langfuse_host"] == expected
    assert out["litellm_langfuse_fqdn"] == expected.removeprefix("https://")


def test_image_repository() -> None:
    assert derive()["litellm_image_repository"] == "ghcr.io/berriai/litellm"
    assert derive(litellm_non_root_image=True)["litellm_image_repository"] == "ghcr.io/berriai/litellm-non_root"


@pytest.mark.parametrize(("pooler", "mode", "host", "suffix"), [
    (False, "session", "litellm-postgresql-rw", ""), (True, "session", "litellm-postgresql-pooler-rw", ""),
    (True, "transaction", "litellm-postgresql-pooler-rw", "?pgbouncer=true"),
])
def test_database_url(pooler: bool, mode: str, host: str, suffix: str) -> None:
    out = derive(litellm_db_pooler_enabled=pooler, litellm_db_pooler_mode=mode, litellm_db_password="p@ss/w:rd")
    assert out["litellm_database_url"] == (
        f"postgresql://litellm:p%40ss%2Fw%3Ard@{host}.ai-system.svc.cluster.local:5432/litellm{suffix}")


@pytest.mark.parametrize(("instances", "ha"), [(1, False), (2, True), (3, True)])
def test_db_ha(instances: int, ha: bool) -> None:
    assert derive(litellm_db_instances=instances)["litellm_db_ha_enabled"] is ha


def test_cache_dragonfly() -> None:
    out = derive(dragonfly_litellm_password="pw", dragonfly_acl_enabled=True)
    assert (out["litellm_cache_dragonfly"], out["litellm_cache_valkey"]) == (True, False)
    assert out["litellm_redis_url"] == "redis://litellm:pw@dragonfly.cache.svc.cluster.local:6379"
    assert out["litellm_redis_namespace"] == "cache"
    assert out["litellm_dragonfly_acl_users"] == ["USER litellm ON >pw ~litellm:* +@ALL -@ADMIN"]
    assert derive(litellm_enabled=False, dragonfly_litellm_password="pw")["litellm_dragonfly_acl_users"] == []


@pytest.mark.parametrize(("password", "sentinel", "url"), [
    ("", False, "redis://valkey.cache.svc.cluster.local:6379"),
    ("pw", False, "redis://:pw@valkey.cache.svc.cluster.local:6379"),
    ("pw", True, ""),
])
def test_cache_valkey(password: str, sentinel: bool, url: str) -> None:
    out = derive(litellm_cache_backend="valkey", litellm_valkey_password=password, litellm_valkey_sentinel_enabled=sentinel)
    assert (out["litellm_cache_dragonfly"], out["litellm_cache_valkey"], out["litellm_cache_sentinel"]) == (False, True, sentinel)
    assert out["litellm_dragonfly_acl_enabled"] is False
    assert out["litellm_redis_url"] == url and out["litellm_dragonfly_acl_users"] == []
    if sentinel:
        assert json.loads(out["litellm_redis_sentinel_nodes"]) == [["valkey.cache.svc.cluster.local", 26379]]


def test_cache_flags_off_when_disabled() -> None:
    out = derive(litellm_enabled=False)
    assert not (out["litellm_cache_dragonfly"] or out["litellm_cache_valkey"] or out["litellm_dragonfly_acl_enabled"])


@pytest.mark.parametrize(("auto", "replicas", "effective", "pdb"), [
    (False, 1, 1, False), (False, 3, 3, True), (True, 1, 2, True),
])
def test_scaling(auto: bool, replicas: int, effective: int, pdb: bool) -> None:
    out = derive(litellm_autoscaling_enabled=auto, litellm_replicas=replicas)
    assert (out["litellm_effective_replicas"], out["litellm_pdb_enabled"]) == (effective, pdb)
    assert derive(litellm_enabled=False, litellm_replicas=3)["litellm_pdb_enabled"] is False


@pytest.mark.parametrize(("separate", "port"), [(False, 4000), (True, 4001)])
def test_health_ports(separate: bool, port: int) -> None:
    """Readiness always probes the proxy itself; only liveness may use the separate health app."""
    out = derive(litellm_separate_health_app=separate)
    assert (out["litellm_liveness_port"], out["litellm_probe_port"], out["litellm_port"]) == (port, 4000, 4000)


@pytest.mark.parametrize(("tracing", "injection", "langfuse"), list(itertools.product((False, True), repeat=3)))
def test_callbacks(tracing: bool, injection: bool, langfuse: bool) -> None:
    over: dict[str, Any] = {"litellm_prompt_injection_check": injection}
    if tracing:
        over |= FLAG_CASES["litellm_tracing_enabled"]
    if langfuse:
        over |= FLAG_CASES["litellm_langfuse_enabled"]
    out = derive(**over)
    assert out["litellm_callbacks"] == ["prometheus"] + (["otel"] if tracing else []) + (
        ["detect_prompt_injection"] if injection else [])
    assert out["litellm_success_callbacks"] == (["langfuse"] if langfuse else [])  # prometheus is in callbacks
    assert out["litellm_failure_callbacks"] == out["litellm_success_callbacks"]
    assert out["litellm_service_callbacks"] == ["prometheus_system"]


def test_self_hosted_endpoints() -> None:
    models = [
        {"name": "a", "model": "m/a", "api_base": "http://a-predictor.llm.svc.cluster.local", "api_key": "k"},
        {"name": "b", "model": "m/b", "api_base": "http://b.llm:8000/v1", "pod_port": 8012},
        {"name": "c", "model": "m/c", "api_base": "https://vllm.example.net/v1"},
        {"name": "d", "model": "m/d", "api_base": "https://vllm.example.net:8443/v1"},
        {"name": "e", "model": "m/e", "api_base": "http://local-predictor"},
    ]
    out = derive(litellm_self_hosted_models=models)
    assert [m["env_key"] for m in out["litellm_self_hosted"]] == ["SELF_HOSTED_0_API_KEY", "", "", "", ""]
    # pod ports (default 8080), never the Service port of the URL; a bare name is a Service of ai-system
    assert out["litellm_self_hosted_in_cluster"] == [
        {"namespace": "llm", "port": 8080}, {"namespace": "llm", "port": 8012}, {"namespace": "ai-system", "port": 8080}]
    assert out["litellm_self_hosted_fqdns"] == ["vllm.example.net"]
    assert out["litellm_self_hosted_external"] == [{"port": 443, "fqdns": ["vllm.example.net"]},
                                                   {"port": 8443, "fqdns": ["vllm.example.net"]}]
    assert derive(litellm_enabled=False, litellm_self_hosted_models=models)["litellm_self_hosted"] == []


def test_httproutes_follow_enabled() -> None:
    assert derive()["litellm_httproutes_enabled"] is True
    assert derive(litellm_enabled=False)["litellm_httproutes_enabled"] is False


def test_sample_derives() -> None:
    out = plugin.Plugin(apply_defaults(filled_sample(), schema())).data()
    assert len(out["litellm_providers"]) == 5 and out["litellm_dragonfly_acl_enabled"] and out["litellm_monitoring_enabled"]


# --------------------------------------------------------------------------- filters and age_key


def test_filters() -> None:
    assert plugin.url_quote("a b/c@d") == "a%20b%2Fc%40d"
    assert plugin.url_host("https://x.example.com:8443/p") == "x.example.com"
    assert plugin.url_host("") == ""


@pytest.mark.parametrize("pq", [False, True])
def test_age_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pq: bool) -> None:
    public = "age1pq1" + "q" * 40 if pq else "age1" + "q" * 58
    private = ("AGE-SECRET-KEY-PQ-1" if pq else "AGE-SECRET-KEY-1") + "Q" * 58
    (tmp_path / "age.key").write_text(f"# created: 2026-01-01T00:00:00Z\n# public key: {public}\n{private}\n")
    monkeypatch.delenv("SOPS_AGE_KEY_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    plugin._read_age_key.cache_clear()
    assert plugin.age_key("public") == public and plugin.age_key("private") == private
    other = tmp_path / "other.key"
    other.write_text(f"# public key: age1{'z' * 58}\nAGE-SECRET-KEY-1{'Z' * 58}\n")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(other))
    assert plugin.age_key("public") == "age1" + "z" * 58
    with pytest.raises(ValueError):
        plugin.age_key("secret")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(FileNotFoundError):
        plugin.age_key("public")
