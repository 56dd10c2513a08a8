"""The template pack's feature combinations, declared once for every test that walks them.

``COMBOS`` maps a name to the ``cluster.yaml`` overrides of one combination (on top of the
sample) and the generated files that must, and must not, exist with it. ``test_configure``
configures each one (in process, plus a few through the command line);
``test_litellm_stack`` renders each one that enables LiteLLM and checks the parsed documents.
The building blocks (``PROVIDERS``, ``NO_PROVIDERS``, ``ALL_FEATURES``, ``VALKEY``, ...) are
what other stories use to start from a known feature set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL_FEATURES", "BACKUP", "COMBOS", "GUARDRAILS", "LANGFUSE", "NO_PROVIDERS", "OIDC", "PROVIDERS",
           "PROVIDER_MODELS", "SELF_HOSTED", "VALKEY", "Combo", "stack_combos"]

AI = "kubernetes/apps/ai-system"
APP = f"{AI}/litellm/app"
KEYCLOAK_DIR = "kubernetes/apps/identity/keycloak/litellm-client"
ACL_DIR = "kubernetes/apps/cache/dragonfly/litellm-acl"

# provider -> the cluster.yaml values that enable it (every provider is enabled in the sample)
PROVIDERS: dict[str, dict[str, str]] = {
    "us_east": {"azure_openai_us_east_api_key": "fake-key-east", "azure_openai_us_east_resource_name": "fake-east"},
    "us_east2": {"azure_openai_us_east2_api_key": "fake-key-east2",
                 "azure_openai_us_east2_resource_name": "fake-east2"},
    "anthropic": {"azure_anthropic_api_key": "fake-key-anthropic",
                  "azure_anthropic_api_base": "https://fake.services.ai.azure.com/anthropic"},
    "cohere_rerank": {"azure_cohere_rerank_api_key": "fake-key-rerank",
                      "azure_cohere_rerank_api_base": "https://fake-r.services.ai.azure.com"},
    "cohere_embed": {"azure_cohere_embed_api_key": "fake-key-embed",
                     "azure_cohere_embed_api_base": "https://fake-e.services.ai.azure.com"},
}
NO_PROVIDERS = {k: "" for values in PROVIDERS.values() for k in values}
# provider -> the LiteLLM model names it brings
PROVIDER_MODELS: dict[str, set[str]] = {
    "us_east": {"gpt-4.1", "gpt-4.1-nano", "gpt-4o-mini", "o3", "o4-mini", "text-embedding-3-small",
                "text-embedding-ada-002"},
    "us_east2": {"gpt-5", "gpt-5-chat", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.1-chat", "gpt-5.2", "gpt-audio",
                 "gpt-audio-mini", "gpt-image-1", "gpt-realtime", "gpt-realtime-mini", "text-embedding-3-large"},
    "anthropic": {"claude-opus-4-5", "claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"},
    "cohere_rerank": {"cohere-rerank-v3.5"},
    "cohere_embed": {"cohere-embed-v-4-0"},
}
SELF_HOSTED = [
    {"name": "llama-3.3-70b", "model": "meta-llama/Llama-3.3-70B-Instruct",
     "api_base": "http://llama-70b-predictor.llm-platform.svc.cluster.local", "rpm": 100, "api_key": "fake-vllm-key"},
    {"name": "qwen", "model": "Qwen/Qwen3-8B", "api_base": "https://vllm.example.net/v1"},
]
OIDC = {"keycloak_enabled": True, "litellm_oidc_enabled": True}
BACKUP = {"rustfs_enabled": True, "litellm_backup_enabled": True, "litellm_s3_access_key": "RUSTFSFAKEACCESSKEY01",
          "litellm_s3_secret_key": "fake-s3-secret-key-000000"}
LANGFUSE = {"litellm_langfuse_enabled": True, "litellm_langfuse_public_key": "pk-lf-fake",
            "litellm_langfuse_secret_key": "sk-lf-fake-000000"}
TRACING = {"tracing_enabled": True, "litellm_tracing_enabled": True}
VALKEY = {"litellm_cache_backend": "valkey", "litellm_valkey_password": "fake-valkey-password",
          "dragonfly_enabled": False, "dragonfly_acl_enabled": False}
GUARDRAILS = {"litellm_guardrails_enabled": True, "litellm_presidio_enabled": True, "litellm_prompt_injection_check": True}
SLACK = {"litellm_alerting_enabled": True, "litellm_slack_webhook_url": "https://hooks.slack.com/services/FAKE"}
ALL_FEATURES: dict[str, Any] = {
    **OIDC, **BACKUP, **LANGFUSE, **GUARDRAILS, **TRACING, **SLACK,
    "litellm_discord_webhook_url": "https://discord.com/api/webhooks/1/FAKE",
    "litellm_autoscaling_enabled": True, "litellm_separate_health_app": True,
    "litellm_non_root_image": True, "litellm_db_pooler_enabled": True, "litellm_db_pooler_mode": "transaction",
    "litellm_db_instances": 3, "litellm_self_hosted_models": SELF_HOSTED,
}


@dataclass(frozen=True)
class Combo:
    """One feature combination: the overrides, the files it must produce and the ones it must not."""

    overrides: dict[str, Any]
    present: frozenset[str] = field(default_factory=frozenset)
    absent: frozenset[str] = field(default_factory=frozenset)


def _combo(overrides: dict[str, Any], present: set[str] | None = None, absent: set[str] | None = None) -> Combo:
    return Combo(overrides, frozenset(present or ()), frozenset(absent or ()))


NETPOL, SERVICEMONITOR, DASHBOARD = f"{APP}/networkpolicy.yaml", f"{APP}/servicemonitor.yaml", f"{APP}/grafana-dashboard.yaml"
COMBOS: dict[str, Combo] = {
    "sample": _combo({}, {NETPOL, SERVICEMONITOR}, {KEYCLOAK_DIR, ACL_DIR, f"{APP}/hpa.yaml"}),
    "all-features": _combo(ALL_FEATURES, {f"{KEYCLOAK_DIR}/app/secret.sops.yaml", f"{APP}/hpa.yaml", f"{APP}/pdb.yaml",
                                          "kubernetes/apps/ai-system/litellm/backup/backup.yaml"},
                           {f"{KEYCLOAK_DIR}/app/realm-import.yaml", ACL_DIR}),
    "oidc-keycloak": _combo(OIDC, {f"{KEYCLOAK_DIR}/ks.yaml", f"{KEYCLOAK_DIR}/app/secret.sops.yaml"}),
    "backups-rustfs": _combo(BACKUP, absent={KEYCLOAK_DIR}),
    "no-monitoring": _combo({"monitoring_enabled": False, "litellm_monitoring_enabled": False},
                            absent={SERVICEMONITOR, DASHBOARD}),
    "no-network-policies": _combo({"network_policies_enabled": False}, absent={NETPOL}),
    "no-network-policies-no-monitoring": _combo({"network_policies_enabled": False, "monitoring_enabled": False},
                                                absent={NETPOL}),
    "tracing": _combo(TRACING),
    "langfuse": _combo(LANGFUSE),
    "tracing-langfuse": _combo({**TRACING, **LANGFUSE}),
    "alerting-slack": _combo(SLACK),
    "alerting-discord": _combo({"litellm_alerting_enabled": True,
                                "litellm_discord_webhook_url": "https://discord.com/api/webhooks/2/X"}),
    "guardrails-presidio-injection": _combo(GUARDRAILS),
    "guardrails-injection-only": _combo({"litellm_guardrails_enabled": True, "litellm_prompt_injection_check": True}),
    "autoscaling-pdb": _combo({"litellm_autoscaling_enabled": True}, {f"{APP}/hpa.yaml", f"{APP}/pdb.yaml"}),
    "replicas-2-pdb": _combo({"litellm_replicas": 2}, {f"{APP}/pdb.yaml"}, {f"{APP}/hpa.yaml"}),
    "health-app": _combo({"litellm_separate_health_app": True}),
    "non-root": _combo({"litellm_non_root_image": True}),
    "valkey": _combo(VALKEY, absent={ACL_DIR}),
    "valkey-sentinel": _combo({**VALKEY, "litellm_valkey_sentinel_enabled": True}, absent={ACL_DIR}),
    "pooler": _combo({"litellm_db_pooler_enabled": True}),
    "db-ha": _combo({"litellm_db_instances": 3}),
    "pooler-ha-db": _combo({"litellm_db_pooler_enabled": True, "litellm_db_instances": 3}),
    "self-hosted-only": _combo({**NO_PROVIDERS, "litellm_self_hosted_models": SELF_HOSTED}),
    **{f"only-{name}": _combo({**NO_PROVIDERS, **values}) for name, values in PROVIDERS.items()},
    "litellm-disabled": _combo({"litellm_enabled": False}, {"kubernetes/flux/cluster/ks.yaml"}, {AI}),
}


def stack_combos() -> dict[str, dict[str, Any]]:
    """``name -> overrides`` of every combination that renders the LiteLLM stack."""
    return {name: c.overrides for name, c in COMBOS.items() if c.overrides.get("litellm_enabled", True)}
