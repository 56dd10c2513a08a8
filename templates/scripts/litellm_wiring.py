"""How the LiteLLM stack is wired into the cluster: cache, self-hosted endpoints, health, egress,
the integration points in other namespaces, and the pod-template checksums.

A helper module of ``plugin.py`` (loaded by file path next to it, so it needs no import path);
each component function receives the data merged with everything derived before it.
Like ``plugin.py`` it must not import the rendering tool: it runs under plain makejinja too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

Data = Mapping[str, Any]
Derived = dict[str, Any]

DRAGONFLY_HOST = "dragonfly.cache.svc.cluster.local"
# KServe predictors (raw deployment) and vLLM listen on 8080; KServe serverless pods take traffic on the
# queue-proxy's 8012. NetworkPolicy ports are pod ports, never the Service port of the URL.
DEFAULT_POD_PORT = 8080
# <service>.<namespace>, optionally followed by .svc and the cluster domain: the forms cluster DNS resolves
_IN_CLUSTER = re.compile(r"^[a-z0-9-]+\.([a-z0-9-]+)(\.svc(\.[a-z0-9-]+)*)?$")


def _set(value: Any) -> bool:
    """True for a non-empty value (None, "", [] and {} are unset)."""
    if isinstance(value, str):
        return value.strip() != ""
    return value is not None and value != [] and value != {}


def url_quote(value: Any) -> str:
    """Percent-encode a value for use inside a URL's user-info part (``safe=""``)."""
    return quote(str(value), safe="")


def url_host(value: Any) -> str:
    """Host name of a URL (``https://a.b:8443/x`` -> ``a.b``); "" for an empty value."""
    if not _set(value):
        return ""
    text = str(value)
    return urlsplit(text if "://" in text else "//" + text).hostname or ""


def url_port(value: str) -> int:
    """Port of a URL: the explicit one, else 443 for https and 80 for http."""
    parts = urlsplit(value if "://" in value else "//" + value)
    return parts.port or (443 if parts.scheme == "https" else 80)


def service_namespace(host: str) -> str:
    """Namespace of an in-cluster service host (``valkey.db``, ``valkey.db.svc.cluster.local`` -> ``db``), else ""."""
    match = _IN_CLUSTER.match(host)
    return match.group(1) if match else ""


# --------------------------------------------------------------------------- checksums


def sha256(value: Any) -> str:
    """Hex SHA-256 of a rendered text (the ConfigMap's checksum on the pod template)."""
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()


