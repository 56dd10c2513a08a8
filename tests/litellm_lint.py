"""Lint a LiteLLM proxy config.yaml for what LiteLLM accepts without complaint but gets wrong.

LiteLLM sets unknown ``litellm_settings`` keys as attributes on the module, drops unknown
``router_settings`` keys, ignores unknown top-level / ``general_settings`` keys, treats the
string ``"false"`` as true, splits a string ``access_groups`` into characters, sends
requests without credentials when ``litellm_credential_name`` names nothing, guesses a
provider for a model without prefix, and keeps duplicate ``model_info.id``. The proxy
starts in every one of these cases, so a startup check cannot see them; this linter can.

The allow-lists come from LiteLLM's settings reference (docs "All settings":
config_settings.md, litellm_settings / general_settings / router_settings tables) and the
keys LiteLLM 1.80.x's ``ProxyConfig.load_config`` reads itself; tests cross-check them
against every installed proxy. Keys the docs list but 1.80.x never reads are findings too,
and ``lint_config(config, version)`` adds the keys that one version does not read
(``NOT_READ_BY_VERSION``).

Usage: ``python tests/litellm_lint.py config.yaml`` (exit 1 on findings), or
``lint_config(dict_or_yaml_text)`` -> list of ``Finding``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "GENERAL_SETTINGS_KEYS",
    "LITELLM_SETTINGS_KEYS",
    "NOT_READ_BY_VERSION",
    "PROVIDER_PREFIXES",
    "ROUTER_SETTINGS_KEYS",
    "TOP_LEVEL_KEYS",
    "Finding",
    "lint_config",
    "lint_text",
]

# Top-level keys ProxyConfig reads (proxy_server.py load_config / _init_non_llm_configs).
TOP_LEVEL_KEYS = frozenset({
    "model_list", "litellm_settings", "general_settings", "router_settings",
    "environment_variables", "credential_list", "callback_settings", "guardrails", "prompts",
    "mcp_servers", "mcp_tools", "agent_list", "search_tools", "vector_store_registry",
    "assistant_settings", "finetune_settings", "files_settings", "default_vertex_config",
    "include",
})

# litellm_settings: documented keys + keys load_config handles itself. Every other key is
# set with setattr(litellm, key, value) and does nothing unless the module reads it.
LITELLM_SETTINGS_KEYS = frozenset({
    # special-cased in load_config
    "cache", "cache_params", "callbacks", "success_callback", "failure_callback",
    "guardrails", "global_prompt_directory", "priority_reservation_settings",
    "model_group_settings", "post_call_rules", "max_internal_user_budget",
    "default_max_internal_user_budget", "custom_provider_map", "default_team_settings",
    "upperbound_key_generate_params",
    # read from litellm_settings elsewhere in the proxy
    "prompt_injection_params", "mcp_aliases",
    # module attributes (documented)
    "service_callback", "turn_off_message_logging", "redact_user_api_key_info",
    "redact_messages_in_exceptions", "langfuse_default_tags", "modify_params",
    "enable_preview_features", "set_verbose", "json_logs", "default_fallbacks",
    "request_timeout", "force_ipv4", "content_policy_fallbacks", "context_window_fallbacks",
    "disable_end_user_cost_tracking", "disable_end_user_cost_tracking_prometheus_only",
    "key_generation_settings", "disable_add_transform_inline_image_block",
    "disable_hf_tokenizer_download", "enable_json_schema_validation",
    "disable_copilot_system_to_assistant", "drop_params", "num_retries", "max_budget",
    "budget_duration", "max_end_user_budget", "default_internal_user_params",
    "default_key_generate_params", "max_user_budget", "internal_user_budget_duration",
    "public_model_groups", "public_model_groups_links", "prometheus_metrics_config",
    "prometheus_initialize_budget_metrics", "return_response_headers", "ssl_verify",
    "allowed_fails", "max_fallbacks", "log_raw_request_response", "store_audit_logs",
    "default_redis_batch_cache_expiry", "ssl_certificate", "fallbacks",
    "require_auth_for_metrics_endpoint",
})

# Documented or commonly written keys LiteLLM 1.80.x never reads, with the fix.
LITELLM_SETTINGS_HINTS = {
    "service_callbacks": "LiteLLM reads litellm.service_callback (singular); "
                         "use service_callback: [\"prometheus_system\"]",
    "tpm_limit": "no global TPM limit here; set tpm per deployment, key or team",
    "rpm_limit": "no global RPM limit here; set rpm per deployment, key or team",
    "max_file_size_mb": "max_file_size_mb is a per-deployment litellm_params key",
    "cooldown_time": "cooldown_time belongs in router_settings",
    "retry_policy": "retry_policy belongs in router_settings",
    "routing_strategy": "routing_strategy belongs in router_settings",
    "allowed_fails_policy": "allowed_fails_policy belongs in router_settings",
    "master_key": "master_key belongs in general_settings",
    "telemetry": "no reader in LiteLLM 1.80.8-1.108.7 (1.108.7 has no such attribute); remove it",
}

# Keys of the allow-lists above that one LiteLLM version does not read (measured in its
# source; test_allow_lists_match_the_installed_litellm re-checks every installed version).
NOT_READ_BY_VERSION: dict[str, dict[str, frozenset[str]]] = {
    "1.80.8": {"litellm_settings": frozenset({"log_raw_request_response"})},
    "1.108.7": {"litellm_settings": frozenset({"disable_add_transform_inline_image_block"}),
                "general_settings": frozenset({"disable_adding_master_key_hash_to_db"})},
}

GENERAL_SETTINGS_HINTS = {
    "require_auth_for_metrics_endpoint": "LiteLLM reads litellm.require_auth_for_metrics_endpoint; "
                                         "put it in litellm_settings",
    "routing_strategy": "routing_strategy belongs in router_settings",
    "cache": "cache belongs in litellm_settings",
    "database_connection_timeout": "not read by LiteLLM 1.80.x (documented for later releases)",
}

# (documented keys 1.80.x never reads are left out: database_connection_timeout,
# embedding_model, user_mcp_management_mode, use_client_credentials_pass_through_routes)
GENERAL_SETTINGS_KEYS = frozenset({
    "completion_model", "store_prompts_in_spend_logs", "forward_client_headers_to_llm_api",
    "disable_spend_logs", "disable_spend_updates", "disable_master_key_return",
    "disable_retry_on_max_parallel_request_limit_error", "disable_reset_budget",
    "disable_adding_master_key_hash_to_db", "disable_responses_id_security",
    "enable_jwt_auth", "enforce_user_param", "reject_clientside_metadata_tags",
    "allowed_routes", "key_management_system", "master_key",
    "maximum_spend_logs_retention_period", "maximum_spend_logs_retention_interval",
    "database_url", "database_connection_pool_limit",
    "allow_requests_on_db_unavailable", "custom_auth",
    "max_parallel_requests", "global_max_parallel_requests", "infer_model_from_keys",
    "background_health_checks", "health_check_interval", "alerting", "alerting_threshold",
    "health_check_details", "public_routes",
    "alert_types", "enforced_params", "enable_oauth2_auth", "use_x_forwarded_for",
    "service_account_settings", "image_generation_model", "store_model_in_db",
    "supported_db_objects", "max_request_size_mb", "max_response_size_mb",
    "proxy_budget_rescheduler_min_time", "proxy_budget_rescheduler_max_time",
    "proxy_batch_write_at", "proxy_batch_polling_interval", "alerting_args",
    "custom_key_generate", "allowed_ips", "default_team_disabled",
    "alert_to_webhook_url", "key_management_settings", "allow_user_auth",
    "user_api_key_cache_ttl", "disable_prisma_schema_update", "litellm_key_header_name",
    "moderation_model", "custom_sso", "allow_client_side_credentials", "admin_only_routes",
    "use_azure_key_vault", "use_google_kms", "spend_report_frequency", "ui_access_mode",
    "litellm_jwtauth", "litellm_license", "oauth2_config_mappings", "pass_through_endpoints",
    "enable_oauth2_proxy_auth", "forward_openai_org_id", "role_permissions",
    "user_header_name", "disable_error_logs",
    "mcp_servers",
})

# router_settings: load_config keeps only keys that are litellm.Router(...) arguments
# (the docs also list redis_db and tag_filtering_match_any: not Router arguments in 1.80.x).
ROUTER_SETTINGS_KEYS = frozenset({
    "routing_strategy", "routing_strategy_args", "redis_url", "redis_host", "redis_port",
    "redis_password", "cache_responses", "cache_kwargs", "caching_groups",
    "client_ttl", "polling_interval", "default_priority", "num_retries", "max_fallbacks",
    "timeout", "stream_timeout", "default_litellm_params", "default_max_parallel_requests",
    "set_verbose", "debug_level", "default_fallbacks", "fallbacks", "context_window_fallbacks",
    "content_policy_fallbacks", "model_group_alias", "enable_pre_call_checks",
    "enable_tag_filtering", "retry_after", "retry_policy",
    "model_group_retry_policy", "allowed_fails", "allowed_fails_policy", "cooldown_time",
    "disable_cooldowns", "provider_budget_config", "optional_pre_call_checks",
    "ignore_invalid_deployments", "alerting_config", "router_general_settings",
    "assistants_config",
})

VALID_ROUTING_STRATEGIES = frozenset({
    "simple-shuffle", "least-busy", "usage-based-routing", "latency-based-routing",
    "cost-based-routing", "usage-based-routing-v2",
})

# Provider prefixes of litellm_params.model (a subset of litellm.provider_list; tests check
# each is a real provider of the installed version).
PROVIDER_PREFIXES = frozenset({
    "openai", "azure", "azure_ai", "azure_text", "anthropic", "anthropic_text", "cohere",
    "cohere_chat", "bedrock", "sagemaker", "sagemaker_chat", "vertex_ai", "vertex_ai_beta",
    "gemini", "mistral", "groq", "together_ai", "fireworks_ai", "deepseek", "xai",
    "perplexity", "openrouter", "ollama", "ollama_chat", "hosted_vllm", "vllm",
    "huggingface", "replicate", "databricks", "watsonx", "voyage", "jina_ai", "cerebras",
    "deepinfra", "nvidia_nim", "text-completion-openai", "custom_openai", "litellm_proxy",
    "cloudflare", "ai21", "nlp_cloud", "petals", "predibase",
    "sambanova", "lm_studio", "infinity", "github", "codestral", "friendliai",
    "openai_like", "triton", "clarifai", "dashscope", "moonshot", "llamafile",
})

QUOTED_BOOLEANS = frozenset({"true", "false", "yes", "no", "on", "off"})

# numeric settings: (section, key); values must be int/float (not bool, not string)
_NUMERIC_DEPLOYMENT_KEYS = ("rpm", "tpm", "timeout", "stream_timeout", "max_parallel_requests",
                            "max_tokens", "max_retries", "num_retries", "max_file_size_mb")
_NUMERIC_SECTION_KEYS = {
    "router_settings": ("timeout", "stream_timeout", "allowed_fails", "cooldown_time",
                        "num_retries", "retry_after", "max_fallbacks", "client_ttl",
                        "default_max_parallel_requests", "polling_interval"),
    "litellm_settings": ("request_timeout", "num_retries", "max_budget", "max_fallbacks",
                         "allowed_fails", "max_end_user_budget", "max_internal_user_budget"),
    "general_settings": ("database_connection_pool_limit", "database_connection_timeout",
                         "health_check_interval", "alerting_threshold", "proxy_batch_write_at",
                         "proxy_budget_rescheduler_min_time", "proxy_budget_rescheduler_max_time",
                         "max_parallel_requests", "global_max_parallel_requests",
                         "max_request_size_mb", "max_response_size_mb", "user_api_key_cache_ttl"),
}
_NUMERIC_CACHE_KEYS = ("ttl", "port", "max_connections")

GUARDRAIL_MODES = frozenset({"pre_call", "post_call", "during_call", "logging_only",
                             "pre_mcp_call", "during_mcp_call"})


@dataclass(frozen=True)
class Finding:
    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.path}: {self.message}"


class _DuplicateKeyLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of keeping the last silently."""

    duplicates: list[tuple[str, int]]


