"""Derived variables for the cluster templates (makejinja plugin API).

``Plugin(data)`` is constructed with the loaded ``cluster.yaml`` data. ``data()``
returns the derived variables, computed by one small function per component
(``DERIVATIONS``). Each function receives the data merged with everything derived
before it and returns a dict; a flag of a component is always false when the
component's prerequisites are missing, so templates only test one name.

The schema (``schemas/cluster.schema.json``) is the single source of defaults. The
renderer applies them before this plugin runs (the plugin does not apply them a second
time); when the plugin runs under plain makejinja, which has no schema stage, it applies
the schema's top-level defaults itself (CWD-relative file).

Functions: ``age_key('public'|'private')``. Filters: ``url_quote``, ``url_host``, ``yaml_value``
(every interpolation: a YAML-safe quoted value), ``yaml_block`` (a list or mapping as block YAML),
``sha256`` and ``hmac_sha256`` (pod-template checksums). Cache, self-hosted endpoints, health,
egress and the integration points live in ``litellm_wiring.py`` next to this file.
This module must not import the rendering tool: it runs under plain makejinja too.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path("schemas/cluster.schema.json")
AGE_KEY_FILE = Path("age.key")

Data = Mapping[str, Any]
Derived = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def _sibling(name: str) -> Any:
    """The helper module ``name`` next to this file, loaded by path (no import path needed, nothing global)."""
    spec = importlib.util.spec_from_file_location(f"_litellm_pack_{name}", Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"{name}.py not found next to {__file__}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_wiring = _sibling("litellm_wiring")
_set, url_quote, url_host = _wiring._set, _wiring.url_quote, _wiring.url_host
sha256, hmac_sha256 = _wiring.sha256, _wiring.hmac_sha256
self_hosted, cache, health, integrations, egress = (
    _wiring.self_hosted, _wiring.cache, _wiring.health, _wiring.integrations, _wiring.egress)


# Characters a YAML double-quoted scalar must not carry raw: C0/C1 controls, DEL, the line
# and paragraph separators (line breaks in YAML 1.1), the byte order mark and surrogates.
_YAML_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff]")


def yaml_value(value: Any) -> str:
    """``value`` as one YAML flow value that can never change the document's structure.

    Strings become double-quoted scalars (a newline, ``#``, ``: ``, ``*alias``, ``!!tag``,
    ``---`` stay text), numbers, booleans and ``None`` their YAML spelling, lists and
    mappings flow collections. Every interpolation in the templates goes through it.
    """
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{yaml_value(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return json.dumps(value)
    text = json.dumps(str(value), ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def yaml_block(value: Any, indent: int = 0) -> str:
    """A list or mapping as block YAML, every line indented by ``indent`` spaces (no final newline)."""
    import yaml  # PyYAML: a dependency of makejinja and of gitops-render

    if not isinstance(value, (Mapping, list, tuple)):
        raise TypeError(f"yaml_block: expected a list or mapping, not {type(value).__name__}")
    text = yaml.safe_dump(json.loads(json.dumps(value)), sort_keys=False, width=1 << 16).rstrip("\n")
    return "\n".join(" " * indent + line for line in text.split("\n"))


# --------------------------------------------------------------------------- components


def core(d: Data) -> Derived:
    enabled = bool(d.get("litellm_enabled"))
    repository = "ghcr.io/berriai/litellm-non_root" if d.get("litellm_non_root_image") else "ghcr.io/berriai/litellm"
    return {
        "litellm_enabled": enabled,
        "litellm_hostname": f"{d['litellm_subdomain']}.{d['cloudflare_domain']}",
        "litellm_image_repository": repository,
        "litellm_non_root": enabled and bool(d.get("litellm_non_root_image")),
        "litellm_network_policies_enabled": enabled and bool(d.get("network_policies_enabled")),
    }


PROVIDERS_FILE = Path(__file__).with_name("litellm_providers.yaml")
_PARAM_KEYS = ("model", "rpm", "tpm", "max_tokens", "thinking", "input_type")
_INFO_KEYS = ("mode", "base_model", "supports_audio_input", "supports_audio_output", "disable_background_health_check",
              "access_groups")


@lru_cache(maxsize=4)
def load_providers(path: Path = PROVIDERS_FILE) -> tuple[dict[str, Any], ...]:
    """The provider catalogue (``litellm_providers.yaml``), checked for unknown model keys."""
    import yaml  # PyYAML: a dependency of makejinja and of gitops-render

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: same result, faster
    catalogue = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)["providers"]  # noqa: S506 - a safe loader
    known = {"model_name", "reasoning", "cache_system", *_PARAM_KEYS, *_INFO_KEYS}
    for provider in catalogue:
        for model in provider["models"]:
            unknown = set(model) - known
            if unknown:
                raise ValueError(f"{path.name}: {provider['name']}/{model.get('model_name')}: unknown key(s) "
                                 f"{', '.join(sorted(unknown))}")
    return tuple(catalogue)


def _model_entry(model: Mapping[str, Any], credential: str, id_prefix: str) -> dict[str, Any]:
    """One LiteLLM ``model_list`` entry of a catalogue model."""
    params: dict[str, Any] = {"model": model["model"], "litellm_credential_name": credential}
    params.update({k: model[k] for k in _PARAM_KEYS[1:] if k in model})
    if model.get("reasoning"):
        params["merge_reasoning_content_in_choices"] = True
    if model.get("cache_system"):
        params["cache_control_injection_points"] = [{"location": "message", "role": "system"}]
    info: dict[str, Any] = {"id": f"{id_prefix}-{model['model_name']}", "mode": model["mode"]}
    info.update({"base_model": model["base_model"]} if "base_model" in model else {})
    info.update({"supports_reasoning": True} if model.get("reasoning") else {})
    info.update({k: model[k] for k in _INFO_KEYS[2:] if k in model})
    return {"model_name": model["model_name"], "litellm_params": params, "model_info": info}


def providers(d: Data) -> Derived:
    """The providers whose credentials are set, from the catalogue (each declared once)."""
    enabled: list[dict[str, Any]] = []
    for spec in load_providers() if d["litellm_enabled"] else ():
        if not all(_set(d.get(key)) for key in spec["requires"]):
            continue
        credential = spec["credential"]
        enabled.append({
            "name": spec["name"],
            "env": {name: value.format_map(d) for name, value in spec["env"].items()},
            "secret_env": {name: d[key] for name, key in spec["secret_env"].items()},
            "credential": {
                "credential_name": credential["name"],
                "credential_values": {k: f"os.environ/{env}" for k, env in credential["values"].items()},
                "credential_info": {"description": credential.get("description", spec["title"])},
            },
            "egress_fqdns": list(spec["egress_fqdns"]),
            "models": [_model_entry(m, credential["name"], spec["model_id_prefix"]) for m in spec["models"]],
        })
    return {
        "litellm_providers": enabled,
        "litellm_self_hosted_enabled": bool(d["litellm_enabled"] and _set(d.get("litellm_self_hosted_models"))),
        "litellm_provider_fqdn_patterns": list(dict.fromkeys(p for x in enabled for p in x["egress_fqdns"])),
        "litellm_credential_list": [x["credential"] for x in enabled],
    }


def database(d: Data) -> Derived:
    on = d["litellm_enabled"]
    pooler = on and bool(d.get("litellm_db_pooler_enabled"))
    cluster = "litellm-postgresql"
    host = f"{cluster}-pooler-rw" if pooler else f"{cluster}-rw"
    query = "?pgbouncer=true" if pooler and d.get("litellm_db_pooler_mode") == "transaction" else ""
    url = (f"postgresql://{url_quote(d['litellm_db_user'])}:{url_quote(d.get('litellm_db_password') or '')}"
           f"@{host}.ai-system.svc.cluster.local:5432/{d['litellm_db_name']}{query}")
    return {
        "litellm_db_cluster_name": cluster,
        "litellm_db_pooler_enabled": pooler,
        "litellm_db_ha_enabled": int(d["litellm_db_instances"]) > 1,
        "litellm_database_url": url,
    }


def keycloak(d: Data) -> Derived:
    hostname = f"{d['keycloak_subdomain']}.{d['cloudflare_domain']}"
    realm = d["keycloak_realm"]
    internal = f"{d['keycloak_internal_url'].rstrip('/')}/realms/{realm}/protocol/openid-connect"
    return {
        "litellm_oidc_authorization_endpoint": f"https://{hostname}/realms/{realm}/protocol/openid-connect/auth",
        "litellm_oidc_token_endpoint": f"{internal}/token",
        "litellm_oidc_userinfo_endpoint": f"{internal}/userinfo",
    }


def oidc(d: Data) -> Derived:
    return {"litellm_oidc_enabled": bool(
        d["litellm_enabled"] and d.get("keycloak_enabled") and d.get("litellm_oidc_enabled")
        and _set(d.get("litellm_oidc_client_secret")))}


def backup(d: Data) -> Derived:
    return {"litellm_backup_enabled": bool(
        d["litellm_enabled"] and d.get("rustfs_enabled") and d.get("litellm_backup_enabled")
        and _set(d.get("litellm_s3_access_key")) and _set(d.get("litellm_s3_secret_key")))}


def monitoring(d: Data) -> Derived:
    return {"litellm_monitoring_enabled": bool(
        d["litellm_enabled"] and d.get("monitoring_enabled") and d.get("litellm_monitoring_enabled"))}


def tracing(d: Data) -> Derived:
    return {"litellm_tracing_enabled": bool(
        d["litellm_enabled"] and d.get("tracing_enabled") and d.get("litellm_tracing_enabled"))}


def langfuse(d: Data) -> Derived:
    enabled = bool(d["litellm_enabled"] and d.get("litellm_langfuse_enabled")
                   and _set(d.get("litellm_langfuse_public_key")) and _set(d.get("litellm_langfuse_secret_key")))
    host = (d.get("litellm_langfuse_host") or "").strip().rstrip("/") or "https://cloud.langfuse.com"
    return {
        "litellm_langfuse_enabled": enabled,
        "litellm_langfuse_host": host,
        "litellm_langfuse_fqdn": url_host(host),
    }


def alerting(d: Data) -> Derived:
    slack = _set(d.get("litellm_slack_webhook_url"))
    discord = _set(d.get("litellm_discord_webhook_url"))
    enabled = bool(d["litellm_enabled"] and d.get("litellm_alerting_enabled") and (slack or discord))
    return {
        "litellm_alerting_enabled": enabled,
        "litellm_alerting_discord": enabled and discord,
        # LiteLLM alerts through a Slack webhook; Discord accepts Slack payloads at <webhook>/slack.
        "litellm_alerting_webhook_url": (d["litellm_slack_webhook_url"] if slack
                                         else f"{str(d.get('litellm_discord_webhook_url') or '').rstrip('/')}/slack")
        if enabled else "",
        "litellm_alerting_fqdns": ([url_host(d["litellm_slack_webhook_url"])] if enabled and slack else [])
        + ([url_host(d["litellm_discord_webhook_url"])] if enabled and discord else []),
    }


def guardrails(d: Data) -> Derived:
    on = d["litellm_enabled"]
    guard = bool(on and d.get("litellm_guardrails_enabled"))
    return {
        "litellm_guardrails_enabled": guard,
        "litellm_presidio_enabled": guard and bool(d.get("litellm_presidio_enabled")),
        "litellm_prompt_injection_check": bool(on and d.get("litellm_prompt_injection_check")),
    }


def callbacks(d: Data) -> Derived:
    """LiteLLM callback lists (seed 002: prometheus everywhere; optional extras).

    ``callbacks`` already logs successes and failures to prometheus: ``success_callback`` and
    ``failure_callback`` carry only what is not in it (Langfuse), and are empty otherwise.
    """
    cb = ["prometheus"]
    if d["litellm_tracing_enabled"]:
        cb.append("otel")
    if d["litellm_prompt_injection_check"]:
        cb.append("detect_prompt_injection")
    outcome = ["langfuse"] if d["litellm_langfuse_enabled"] else []
    return {
        "litellm_callbacks": cb,
        "litellm_service_callbacks": ["prometheus_system"],
        "litellm_success_callbacks": outcome,
        "litellm_failure_callbacks": list(outcome),
    }


def scaling(d: Data) -> Derived:
    autoscaling = bool(d["litellm_enabled"] and d.get("litellm_autoscaling_enabled"))
    replicas = int(d["litellm_autoscaling_min_replicas"]) if autoscaling else int(d["litellm_replicas"])
    return {
        "litellm_autoscaling_enabled": autoscaling,
        "litellm_effective_replicas": replicas,
        "litellm_pdb_enabled": bool(d["litellm_enabled"]) and replicas > 1,
    }


DERIVATIONS: tuple[Callable[[Data], Derived], ...] = (
    core, providers, self_hosted, database, cache, keycloak, oidc, backup, monitoring, tracing,
    langfuse, alerting, guardrails, callbacks, scaling, health, integrations, egress,
)


def derive(data: Data) -> Derived:
    """All derived variables for ``data`` (data with schema defaults applied)."""
    merged: dict[str, Any] = dict(data)
    derived: Derived = {}
    for step in DERIVATIONS:
        out = step(merged)
        merged.update(out)
        derived.update(out)
    return derived


# --------------------------------------------------------------------------- schema defaults


def schema_defaults(schema_file: Path = SCHEMA_FILE) -> dict[str, Any]:
    """Top-level ``default`` values of the cluster schema ({} when the file is absent)."""
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}


# --------------------------------------------------------------------------- age key

_PUBLIC = re.compile(r"^# public key: (age1[0-9a-z]+)\s*$", re.MULTILINE)
_PRIVATE = re.compile(r"^(AGE-SECRET-KEY-(?:PQ-)?1[0-9A-Z]+)\s*$", re.MULTILINE)


@lru_cache(maxsize=8)
def _read_age_key(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def age_key(kind: str = "public", file: str | None = None) -> str:
    """The public recipient or the private identity from the age key file.

    The file is ``SOPS_AGE_KEY_FILE`` when set, else ``age.key`` relative to the CWD
    (under gitops-render: relative to the repository root, see :class:`Plugin`).
    """
    return _age_key(kind, file)


_COMMITTED_RECIPIENT = re.compile(r"^\s*(?:-\s*)?age:\s*[\"']?(age1[0-9a-z]+)[\"']?\s*$", re.MULTILINE)


def _age_key(kind: str, file: str | None, root: Path | None = None, sops_config: Path | None = None,
             default: str | None = None) -> str:
    if kind not in ("public", "private"):
        raise ValueError(f"age_key(): kind must be 'public' or 'private', not {kind!r}")
    # ``default`` is gitops-render's resolved key file (SOPS_AGE_KEY_FILE already applied);
    # under makejinja there is none: SOPS_AGE_KEY_FILE, else age.key
    path = file or default or os.environ.get("SOPS_AGE_KEY_FILE") or str(AGE_KEY_FILE)
    if root is not None and not Path(path).is_absolute():
        path = str(root / path)
    try:
        text = _read_age_key(path)
    except FileNotFoundError:
        # No key (a CI check without the private key): the public recipient is the one the
        # committed sops config already names. Writing secrets still needs the key itself.
        committed = _committed_recipient(sops_config or Path(".sops.yaml")) if kind == "public" and not file else None
        if committed is not None:
            return committed
        raise FileNotFoundError(f"age key file {path!r} not found: create it with `gitops-render init` "
                                "(or `age-keygen -o age.key`)") from None
    match = (_PUBLIC if kind == "public" else _PRIVATE).search(text)
    if match is None:
        raise ValueError(f"age key file {path!r} has no {kind} key line")
    return match.group(1)


def _committed_recipient(sops_config: Path) -> str | None:
    """The single age recipient of an existing sops config (None when absent or ambiguous)."""
    try:
        found = set(_COMMITTED_RECIPIENT.findall(sops_config.read_text(encoding="utf-8")))
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------- plugin


class Plugin:
    """makejinja plugin: derived data, ``age_key`` and URL filters.

    ``config`` is the renderer's settings. Under gitops-render it carries the repository
    ``root`` and, resolved by gitops-render's one rule (``SOPS_AGE_KEY_FILE`` >
    ``[secrets] age_key_file`` > ``age.key``, relative to the root), ``age_key_file`` and
    ``sops_config_file``: so ``age_key`` and the schema are found relative to the
    repository, not to the directory the command runs in (``--root``). makejinja's
    config has none of these: paths stay relative to the CWD, as makejinja users expect.
    """

    def __init__(self, data: dict[str, Any], config: Any = None) -> None:
        self._data = data
        self._root: Path | None = getattr(config, "root", None)
        self._key_file: Path | None = getattr(config, "age_key_file", None)
        self._sops_config: Path | None = getattr(config, "sops_config_file", None)

    def data(self) -> dict[str, Any]:
        if self._root is not None:
            # gitops-render validated the data and applied every schema default (nested ones too)
            return {**self._data, **derive(self._data)}
        merged = {**schema_defaults(SCHEMA_FILE), **self._data}  # plain makejinja: no schema stage
        return {**merged, **derive(merged)}

    def filters(self) -> list[Callable[..., Any]]:
        return [url_quote, url_host, yaml_value, yaml_block, sha256, hmac_sha256]

    def functions(self) -> list[Callable[..., Any]]:
        if self._root is None or self._key_file is None:
            return [age_key]
        root = Path(self._root)
        key_file = str(self._key_file)
        sops_config = Path(self._sops_config or root / ".sops.yaml")

        def repo_age_key(kind: str = "public", file: str | None = None) -> str:
            """``age_key`` with the repository's key file, as gitops-render resolved it."""
            return _age_key(kind, file, root, sops_config, default=key_file)

        repo_age_key.__name__ = "age_key"  # registered under the name the templates call
        return [repo_age_key]