def hmac_sha256(value: Any, key: Any) -> str:
    """Hex HMAC-SHA256 of a rendered text under ``key`` (the Secret's checksum on the pod template).

    Keyed with a high-entropy secret (``litellm_salt_key``, 32+ characters), the result changes with
    every value of the Secret but verifies no guess of any of them: unlike a plain hash of the
    plaintext it is no offline verifier. Computed from the plaintext so that it is stable across
    re-encryptions and identical under plain makejinja, which never sees the ciphertext.
    """
    return hmac.new(str(key).encode("utf-8"), str(value).encode("utf-8"), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- components


def self_hosted(d: Data) -> Derived:
    """Normalised self-hosted (vLLM) models and where their endpoints are, for egress rules.

    In-cluster endpoints are opened by namespace and *pod* port (``pod_port``, default 8080);
    external ones by FQDN and the URL's own port.
    """
    models: list[dict[str, Any]] = []
    in_cluster: dict[tuple[str, int], None] = {}
    external: dict[tuple[str, int], None] = {}
    if d["litellm_self_hosted_enabled"]:
        for index, model in enumerate(d["litellm_self_hosted_models"]):
            entry = dict(model)
            entry["env_key"] = f"SELF_HOSTED_{index}_API_KEY" if _set(model.get("api_key")) else ""
            models.append(entry)
            host = url_host(model["api_base"])
            namespace = service_namespace(host) or ("ai-system" if "." not in host else "")
            if namespace:
                in_cluster[(namespace, int(model.get("pod_port") or DEFAULT_POD_PORT))] = None
            else:
                external[(host, url_port(model["api_base"]))] = None
    ports = sorted({port for _, port in external})
    return {
        "litellm_self_hosted": models,
        "litellm_self_hosted_in_cluster": [{"namespace": ns, "port": port} for ns, port in in_cluster],
        "litellm_self_hosted_fqdns": list(dict.fromkeys(host for host, _ in external)),
        # one FQDN egress rule per port: each external endpoint reachable on its own port only
        "litellm_self_hosted_external": [{"port": p, "fqdns": [h for h, q in external if q == p]} for p in ports],
        "litellm_model_list": [m for p in d["litellm_providers"] for m in p["models"]]
        + [_self_hosted_entry(m) for m in models],
    }


def _self_hosted_entry(model: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model_list`` entry of a self-hosted (vLLM) model, served as ``hosted_vllm/<model>``."""
    params: dict[str, Any] = {"model": f"hosted_vllm/{model['model']}", "api_base": model["api_base"]}
    if model["env_key"]:
        params["api_key"] = f"os.environ/{model['env_key']}"
    params.update({k: model[k] for k in ("rpm", "tpm", "max_tokens") if model.get(k)})
    return {"model_name": model["name"], "litellm_params": params,
            "model_info": {"id": f"self-hosted-{model['name']}", "mode": "chat",
                           "access_groups": list(model.get("access_groups") or [])}}


def cache(d: Data) -> Derived:
    """The Redis-compatible cache and the one connection form each mode needs.

    Plain Redis/Dragonfly: ``REDIS_URL`` only (LiteLLM 1.80.8 with redis-py >= 6.4 reads nothing
    else; credentials inside the URL). Sentinel: ``REDIS_SENTINEL_NODES``/``REDIS_SERVICE_NAME``
    and the password as ``REDIS_SENTINEL_PASSWORD`` (1.80.8: the master's auth; >= 1.106: the
    Sentinels') and ``REDIS_PASSWORD`` (>= 1.106: the master's), never ``REDIS_HOST``/``PORT``
    (>= 1.106 crashes with ``got multiple values for argument 'host'``).
    """
    on = d["litellm_enabled"]
    valkey = on and d.get("litellm_cache_backend") == "valkey"
    dragonfly = on and not valkey
    sentinel = valkey and bool(d.get("litellm_valkey_sentinel_enabled"))
    if valkey:
        host, port, user = d["litellm_valkey_host"], int(d["litellm_valkey_port"]), ""
        password = d.get("litellm_valkey_password") or ""
        namespace = str(d.get("litellm_valkey_namespace") or "").strip() or service_namespace(host)
    else:
        host, port, user = DRAGONFLY_HOST, 6379, "litellm"
        password = d.get("dragonfly_litellm_password") or ""
        namespace = "cache"
    auth = f"{url_quote(user)}:{url_quote(password)}@" if user else (f":{url_quote(password)}@" if password else "")
    acl = dragonfly and bool(d.get("dragonfly_acl_enabled"))
    return {
        "litellm_cache_dragonfly": dragonfly,
        "litellm_cache_valkey": valkey,
        "litellm_cache_sentinel": sentinel,
        "litellm_dragonfly_acl_enabled": acl,
        # the line the cluster's own Dragonfly ACL file includes (spec.aclFromSecret); empty when off
        "litellm_dragonfly_acl_users": [f"USER litellm ON >{password} ~litellm:* +@ALL -@ADMIN"] if acl else [],
        "litellm_redis_host": host,
        "litellm_redis_port": port,
        "litellm_redis_password": password,
        "litellm_redis_namespace": namespace,
        "litellm_redis_url": "" if sentinel else f"redis://{auth}{host}:{port}",
        "litellm_redis_sentinel_nodes": (json.dumps([[host, int(d["litellm_valkey_sentinel_port"])]])
                                         if sentinel else ""),
        # REDIS_SENTINEL_PASSWORD means the master's password to LiteLLM 1.80.x and the Sentinels'
        # to 1.106+: with a 1.106+ image it is set only when the Sentinels require it
        "litellm_redis_sentinel_password_env": sentinel and bool(password) and (
            not litellm_at_least(str(d.get("litellm_image_tag") or ""), 1, 106)
            or bool(d.get("litellm_valkey_sentinel_auth"))),
    }


def litellm_at_least(tag: str, major: int, minor: int) -> bool:
    """Whether an image tag (``main-v1.80.8-stable.1``) names LiteLLM ``major.minor`` or later."""
    found = re.search(r"(?:^|[^0-9.])v?(\d+)\.(\d+)\.\d+", tag)
    return found is not None and (int(found.group(1)), int(found.group(2))) >= (major, minor)


def health(d: Data) -> Derived:
    """Ports. The separate health app answers liveness only: its readiness never reflects the proxy."""
    separate = bool(d["litellm_enabled"] and d.get("litellm_separate_health_app"))
    return {
        "litellm_health_app_enabled": separate,
        "litellm_port": 4000,
        "litellm_health_port": 4001,
        "litellm_liveness_port": 4001 if separate else 4000,
        "litellm_probe_port": 4000,
    }


def keycloak_client(d: Data) -> dict[str, Any]:
    """The Keycloak client ``litellm`` (PKCE S256) as the cluster's realm lists it under ``clients``."""
    url = f"https://{d['litellm_hostname']}"
    flags = {"id.token.claim": "true", "access.token.claim": "true", "userinfo.token.claim": "true"}
    return {
        "clientId": "litellm", "name": "LiteLLM Proxy Gateway", "description": "LiteLLM admin UI single sign-on",
        "enabled": True, "protocol": "openid-connect", "publicClient": False,
        "clientAuthenticatorType": "client-secret", "secret": "${LITELLM_CLIENT_SECRET}",
        "standardFlowEnabled": True, "directAccessGrantsEnabled": False, "implicitFlowEnabled": False,
        "serviceAccountsEnabled": False, "rootUrl": url, "baseUrl": "/ui",
        "redirectUris": [f"{url}/*"], "webOrigins": [url],
        "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": f"{url}/*"},
        "defaultClientScopes": ["openid", "profile", "email", "roles"],
        "protocolMappers": [
            {"name": "realm-roles", "protocol": "openid-connect", "protocolMapper": "oidc-usermodel-realm-role-mapper",
             "consentRequired": False, "config": {"claim.name": "roles", "jsonType.label": "String",
                                                  "multivalued": "true", **flags}},
            {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
             "consentRequired": False, "config": {"claim.name": "groups", "full.path": "false", **flags}},
        ],
    }


def integrations(d: Data) -> Derived:
    """The integration points outside ai-system: what this repository renders, and what the
    cluster's own realm and ACL templates include (``litellm_keycloak_clients`` /
    ``litellm_keycloak_placeholders`` / ``litellm_dragonfly_acl_users``: empty when off)."""
    oidc = bool(d["litellm_oidc_enabled"])
    replicas = bool(d["litellm_autoscaling_enabled"]) or int(d["litellm_effective_replicas"]) > 1
    return {
        "litellm_httproutes_enabled": bool(d["litellm_enabled"]),
        "litellm_keycloak_client_enabled": oidc,
        "litellm_keycloak_clients": [keycloak_client(d)] if oidc else [],
        "litellm_keycloak_placeholders": ({"LITELLM_CLIENT_SECRET": {"secret": {
            "name": "litellm-oidc-client", "key": "LITELLM_CLIENT_SECRET"}}} if oidc else {}),
        # LiteLLM 1.80.8 keeps the PKCE verifier in the pod's memory: with several pods the SSO
        # callback must reach the pod that started the login (>= 1.106 keeps it in Redis)
        "litellm_sso_session_affinity": oidc and replicas,
    }


def egress(d: Data) -> Derived:
    """FQDN egress (providers, Langfuse, alerting, external self-hosted) and the HTTPS-anywhere switch."""
    return {
        "litellm_egress_fqdns_enabled": bool(
            d["litellm_provider_fqdn_patterns"] or d["litellm_langfuse_enabled"] or d["litellm_alerting_fqdns"]),
        "litellm_egress_https_anywhere": bool(d["litellm_network_policies_enabled"]
                                              and d.get("litellm_egress_https_anywhere")),
        "litellm_egress_public_ports": sorted({443} | {x["port"] for x in d["litellm_self_hosted_external"]}),
    }
