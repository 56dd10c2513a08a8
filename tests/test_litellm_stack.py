"""The LiteLLM template set: what a cluster.yaml renders, asserted on parsed documents."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from combos import NO_PROVIDERS, PROVIDER_MODELS, PROVIDERS, VALKEY, stack_combos
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from stack_helpers import (
    SHARED_CHARTS,
    cluster_data,
    filled_sample,
    parse_texts,
    render_raw,
    render_stack,
    sample,
    schema,
)

from gitops_render.data.schema import apply_defaults

APP = "kubernetes/apps/ai-system/litellm/app"
HR = f"{APP}/helmrelease.yaml"
CM = f"{APP}/configmap.yaml"
SECRET = f"{APP}/secret.sops.yaml"
NETPOL = f"{APP}/networkpolicy.yaml"
ROUTES = "kubernetes/apps/network/envoy-gateway/httproutes/app/httproutes.yaml"
BACKUP_DIR = "kubernetes/apps/ai-system/litellm/backup"
BACKUP = f"{BACKUP_DIR}/backup.yaml"
KS = "kubernetes/apps/ai-system/litellm/ks.yaml"

COMBOS = stack_combos()


@pytest.fixture(scope="module")
def rendered_texts() -> dict[str, dict[str, str]]:
    """``combo -> {relpath: text}``: every combination rendered once (plaintext secrets, in memory)."""
    from stack_helpers import SCHEMA_FILE

    from gitops_render.data.schema import load_schema

    checked = load_schema(SCHEMA_FILE)
    with tempfile.TemporaryDirectory(prefix="litellm-stack-") as tmp:
        return {name: render_raw(cluster_data(over), Path(tmp) / name, schema_doc=checked, cache_dir=Path(tmp) / "jinja")
                for name, over in COMBOS.items()}


@pytest.fixture(scope="module")
def rendered(rendered_texts: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, list[Any]]]:
    """``combo -> {relpath: [parsed YAML documents]}``."""
    return {name: parse_texts(texts) for name, texts in rendered_texts.items()}


def _one(docs: dict[str, list[Any]], rel: str, kind: str | None = None) -> dict[str, Any]:
    found = [d for d in docs[rel] if kind is None or d["kind"] == kind]
    assert len(found) == 1, (rel, kind, len(found))
    return found[0]


def _config(docs: dict[str, list[Any]]) -> dict[str, Any]:
    import yaml
    return yaml.safe_load(_one(docs, CM, "ConfigMap")["data"]["config.yaml"])


def _values(docs: dict[str, list[Any]]) -> dict[str, Any]:
    return _one(docs, HR, "HelmRelease")["spec"]["values"]


def _container(docs: dict[str, list[Any]]) -> dict[str, Any]:
    return _values(docs)["controllers"]["litellm"]["containers"]["app"]


def _model_names(docs: dict[str, list[Any]]) -> set[str]:
    return {m["model_name"] for m in _config(docs)["model_list"]}


# --------------------------------------------------------------------------- schema and sample


def _commented_examples() -> dict[str, tuple[str, Any]]:
    """``{key: (inline text, parsed value)}`` of every ``# key: value`` example in the sample.

    A key without an inline value is followed by a commented multi-line example
    (``#   - name: ...``), parsed as the value.
    """
    import yaml
    from stack_helpers import SAMPLE_FILE

    lines = SAMPLE_FILE.read_text(encoding="utf-8").splitlines()
    props = schema()["properties"]
    out: dict[str, tuple[str, Any]] = {}
    for index, line in enumerate(lines):
        match = re.match(r"^# ([a-z0-9_]+):(.*)$", line)
        if match is None or match.group(1) not in props:
            continue
        inline = match.group(2).split(" #", 1)[0].strip()
        block = [line[2:]]
        for nxt in lines[index + 1:]:
            if not nxt.startswith("#   "):
                break
            block.append(nxt[2:])
        out[match.group(1)] = (inline, yaml.safe_load("\n".join(block))[match.group(1)])
    return out


def test_sample_lists_every_schema_variable_and_nothing_else() -> None:
    """Keys are what an operator must set; every other variable is a commented example of its default."""
    props = schema()["properties"]
    keys, examples = set(sample()), _commented_examples()
    assert keys | set(examples) == set(props)
    assert not keys & set(examples), keys & set(examples)
    for name in keys:  # a key never restates the schema default (init would freeze it into cluster.yaml)
        spec = props[name]
        if "x-generate" not in spec and "default" in spec:
            assert json.dumps(sample()[name]) != json.dumps(spec["default"]), f"{name} restates its default"
    for name, (inline, value) in examples.items():
        if "x-renovate" in props[name]:  # a version: shown nowhere but in the schema, where Renovate bumps it
            assert value is None, name
        elif inline:  # an inline example shows the default itself
            assert json.dumps(value) == json.dumps(props[name]["default"]), name
        else:  # a multi-line example is a valid value
            assert list(Draft202012Validator(props[name]).iter_errors(value)) == [], name


def test_sample_restates_no_default_so_schema_defaults_stay_the_single_source() -> None:
    """The data a render sees is the sample's keys plus the schema's defaults, nothing frozen."""
    data = cluster_data()
    for name, spec in schema()["properties"].items():
        if name not in sample() and "default" in spec:
            assert data[name] == spec["default"], name


def test_sample_is_valid_once_init_filled_the_generatable_secrets() -> None:
    validator = jsonschema.Draft202012Validator(schema())
    generatable = {k for k, v in schema()["properties"].items() if "x-generate" in v}
    raw_errors = list(validator.iter_errors(sample()))
    assert raw_errors, "the sample leaves generatable secrets empty for init"
    for err in raw_errors:
        assert set(err.absolute_path) <= generatable or err.validator in ("minLength",), err.message
    assert list(validator.iter_errors(filled_sample())) == []


def test_every_secret_field_is_sensitive_and_provider_keys_are_not_generated() -> None:
    props = schema()["properties"]
    for name, spec in props.items():
        if "x-generate" in spec:
            assert spec.get("x-sensitive") is True, name
            assert not name.startswith("azure_"), name
    assert props["litellm_master_key"]["x-generate"] == {"prefix": "sk-", "alphabet": "hex", "length": 48}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"litellm_master_key": "not-sk-0123456789abcdef0123456789abcdef"}, "litellm_master_key"),
    ({"litellm_master_key": "sk-short"}, "litellm_master_key"),
    ({"litellm_salt_key": "short"}, "litellm_salt_key"),
    ({**NO_PROVIDERS}, None),
    ({"litellm_oidc_enabled": True, "keycloak_enabled": False}, None),
    ({"litellm_backup_enabled": True, "rustfs_enabled": True, "litellm_s3_access_key": ""}, None),
    ({"cnpg_enabled": False}, None),
    ({"dragonfly_acl_enabled": False}, None),
    ({"litellm_presidio_enabled": True}, None),
    ({"unknown_key": 1}, None),
])
def test_schema_rejects(overrides: dict[str, Any], field: str | None) -> None:
    data = apply_defaults(filled_sample({**sample(), **overrides}), schema())  # as configure validates: defaults applied
    errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(data))
    assert errors
    if field:
        assert any(field in e.absolute_path for e in errors)


def test_disabled_stack_needs_no_secrets() -> None:
    data = {**{k: "" for k, v in schema()["properties"].items() if v.get("x-sensitive")},
            "cloudflare_domain": "example.com", "repository_name": "o/r", "litellm_enabled": False}
    assert list(jsonschema.Draft202012Validator(schema()).iter_errors(data)) == []


# --------------------------------------------------------------------------- models


def test_all_four_providers_give_26_models(rendered: Mapping[str, Any]) -> None:
    config = _config(rendered["sample"])
    assert len(config["model_list"]) == 26
    assert _model_names(rendered["sample"]) == set().union(*PROVIDER_MODELS.values())
    assert len({m["model_info"]["id"] for m in config["model_list"]}) == 26


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_only_the_configured_providers_models(rendered: Mapping[str, Any], provider: str) -> None:
    docs = rendered[f"only-{provider}"]
    assert _model_names(docs) == PROVIDER_MODELS[provider]
    config = _config(docs)
    used = {m["litellm_params"]["litellm_credential_name"] for m in config["model_list"]}
    assert used == {c["credential_name"] for c in config["credential_list"]}


def test_model_entries_are_loadable_by_litellm(rendered: Mapping[str, Any]) -> None:
    """The rules LiteLLM enforces or silently breaks on (see the proxy facts)."""
    for name in ("sample", "all-features"):
        config = _config(rendered[name])
        creds = {c["credential_name"] for c in config["credential_list"]}
        for c in config["credential_list"]:
            assert c["credential_values"]
        for m in config["model_list"]:
            params, info = m["litellm_params"], m["model_info"]
            assert m["model_name"] and params["model"]
            assert params["model"].split("/")[0] in {"azure", "azure_ai", "anthropic", "cohere", "hosted_vllm"}
            assert params.get("litellm_credential_name", next(iter(creds), None)) in creds or "api_base" in params
            for key in ("rpm", "tpm", "max_tokens"):
                assert key not in params or (isinstance(params[key], int) and not isinstance(params[key], bool))
            assert isinstance(info["access_groups"], list) and info["access_groups"]
        router = config["router_settings"]
        assert router["routing_strategy"] in {"simple-shuffle", "least-busy", "usage-based-routing-v2",
                                              "latency-based-routing", "cost-based-routing"}
        assert all(isinstance(v, int) for v in router["retry_policy"].values())
        assert isinstance(config["litellm_settings"]["request_timeout"], int)
        assert set(config["litellm_settings"]["cache_params"]) <= {"type", "namespace", "ttl", "mode",
                                                                   "supported_call_types"}
        for g in config.get("guardrails", []):
            assert g["guardrail_name"] and g["litellm_params"]["mode"] == "pre_call"
            for p in g["litellm_params"].get("patterns", []):
                assert p["action"] in {"BLOCK", "MASK"}


def test_health_check_exceptions_and_reasoning(rendered: Mapping[str, Any]) -> None:
    models = {m["model_name"]: m for m in _config(rendered["sample"])["model_list"]}
    disabled = {n for n, m in models.items() if m["model_info"].get("disable_background_health_check")}
    assert disabled == {"gpt-audio", "gpt-audio-mini", "gpt-realtime", "gpt-realtime-mini", "cohere-embed-v-4-0"}
    assert models["gpt-realtime"]["model_info"]["mode"] == "realtime"
    assert "mode" not in models["gpt-audio"]["model_info"] or models["gpt-audio"]["model_info"]["mode"] == "chat"
    assert models["cohere-embed-v-4-0"]["litellm_params"]["model"].startswith("azure_ai/")
    assert models["cohere-rerank-v3.5"]["litellm_params"]["model"].startswith("cohere/")
    assert models["gpt-5"]["litellm_params"]["model"] == "azure/gpt5_series/gpt-5"
    for name in ("o3", "o4-mini", "gpt-5-chat", "claude-opus-4-5", "claude-haiku-4-5"):
        assert models[name]["litellm_params"]["merge_reasoning_content_in_choices"] is True
        assert models[name]["model_info"]["supports_reasoning"] is True
    assert models["claude-sonnet-4-5"]["litellm_params"]["thinking"]["type"] == "enabled"
    assert (models["gpt-4.1"]["litellm_params"]["rpm"], models["gpt-4.1"]["litellm_params"]["tpm"]) == (250, 250000)
    assert models["gpt-4.1"]["litellm_params"]["max_tokens"] == 13107
    assert models["gpt-5-nano"]["litellm_params"]["tpm"] == 15000000


def test_self_hosted_models(rendered: Mapping[str, Any]) -> None:
    docs = rendered["self-hosted-only"]
    config = _config(docs)
    assert [m["litellm_params"]["model"] for m in config["model_list"]] == [
        "hosted_vllm/meta-llama/Llama-3.3-70B-Instruct", "hosted_vllm/Qwen/Qwen3-8B"]
    assert config["model_list"][0]["litellm_params"]["api_base"].startswith("http://llama-70b-predictor")
    assert config["credential_list"] == []


def test_optional_blocks_follow_flags(rendered: Mapping[str, Any]) -> None:
    plain, full = _config(rendered["sample"]), _config(rendered["all-features"])
    assert "guardrails" not in plain and "alerting" not in plain["general_settings"]
    assert "prompt_injection_params" not in plain["litellm_settings"]
    assert {g["guardrail_name"] for g in full["guardrails"]} == {"content-filter", "presidio-pii"}
    assert full["general_settings"]["alerting"] == ["slack"]
    assert "detect_prompt_injection" in full["litellm_settings"]["callbacks"]
    assert "otel" in full["litellm_settings"]["callbacks"]
    assert "langfuse" in full["litellm_settings"]["success_callback"]
    assert plain["litellm_settings"]["callbacks"] == ["prometheus"]
    assert plain["litellm_settings"]["cache_params"]["namespace"] == "litellm"
    assert plain["general_settings"]["background_health_checks"] is False


# --------------------------------------------------------------------------- deployment wiring


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_secret_env_vars_are_backed_by_secret_keys(rendered: Mapping[str, Any], combo: str) -> None:
    docs = rendered[combo]
    secret = next(d for d in docs[SECRET] if d["metadata"]["name"] == "litellm-secret")
    keys = set(secret["stringData"])
    refs = []
    for container in _values(docs)["controllers"]["litellm"]["containers"].values():
        for name, value in container.get("env", {}).items():
            if isinstance(value, dict):
                ref = value["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "litellm-secret", name
                refs.append(ref["key"])
    assert refs and set(refs) <= keys, set(refs) - keys
    config_text = _one(docs, CM)["data"]["config.yaml"]
    env = _container(docs)["env"]
    import re
    for var in set(re.findall(r"os\.environ/([A-Z0-9_]+)", config_text)):
        assert var in env, var


@pytest.mark.parametrize("combo", ["sample", "health-app", "all-features"])
def test_probe_service_and_container_ports_agree(rendered: Mapping[str, Any], combo: str) -> None:
    values = _values(rendered[combo])
    container = _container(rendered[combo])
    container_ports = {p["containerPort"] for p in container["ports"]}
    service_ports = {p["port"] for p in values["service"]["litellm"]["ports"].values()}
    assert {p["targetPort"] for p in values["service"]["litellm"]["ports"].values()} == service_ports
    probe_ports = {name: p["spec"]["httpGet"]["port"] for name, p in container["probes"].items()}
    assert set(probe_ports.values()) <= service_ports and set(probe_ports.values()) <= container_ports
    assert container_ports == service_ports
    # startup and readiness ask the proxy itself; only liveness may use the separate health app
    assert (probe_ports["startup"], probe_ports["readiness"]) == (4000, 4000)
    assert probe_ports["liveness"] == (4001 if combo != "sample" else 4000)
    probes = container["probes"]
    assert (probes["startup"]["spec"]["initialDelaySeconds"], probes["startup"]["spec"]["periodSeconds"],
            probes["startup"]["spec"]["failureThreshold"]) == (30, 5, 30)
    assert (probes["liveness"]["spec"]["initialDelaySeconds"], probes["liveness"]["spec"]["periodSeconds"]) == (60, 15)
    assert probes["readiness"]["spec"]["httpGet"]["path"] == "/health/readiness"
    assert _values(rendered[combo])["persistence"]["config-file"]["globalMounts"][0]["path"] == "/app/config.yaml"


def _pod_labels(docs: dict[str, list[Any]]) -> dict[str, str]:
    """Labels app-template 4.5.0 puts on the pods of controller ``litellm`` of release ``litellm``."""
    release = _one(docs, HR)["metadata"]["name"]
    values = _values(docs)
    (controller,) = values["controllers"]
    return {"app.kubernetes.io/name": release, "app.kubernetes.io/instance": release,
            "app.kubernetes.io/controller": controller,
            **values["controllers"][controller].get("pod", {}).get("labels", {})}


def _litellm_selectors(docs: dict[str, list[Any]]) -> list[dict[str, str]]:
    out = []
    for doc in docs.get(NETPOL, []):
        spec = doc["spec"]
        sel = spec.get("podSelector", spec.get("endpointSelector"))["matchLabels"]
        if "cnpg.io/cluster" not in sel and "cnpg.io/poolerName" not in sel:
            out.append(sel)
        for rule in spec.get("ingress", []):
            for peer in rule.get("from", []):
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                if labels.get("app.kubernetes.io/name") == "litellm":
                    out.append(labels)
    return out


@pytest.mark.parametrize("combo", ["sample", "all-features", "valkey-sentinel"])
def test_network_policy_selectors_match_the_pods(rendered: Mapping[str, Any], combo: str) -> None:
    docs = rendered[combo]
    labels = _pod_labels(docs)
    selectors = _litellm_selectors(docs)
    assert len(selectors) >= 3
    for sel in selectors:
        assert sel.items() <= labels.items(), sel
    db = _one(docs, f"{APP}/postgresql.yaml", "Cluster")["metadata"]["name"]
    for doc in docs[NETPOL]:
        sel = doc["spec"].get("podSelector", doc["spec"].get("endpointSelector"))["matchLabels"]
        if "cnpg.io/cluster" in sel:
            assert sel["cnpg.io/cluster"] == db
    if "pdb.yaml" in " ".join(docs):
        pdb = _one(docs, f"{APP}/pdb.yaml")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_network_policies_only_when_enabled(rendered: Mapping[str, Any]) -> None:
    docs = rendered["no-network-policies-no-monitoring"]
    assert NETPOL not in docs
    resources = _one(docs, f"{APP}/kustomization.yaml")["resources"]
    assert "./networkpolicy.yaml" not in resources and "./servicemonitor.yaml" not in resources
    kinds = {d["kind"] for d in rendered["sample"][NETPOL]}
    assert kinds == {"CiliumNetworkPolicy", "NetworkPolicy"}


def test_security_context_and_image(rendered: Mapping[str, Any]) -> None:
    root, nonroot = _values(rendered["sample"]), _values(rendered["non-root"])
    c = root["controllers"]["litellm"]["containers"]["app"]
    assert c["image"] == {"repository": "ghcr.io/berriai/litellm", "tag": "main-v1.80.8-stable.1"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["runAsNonRoot"] is False
    n = nonroot["controllers"]["litellm"]
    assert n["containers"]["app"]["image"]["repository"] == "ghcr.io/berriai/litellm-non_root"
    assert n["pod"]["securityContext"]["runAsUser"] == 65534 and n["pod"]["securityContext"]["runAsNonRoot"] is True
    assert c["resources"] == {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}


def test_autoscaling_and_disruption_budget(rendered: Mapping[str, Any]) -> None:
    assert f"{APP}/hpa.yaml" not in rendered["sample"] and f"{APP}/pdb.yaml" not in rendered["sample"]
    hpa_docs = rendered["autoscaling-pdb"]
    hpa = _one(hpa_docs, f"{APP}/hpa.yaml")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "litellm"
    assert _values(hpa_docs)["controllers"]["litellm"]["replicas"] is None
    assert f"{APP}/pdb.yaml" in hpa_docs and f"{APP}/pdb.yaml" in rendered["replicas-2-pdb"]
    assert _values(rendered["replicas-2-pdb"])["controllers"]["litellm"]["replicas"] == 2


def test_database(rendered: Mapping[str, Any]) -> None:
    plain = rendered["sample"][f"{APP}/postgresql.yaml"]
    cluster = next(d for d in plain if d["kind"] == "Cluster")
    assert "affinity" not in cluster["spec"] and "plugins" not in cluster["spec"]
    assert cluster["spec"]["postgresql"]["extensions"][0]["name"] == "pgvector"
    database = next(d for d in plain if d["kind"] == "Database")
    assert database["spec"]["extensions"] == [{"name": "vector", "ensure": "present"}]
    full = rendered["all-features"][f"{APP}/postgresql.yaml"]
    kinds = sorted(d["kind"] for d in full)
    assert kinds == ["Cluster", "Database", "Pooler"]  # the backup objects live in Kustomization litellm-backup
    fcluster = next(d for d in full if d["kind"] == "Cluster")
    assert fcluster["spec"]["affinity"]["enablePodAntiAffinity"] is True
    store = next(d for d in rendered["all-features"][BACKUP] if d["kind"] == "ObjectStore")
    assert store["spec"]["configuration"]["endpointURL"] == "http://rustfs.storage.svc.cluster.local:9000"
    secrets = {d["metadata"]["name"]: d for d in rendered["all-features"][SECRET]}
    url = secrets["litellm-secret"]["stringData"]["DATABASE_URL"]
    assert "litellm-postgresql-pooler-rw" in url and url.endswith("?pgbouncer=true")
    (backup_secret,) = rendered["all-features"][f"{BACKUP_DIR}/secret.sops.yaml"]
    assert set(backup_secret["stringData"]) == {"ACCESS_KEY_ID", "SECRET_ACCESS_KEY"}


# --------------------------------------------------------------------------- the Flux tree


def _paths_of_flux_kustomizations(docs: Mapping[str, list[Any]]) -> list[tuple[str, str]]:
    out = []
    for rel, items in docs.items():
        for d in items:
            if isinstance(d, dict) and d.get("kind") == "Kustomization" and d.get("apiVersion", "").startswith(
                    "kustomize.toolkit.fluxcd.io"):
                out.append((d["metadata"]["name"], d["spec"]["path"].removeprefix("./")))
    return out


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_tree_is_self_consistent(rendered: Mapping[str, Any], combo: str) -> None:
    docs = rendered[combo]
    files = set(docs)
    for rel, items in docs.items():
        if rel.endswith("kustomization.yaml"):
            base = Path(rel).parent
            for res in items[0].get("resources", []):
                target = (base / res).as_posix().replace("/./", "/")
                target = str(Path(target))
                assert target in files or f"{target}/kustomization.yaml" in files, (rel, res)
    flux = _paths_of_flux_kustomizations(docs)
    assert ("cluster-apps", "kubernetes/apps") in flux
    for name, path in flux:
        assert f"{path}/kustomization.yaml" in files, (name, path)
    rendered_ks = {f"flux-system/{n}" for n, _ in flux}
    import tomllib
    provided = set(tomllib.loads((Path(__file__).parents[1] / "gitops-render.toml").read_text())
                   ["gitops-render"]["cluster"]["provided_kustomizations"])
    for items in docs.values():
        for d in items:
            if isinstance(d, dict) and d.get("kind") == "Kustomization" and "dependsOn" in d.get("spec", {}):
                for dep in d["spec"]["dependsOn"]:
                    assert f"{dep['namespace']}/{dep['name']}" in rendered_ks | provided, dep


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_helm_values_match_app_template_schema(rendered: Mapping[str, Any], combo: str) -> None:
    prefix = "https://raw.githubusercontent.com/bjw-s-labs/helm-charts/common-4.5.0/charts/library/common/"

    def retrieve(uri: str) -> Resource:
        assert uri.startswith(prefix), uri
        return Resource.from_contents(json.loads((SHARED_CHARTS / "common" / uri[len(prefix):]).read_text()),
                                      default_specification=DRAFT7)

    top = json.loads((SHARED_CHARTS / "app-template" / "values.schema.json").read_text())
    errors = list(Draft7Validator(top, registry=Registry(retrieve=retrieve)).iter_errors(_values(rendered[combo])))
    assert errors == [], [e.message for e in errors[:3]]


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_sensitive_values_only_in_sops_files(rendered_texts: Mapping[str, Mapping[str, str]], combo: str) -> None:
    data = cluster_data(COMBOS[combo])
    props = schema()["properties"]
    secrets = [str(data[k]) for k, v in props.items() if v.get("x-sensitive") and data.get(k)]
    secrets += [m["api_key"] for m in data["litellm_self_hosted_models"] if m.get("api_key")]
    assert secrets
    for rel, text in rendered_texts[combo].items():
        if ".sops." in rel:
            continue
        for value in secrets:
            assert value not in text, (rel, "leaks a sensitive value")


def test_integration_points(rendered: Mapping[str, Any]) -> None:
    docs = rendered["oidc-keycloak"]
    routes = docs[ROUTES]
    assert {r["spec"]["parentRefs"][0]["name"] for r in routes} == {"envoy-internal", "envoy-external"}
    for r in routes:
        backend = r["spec"]["rules"][0]["backendRefs"][0]
        assert (backend["name"], backend["namespace"], backend["port"]) == ("litellm", "ai-system", 4000)
    grant = _one(docs, f"{APP}/referencegrant.yaml")
    assert grant["spec"]["from"][0]["namespace"] == "network" and grant["spec"]["to"][0]["name"] == "litellm"
    env = _container(docs)["env"]
    assert env["GENERIC_CLIENT_ID"] == "litellm"
    assert env["GENERIC_AUTHORIZATION_ENDPOINT"].startswith("https://auth.example.com/")
    assert env["GENERIC_TOKEN_ENDPOINT"].startswith("http://keycloak-service.identity.svc.cluster.local:8080/")
    ks = _flux_ks(rendered["all-features"], "litellm")
    deps = {(d["namespace"], d["name"]) for d in ks["spec"]["dependsOn"]}
    assert {("kube-system", "coredns"), ("cnpg-system", "cloudnative-pg"), ("cache", "dragonfly"),
            ("identity", "keycloak")} <= deps
    assert ks["spec"]["healthChecks"][0]["kind"] == "Deployment"


def test_disabled_renders_nothing_of_the_stack() -> None:
    docs = render_stack({"litellm_enabled": False})
    assert set(docs) == {".sops.yaml", "kubernetes/flux/cluster/ks.yaml", "kubernetes/apps/kustomization.yaml"}
    assert docs["kubernetes/apps/kustomization.yaml"][0]["resources"] == []
    sops = docs[".sops.yaml"][0]
    rule = sops["creation_rules"][-1]
    assert rule["encrypted_regex"] == "^(data|stringData)$" and rule["mac_only_encrypted"] is True
    assert rule["age"].startswith("age1")


def test_shipped_templates_render_identically_under_makejinja(tmp_path) -> None:
    """The template set stays a drop-in for cluster-template repos still on makejinja 2.8.1."""
    from stack_helpers import cluster_data, render_raw, render_raw_makejinja

    data = cluster_data({})
    ours = render_raw(data, tmp_path / "ours")
    theirs = render_raw_makejinja(data, tmp_path / "theirs")
    assert ours == theirs


# --------------------------------------------------------------------------- providers declared once


def _fqdn_rule(docs: dict[str, list[Any]]) -> list[dict[str, Any]]:
    policy = next(d for d in docs[NETPOL] if d["metadata"]["name"] == "litellm-azure-egress")
    return [rule for rule in policy["spec"]["egress"] if "toFQDNs" in rule]


def test_each_provider_reaches_only_its_own_endpoints_and_its_models_use_its_credential(rendered) -> None:
    """One catalogue drives the model list, the credentials, the Secret, the env and the FQDN egress."""
    sample_docs = rendered["sample"]
    config, env = _config(sample_docs), _container(sample_docs)["env"]
    secret = next(d for d in sample_docs[SECRET] if d["metadata"]["name"] == "litellm-secret")["stringData"]
    credentials = {c["credential_name"]: c for c in config["credential_list"]}
    for model in config["model_list"]:
        values = credentials[model["litellm_params"]["litellm_credential_name"]]["credential_values"]
        for ref in values.values():  # every os.environ/NAME a credential reads is set on the container
            name = ref.removeprefix("os.environ/")
            assert name in env, (model["model_name"], name)
            if isinstance(env[name], dict):
                assert env[name]["valueFrom"]["secretKeyRef"]["key"] in secret, name
    patterns = {p["matchPattern"] for p in _fqdn_rule(sample_docs)[0]["toFQDNs"] if "matchPattern" in p}
    assert "*.openai.azure.com" in patterns and "*.services.ai.azure.com" in patterns
    only_self_hosted = _fqdn_rule(rendered["self-hosted-only"])[0]["toFQDNs"]
    assert only_self_hosted == [{"matchName": "vllm.example.net"}], "no Azure endpoint without an Azure provider"
    assert config["credential_list"] and _config(rendered["self-hosted-only"])["credential_list"] == []


# --------------------------------------------------------------------------- every option in a real cluster (issue 13)

INTEGRATION_DOC = Path(__file__).parents[1] / "docs" / "integration.md"
ROUTE_NAMES = ("litellm-internal", "litellm-external")


def _flux_ks(docs: Mapping[str, list[Any]], name: str) -> dict[str, Any]:
    found = [d for d in _all_docs(docs) if d["kind"] == "Kustomization"
             and d["apiVersion"].startswith("kustomize.toolkit.fluxcd.io") and d["metadata"]["name"] == name]
    assert len(found) == 1, (name, len(found))
    return found[0]


def _all_docs(docs: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [d for items in docs.values() for d in items if isinstance(d, dict) and "kind" in d]


def _doc_snippet(marker: str) -> str:
    """The fenced YAML snippet of docs/integration.md that mentions ``marker``."""
    blocks = re.findall(r"```yaml\n(.*?)```", INTEGRATION_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    (block,) = [b for b in blocks if marker in b]
    return block


def _render_cluster_template(source: str, overrides: Mapping[str, Any], **extra: Any) -> Any:
    """``source`` rendered as the cluster's own template would be: pack delimiters, plugin data and filters."""
    import jinja2
    import yaml
    from test_plugin_derivations import plugin

    env = jinja2.Environment(block_start_string="#%", block_end_string="%#", variable_start_string="#{",
                             variable_end_string="}#", comment_start_string="#|", comment_end_string="#|",
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    instance = plugin.Plugin(cluster_data(overrides))
    env.filters.update({f.__name__: f for f in instance.filters()})
    return yaml.safe_load(env.from_string(source).render({**instance.data(), **extra}))


def _env_names(docs: dict[str, list[Any]]) -> set[str]:
    return set(_container(docs)["env"])


def test_oidc_login_sends_pkce_and_several_pods_keep_the_sso_callback_on_one(rendered) -> None:
    """1: the client enforces PKCE S256; with 2+ pods (HPA here) /sso is pinned by a session cookie."""
    for combo in ("oidc-keycloak", "all-features"):
        assert _container(rendered[combo])["env"]["GENERIC_CLIENT_USE_PKCE"] == "true"
    assert "GENERIC_CLIENT_USE_PKCE" not in _env_names(rendered["sample"])
    single = list(rendered["oidc-keycloak"][ROUTES])
    assert all("sessionPersistence" not in rule for r in single for rule in r["spec"]["rules"])
    for combo, over in (("all-features", None), ("replicas-2-oidc", {**COMBOS["oidc-keycloak"], "litellm_replicas": 2})):
        docs = rendered[combo] if over is None else render_stack(over)
        routes = {r["metadata"]["name"]: r for r in docs[ROUTES]}
        assert set(routes) == set(ROUTE_NAMES)
        for route in routes.values():
            sso, api = route["spec"]["rules"]
            assert sso["matches"] == [{"path": {"type": "PathPrefix", "value": "/sso"}}]
            assert sso["sessionPersistence"]["type"] == "Cookie" and sso["sessionPersistence"]["sessionName"]
            assert sso["backendRefs"] == api["backendRefs"]
            assert "sessionPersistence" not in api, "API traffic stays load-balanced"


def test_keycloak_client_goes_into_the_clusters_own_realm_never_a_second_import(rendered) -> None:
    """2: no KeycloakRealmImport is rendered; the cluster's realm template includes the client."""
    for combo, docs in rendered.items():
        assert not [d for d in _all_docs(docs) if d["kind"] == "KeycloakRealmImport"], combo
    snippet = _doc_snippet("litellm_keycloak_clients")
    realm = _render_cluster_template(snippet, COMBOS["oidc-keycloak"])
    clients = {c["clientId"]: c for c in realm["spec"]["realm"]["clients"]}
    assert set(clients) == {"grafana", "litellm"}, "the cluster's own clients stay"
    client = clients["litellm"]
    assert client["attributes"]["pkce.code.challenge.method"] == "S256" and client["publicClient"] is False
    assert client["redirectUris"] == ["https://litellm.example.com/*"]
    ref = realm["spec"]["placeholders"]["LITELLM_CLIENT_SECRET"]["secret"]
    assert client["secret"] == "${LITELLM_CLIENT_SECRET}" and "GRAFANA_CLIENT_SECRET" in realm["spec"]["placeholders"]
    (secret,) = rendered["oidc-keycloak"]["kubernetes/apps/identity/keycloak/litellm-client/app/secret.sops.yaml"]
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (ref["name"], "identity")
    assert ref["key"] in secret["stringData"]
    off = _render_cluster_template(snippet, {})
    assert [c["clientId"] for c in off["spec"]["realm"]["clients"]] == ["grafana"]
    assert list(off["spec"]["placeholders"]) == ["GRAFANA_CLIENT_SECRET"]


def test_dragonfly_acl_user_goes_into_the_clusters_acl_and_nothing_of_cache_is_rendered(rendered) -> None:
    """6: the pack renders nothing in namespace cache; the cluster's one ACL file includes the user."""
    for combo, docs in rendered.items():
        assert not [d for d in _all_docs(docs) if d.get("metadata", {}).get("namespace") == "cache"], combo
        assert not any(rel.startswith("kubernetes/apps/cache/") for rel in docs), combo
    snippet = _doc_snippet("litellm_dragonfly_acl_users")
    data = cluster_data({})
    acl = _render_cluster_template(snippet, {}, dragonfly_default_password="default-pw")["stringData"]["dragonfly.acl"]
    assert acl.split("\n") == ["USER default ON >default-pw ~* +@ALL",
                               f"USER litellm ON >{data['dragonfly_litellm_password']} ~litellm:* +@ALL -@ADMIN"]
    secret = next(d for d in rendered["sample"][SECRET] if d["metadata"]["name"] == "litellm-secret")
    assert secret["stringData"]["REDIS_URL"].startswith(f"redis://litellm:{data['dragonfly_litellm_password']}@")
    for off in ({"litellm_enabled": False}, VALKEY):  # LiteLLM off (or on Valkey): only its own line goes
        acl = _render_cluster_template(snippet, off, dragonfly_default_password="default-pw")["stringData"]
        assert acl["dragonfly.acl"] == "USER default ON >default-pw ~* +@ALL"


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_redis_environment_has_one_connection_form_that_every_litellm_version_reads(rendered, combo: str) -> None:
    """3: REDIS_URL alone, or Sentinel with its password and never REDIS_HOST/REDIS_PORT."""
    docs = rendered[combo]
    env = _container(docs)["env"]
    redis = {name for name in env if name.startswith("REDIS_")}
    secret = next(d for d in docs[SECRET] if d["metadata"]["name"] == "litellm-secret")["stringData"]
    if combo == "valkey-sentinel":
        assert redis == {"REDIS_SENTINEL_NODES", "REDIS_SERVICE_NAME", "REDIS_SENTINEL_PASSWORD", "REDIS_PASSWORD"}
        assert json.loads(env["REDIS_SENTINEL_NODES"]) == [["valkey.cache.svc.cluster.local", 26379]]
        for name in ("REDIS_SENTINEL_PASSWORD", "REDIS_PASSWORD"):
            assert secret[env[name]["valueFrom"]["secretKeyRef"]["key"]] == "fake-valkey-password"
    else:
        assert redis == {"REDIS_URL"}
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_URL" and "REDIS_URL" in secret


@pytest.mark.parametrize(("tag", "sentinel_auth", "sends_sentinel_password"), [
    ("main-v1.80.8-stable.1", False, True),  # 1.80.x: REDIS_SENTINEL_PASSWORD is the master's password
    ("main-v1.108.7-stable", False, False),  # 1.106+: it would be sent to the Sentinels, which take none
    ("main-v1.108.7-stable", True, True),  # 1.106+ and Sentinels that require the password
])
def test_sentinel_password_means_what_the_deployed_litellm_version_reads(
        tag: str, sentinel_auth: bool, sends_sentinel_password: bool) -> None:
    """3: the same Sentinel setup needs another environment after an upgrade; REDIS_PASSWORD always."""
    docs = render_stack({**VALKEY, "litellm_valkey_sentinel_enabled": True, "litellm_image_tag": tag,
                         "litellm_valkey_sentinel_auth": sentinel_auth})
    env = _container(docs)["env"]
    assert ("REDIS_SENTINEL_PASSWORD" in env) is sends_sentinel_password
    assert "REDIS_PASSWORD" in env and "REDIS_HOST" not in env and "REDIS_PORT" not in env


def test_sentinels_that_require_a_password_need_litellm_1_106_or_later() -> None:
    from gitops_render.core.errors import SchemaError

    with pytest.raises(SchemaError) as caught:
        render_stack({**VALKEY, "litellm_valkey_sentinel_enabled": True, "litellm_valkey_sentinel_auth": True})
    assert "litellm_valkey_sentinel_auth needs LiteLLM 1.106 or later" in str(caught.value)


def test_self_hosted_models_are_reached_on_their_pod_ports_and_external_ports() -> None:
    """4: in-cluster rules open pod ports (default 8080, or pod_port); external hosts their own port."""
    models = [
        {"name": "llama", "model": "meta/llama", "api_base": "http://llama-predictor.llm-platform.svc.cluster.local"},
        {"name": "qwen", "model": "Qwen/Qwen3-8B", "api_base": "http://qwen.serverless.svc:80/v1", "pod_port": 8012},
        {"name": "ext", "model": "m/ext", "api_base": "https://vllm.example.net:8443/v1"},
    ]
    docs = render_stack({**NO_PROVIDERS, "litellm_self_hosted_models": models})
    policy = next(d for d in docs[NETPOL] if d["metadata"]["name"] == "litellm")
    rules = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: [p["port"] for p in rule["ports"]]
             for rule in policy["spec"]["egress"] for peer in rule["to"]
             if "namespaceSelector" in peer and "podSelector" not in peer}
    assert rules == {"llm-platform": [8080], "serverless": [8012]}
    assert _fqdn_rule(docs) == [{"toFQDNs": [{"matchName": "vllm.example.net"}],
                                 "toPorts": [{"ports": [{"port": "8443", "protocol": "TCP"}]}]}]


@pytest.mark.parametrize(("over", "namespace"), [
    ({"litellm_valkey_host": "valkey.db"}, "db"),
    ({"litellm_valkey_host": "valkey-primary.data.svc.cluster.local"}, "data"),
    ({"litellm_valkey_host": "valkey.example.net", "litellm_valkey_namespace": "kv"}, "kv"),
])
def test_valkey_outside_cache_uses_its_namespace_for_dependency_and_network_rule(over, namespace: str) -> None:
    """5: dependsOn and NetworkPolicy agree on the Valkey namespace, never a silent 'cache'."""
    docs = render_stack({**VALKEY, **over})
    deps = {(d["namespace"], d["name"]) for d in _flux_ks(docs, "litellm")["spec"]["dependsOn"]}
    assert (namespace, "valkey") in deps and ("cache", "valkey") not in deps
    policy = next(d for d in docs[NETPOL] if d["metadata"]["name"] == "litellm")
    cache_rule = next(r for r in policy["spec"]["egress"] for peer in r["to"]
                      if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "valkey")
    assert cache_rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace


def _schema_error(overrides: Mapping[str, Any]) -> str:
    from stack_helpers import SCHEMA_FILE

    from gitops_render.core.errors import SchemaError
    from gitops_render.core.load import LoadedData, Locations
    from gitops_render.data.schema import load_schema, validate_data
    data = {**filled_sample(), **overrides}
    with pytest.raises(SchemaError) as caught:
        validate_data(LoadedData(data, Locations(), (Path("cluster.yaml"),)), load_schema(SCHEMA_FILE))
    return str(caught.value)


def test_a_valkey_host_whose_namespace_is_unknown_is_refused_naming_the_fix() -> None:
    message = _schema_error({**VALKEY, "litellm_valkey_host": "valkey.example.net"})
    assert "litellm_valkey_host" in message and "litellm_valkey_namespace" in message


def test_backups_are_a_kustomization_of_their_own_that_waits_for_the_barman_cloud_plugin(rendered) -> None:
    """7: without the plugin's CRDs only litellm-backup waits; litellm (HelmRelease included) applies."""
    docs = rendered["all-features"]
    app, backup = _flux_ks(docs, "litellm"), _flux_ks(docs, "litellm-backup")
    plugin_groups = {"barmancloud.cnpg.io"}
    app_docs = [d for rel, items in docs.items() if rel.startswith(f"{app['spec']['path'][2:]}/") for d in items]
    assert not [d for d in app_docs if d["apiVersion"].split("/")[0] in plugin_groups or d["kind"] == "ScheduledBackup"]
    assert "HelmRelease" in {d["kind"] for d in app_docs}
    deps = {(d["namespace"], d["name"]) for d in backup["spec"]["dependsOn"]}
    assert {("cnpg-system", "barman-cloud"), ("cert-manager", "cert-manager"), ("flux-system", "litellm")} <= deps
    assert not {("cnpg-system", "barman-cloud"), ("cert-manager", "cert-manager")} & {
        (d["namespace"], d["name"]) for d in app["spec"]["dependsOn"]}
    backup_kinds = {d["kind"] for rel, items in docs.items() if rel.startswith(f"{BACKUP_DIR}/") for d in items}
    assert {"ObjectStore", "ScheduledBackup", "Secret"} <= backup_kinds
    assert BACKUP not in rendered["sample"]
    with pytest.raises(AssertionError):
        _flux_ks(rendered["sample"], "litellm-backup")


def test_the_separate_health_app_is_refused_on_images_that_no_longer_ship_it() -> None:
    """8 (the module): the health app exists in 1.80.x, not in 1.106.2 / 1.108.7."""
    for tag in ("main-v1.108.7-stable", "v1.106.2", "main-v2.0.0"):
        message = _schema_error({"litellm_separate_health_app": True, "litellm_image_tag": tag})
        assert "litellm_image_tag" in message and "health app" in message, tag
    render_stack({"litellm_separate_health_app": True, "litellm_image_tag": "main-v1.80.8-stable.1"})
    render_stack({"litellm_image_tag": "main-v1.108.7-stable"})  # without the health app any tag is fine


@pytest.mark.parametrize("combo", ["sample", "all-features", "self-hosted-only"])
def test_internet_egress_is_fqdn_only_unless_https_anywhere_is_switched_on(rendered, combo: str) -> None:
    """9: Cilium unions policies, so an ipBlock rule would void the FQDN allow-list."""
    def ip_rules(docs: dict[str, list[Any]]) -> list[dict[str, Any]]:
        policy = next(d for d in docs[NETPOL] if d["metadata"]["name"] == "litellm")
        return [r for r in policy["spec"]["egress"] for peer in r["to"] if "ipBlock" in peer]

    assert ip_rules(rendered[combo]) == []
    assert _fqdn_rule(rendered[combo])
    anywhere = render_stack({**COMBOS[combo], "litellm_egress_https_anywhere": True})
    (rule,) = ip_rules(anywhere)
    ports = {p["port"] for p in rule["ports"]}
    assert 443 in ports and (80 not in ports or combo != "sample")
    assert _fqdn_rule(anywhere) == _fqdn_rule(rendered[combo])


def _pod_annotations(docs: dict[str, list[Any]]) -> dict[str, str]:
    return _values(docs)["controllers"]["litellm"]["pod"]["annotations"]


def test_a_changed_configmap_or_secret_rolls_the_pods_without_reloader(rendered) -> None:
    """10: checksums on the pod template; the Secret's is keyed (no verifier of its plaintext)."""
    import hashlib

    base = _pod_annotations(rendered["sample"])
    assert set(base) == {"checksum/config", "checksum/secret"}
    assert "annotations" not in _values(rendered["sample"])["controllers"]["litellm"], "no Reloader annotation"
    config_changed = _pod_annotations(render_stack({"litellm_routing_strategy": "least-busy"}))
    assert config_changed["checksum/config"] != base["checksum/config"]
    assert config_changed["checksum/secret"] == base["checksum/secret"]
    secret_changed = _pod_annotations(render_stack({"litellm_db_password": "another-db-password-0000"}))
    assert secret_changed["checksum/secret"] != base["checksum/secret"]
    assert secret_changed["checksum/config"] == base["checksum/config"]
    import tempfile

    from stack_helpers import render_raw
    with tempfile.TemporaryDirectory() as tmp:
        secret_text = render_raw(cluster_data({}), Path(tmp) / "out")[SECRET]
    assert base["checksum/secret"] != hashlib.sha256(secret_text.encode()).hexdigest(), "never a plain hash"
    assert _pod_annotations(render_stack({}))["checksum/secret"] == base["checksum/secret"], "stable across renders"


@pytest.mark.parametrize("combo", ["sample", "all-features"])
def test_flux_substitution_never_runs_over_a_decrypted_secret(rendered, combo: str) -> None:
    """11: a password with ${ or $$ reaches the pod unaltered."""
    docs = rendered[combo]
    assert "postBuild" not in _flux_ks(docs, "litellm")["spec"]
    secrets = [d for d in _all_docs(docs) if d["kind"] == "Secret"]
    assert len(secrets) >= 2
    for secret in secrets:
        assert secret["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled"
    for rel, items in docs.items():
        if rel.startswith(f"{APP}/") and not rel.endswith("grafana-dashboard.yaml"):
            assert "${" not in json.dumps(items), rel


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_no_dead_settings(rendered, combo: str) -> None:
    """12: no key that no LiteLLM from 1.80.8 to 1.108.7 reads, no callback listed twice."""
    settings = _config(rendered[combo])["litellm_settings"]
    assert "telemetry" not in settings
    assert "LITELLM_CALLBACKS" not in _env_names(rendered[combo])
    for key in ("success_callback", "failure_callback"):
        assert not set(settings.get(key, [])) & set(settings["callbacks"]), key
    assert ("success_callback" in settings) is ("langfuse" in settings.get("success_callback", []))