def _construct_mapping(loader: _DuplicateKeyLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hashable = key in seen
        except TypeError:
            continue
        if hashable:
            loader.duplicates.append((str(key), key_node.start_mark.line + 1))
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_DuplicateKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                    _construct_mapping)


def lint_text(text: str, version: str | None = None) -> list[Finding]:
    """Lint YAML text: duplicate keys (LiteLLM keeps the last one) plus ``lint_config``."""
    loader = _DuplicateKeyLoader(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    findings = [Finding("duplicate-yaml-key", f"line {line}", f"key {key!r} appears twice; "
                        "the last value wins") for key, line in loader.duplicates]
    if not isinstance(data, dict):
        return [*findings, Finding("not-a-mapping", "$", "config.yaml must be a mapping")]
    return findings + lint_config(data, version)


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith("os.environ/")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _walk(node: Any, path: str) -> Iterable[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def lint_config(config: dict[str, Any], version: str | None = None) -> list[Finding]:
    """Findings for ``config``; with ``version`` also the keys that LiteLLM version never reads."""
    out: list[Finding] = []
    dead = NOT_READ_BY_VERSION.get(version or "", {})
    add = lambda rule, path, msg: out.append(Finding(rule, path, msg))  # noqa: E731

    # -- unknown keys
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            add("unknown-top-level-key", key, "LiteLLM ignores this top-level key")
    sections = {
        "litellm_settings": LITELLM_SETTINGS_KEYS,
        "general_settings": GENERAL_SETTINGS_KEYS,
        "router_settings": ROUTER_SETTINGS_KEYS,
    }
    for section, allowed in sections.items():
        body = config.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            add("section-not-a-mapping", section, f"{section} must be a mapping")
            continue
        for key in body:
            if key in dead.get(section, frozenset()):
                add(f"unknown-{section.replace('_', '-')}-key", f"{section}.{key}",
                    f"LiteLLM {version} never reads it")
                continue
            if key in allowed:
                continue
            hint = {"litellm_settings": LITELLM_SETTINGS_HINTS,
                    "general_settings": GENERAL_SETTINGS_HINTS}.get(section, {}).get(key)
            effect = {"litellm_settings": "set as an unused attribute on the litellm module",
                      "general_settings": "never read by the proxy",
                      "router_settings": "dropped: not a litellm.Router argument"}[section]
            add(f"unknown-{section.replace('_', '-')}-key", f"{section}.{key}",
                f"{effect}" + (f"; {hint}" if hint else ""))

    # -- quoted booleans anywhere but environment_variables
    for path, value in _walk({k: v for k, v in config.items() if k != "environment_variables"},
                             "$"):
        if isinstance(value, str) and value.strip().lower() in QUOTED_BOOLEANS:
            add("quoted-boolean", path[2:], f"string {value!r} where a boolean is meant; "
                "any non-empty string is true to LiteLLM")

    # -- numbers
    for section, keys in _NUMERIC_SECTION_KEYS.items():
        body = config.get(section)
        if isinstance(body, dict):
            for key in keys:
                if key in body and body[key] is not None and not _is_number(body[key]):
                    add("non-numeric", f"{section}.{key}", f"expected a number, got {body[key]!r}")
    rs = config.get("router_settings")
    if isinstance(rs, dict):
        for policy in ("retry_policy", "allowed_fails_policy"):
            pol = rs.get(policy)
            if isinstance(pol, dict):
                for k, v in pol.items():
                    if not isinstance(v, int) or isinstance(v, bool):
                        add("non-numeric", f"router_settings.{policy}.{k}",
                            f"expected an integer, got {v!r}")
        strategy = rs.get("routing_strategy")
        if strategy is not None and strategy not in VALID_ROUTING_STRATEGIES:
            add("invalid-routing-strategy", "router_settings.routing_strategy",
                f"{strategy!r} is not one of {sorted(VALID_ROUTING_STRATEGIES)}")
    ls = config.get("litellm_settings")
    if isinstance(ls, dict) and isinstance(ls.get("cache_params"), dict):
        for key in _NUMERIC_CACHE_KEYS:
            value = ls["cache_params"].get(key)
            if value is not None and not _is_number(value) and not _is_env_ref(value):
                add("non-numeric", f"litellm_settings.cache_params.{key}",
                    f"expected a number, got {value!r}")

    # -- credentials
    credential_names: set[str] = set()
    creds = config.get("credential_list") or []
    if not isinstance(creds, list):
        add("credential-list-not-a-list", "credential_list", "credential_list must be a list")
        creds = []
    for i, cred in enumerate(creds):
        if not isinstance(cred, dict) or not cred.get("credential_name"):
            add("credential-without-name", f"credential_list[{i}]", "no credential_name")
            continue
        name = cred["credential_name"]
        if name in credential_names:
            add("duplicate-credential", f"credential_list[{i}]", f"{name!r} defined twice")
        credential_names.add(name)
        if not isinstance(cred.get("credential_values"), dict):
            add("credential-without-values", f"credential_list[{i}]",
                f"{name!r} has no credential_values mapping (the proxy refuses to start)")

    # -- deployments
    ids: dict[str, str] = {}
    models = config.get("model_list") or []
    if not isinstance(models, list):
        add("model-list-not-a-list", "model_list", "model_list must be a list")
        models = []
    for i, entry in enumerate(models):
        where = f"model_list[{i}]"
        if not isinstance(entry, dict):
            add("invalid-deployment", where, "not a mapping")
            continue
        name = entry.get("model_name")
        if name:
            where = f"model_list[{i}]({name})"
        params = entry.get("litellm_params")
        if not name or not isinstance(params, dict) or not params.get("model"):
            add("invalid-deployment", where,
                "needs model_name, litellm_params and litellm_params.model")
            continue
        model = params["model"]
        if not isinstance(model, str):
            add("invalid-deployment", f"{where}.litellm_params.model", "model must be a string")
        elif not _is_env_ref(model):
            prefix, sep, _ = model.partition("/")
            if not sep:
                add("model-without-provider", f"{where}.litellm_params.model",
                    f"{model!r} has no provider prefix; LiteLLM guesses the provider "
                    "(or drops the deployment)")
            elif prefix not in PROVIDER_PREFIXES:
                add("unknown-provider", f"{where}.litellm_params.model",
                    f"provider prefix {prefix!r} is not a LiteLLM provider")
        cred_name = params.get("litellm_credential_name")
        if cred_name is not None and cred_name not in credential_names:
            add("unknown-credential", f"{where}.litellm_params.litellm_credential_name",
                f"{cred_name!r} is not in credential_list; requests would go out without it")
        for key in _NUMERIC_DEPLOYMENT_KEYS:
            value = params.get(key)
            if value is not None and not _is_number(value) and not _is_env_ref(value):
                add("non-numeric", f"{where}.litellm_params.{key}",
                    f"expected a number, got {value!r}")
        for key in ("rpm", "tpm"):
            value = entry.get(key)
            if value is not None and not _is_number(value):
                add("non-numeric", f"{where}.{key}", f"expected a number, got {value!r}")
        info = entry.get("model_info") or {}
        if not isinstance(info, dict):
            add("invalid-model-info", f"{where}.model_info", "model_info must be a mapping")
            continue
        groups = info.get("access_groups")
        if groups is not None and (not isinstance(groups, list)
                                   or not all(isinstance(g, str) for g in groups)):
            add("access-groups-not-a-list", f"{where}.model_info.access_groups",
                f"must be a list of strings, got {groups!r} (a string becomes one group per "
                "character)")
        mid = info.get("id")
        if mid is not None:
            key = str(mid)
            if key in ids:
                add("duplicate-model-id", f"{where}.model_info.id",
                    f"id {key!r} already used by {ids[key]}")
            else:
                ids[key] = where

    # -- guardrails
    guardrails = config.get("guardrails") or []
    if isinstance(guardrails, list):
        seen: set[str] = set()
        for i, g in enumerate(guardrails):
            where = f"guardrails[{i}]"
            if not isinstance(g, dict) or not g.get("guardrail_name"):
                add("guardrail-without-name", where, "no guardrail_name (the proxy refuses to "
                    "start)")
                continue
            gname = g["guardrail_name"]
            if gname in seen:
                add("duplicate-guardrail", where, f"{gname!r} defined twice")
            seen.add(gname)
            gp = g.get("litellm_params")
            if not isinstance(gp, dict) or not gp.get("guardrail"):
                add("invalid-guardrail", where, f"{gname!r} needs litellm_params.guardrail")
                continue
            modes = gp.get("mode")
            for mode in modes if isinstance(modes, list) else [modes]:
                if mode is not None and mode not in GUARDRAIL_MODES:
                    add("invalid-guardrail-mode", f"{where}.litellm_params.mode",
                        f"{mode!r} is not one of {sorted(GUARDRAIL_MODES)}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} CONFIG.yaml", file=sys.stderr)
        return 2
    findings = lint_text(Path(argv[1]).read_text(encoding="utf-8"))
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
