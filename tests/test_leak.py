"""Leak guard, masking and generated values."""

from __future__ import annotations

import base64
import re
from pathlib import PurePosixPath

import pytest
import yaml

from gitops_render.core.errors import ConfigError, LeakError
from gitops_render.core.mask import mask, mask_yaml_values
from gitops_render.data.generate import generate_missing, generate_missing_report
from gitops_render.data.schema import sensitive_values
from gitops_render.secrets.leak import Leak, check_leaks, find_leaks

P = PurePosixPath

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "token": {"type": "string", "x-sensitive": True},
        "user": {"type": "object", "properties": {"name": {"type": "string"},
                                                  "password": {"$ref": "#/$defs/token"}}},
    },
    "properties": {
        "cloudflare": {"type": "object", "properties": {
            "domain": {"type": "string"},
            "token": {"$ref": "#/$defs/token"},
            "enabled": {"type": "boolean", "x-sensitive": True},
        }},
        "users": {"type": "array", "items": {"$ref": "#/$defs/user"}},
        "tls": {"type": "object", "x-sensitive": True},
        "short": {"type": "string", "x-sensitive": True},
        "api_keys": {"type": "object", "additionalProperties": {"type": "string", "x-sensitive": True}},
    },
}
DATA = {
    "cloudflare": {"domain": "example.com", "token": "cf-Tok3n-abcdefgh", "enabled": True},
    "users": [{"name": "admin", "password": "Adm1n-Passw0rd!"}],
    "tls": {"crt": "-----BEGIN CERT-----MIIB", "key": {"pem": "-----BEGIN KEY-----MIIE"}},
    "short": "true",
    "api_keys": {"openai": "sk-0123456789abcdef"},
}


def test_sensitive_values_walks_refs_arrays_objects() -> None:
    found = sensitive_values(DATA, SCHEMA)
    assert found == {
        "cloudflare.token": "cf-Tok3n-abcdefgh",
        "users[0].password": "Adm1n-Passw0rd!",
        "tls.crt": "-----BEGIN CERT-----MIIB",
        "tls.key.pem": "-----BEGIN KEY-----MIIE",
        "short": "true",
        "api_keys.openai": "sk-0123456789abcdef",
    }  # booleans are never values to look for; non-sensitive fields are absent


def test_leak_in_configmap_plain_and_base64() -> None:
    sensitive = sensitive_values(DATA, SCHEMA)
    token = sensitive["cloudflare.token"]
    files = {
        P("kubernetes/apps/a/configmap.yaml"): f"data:\n  TOKEN: {token}\n".encode(),
        P("kubernetes/apps/b/configmap.yaml"):
            f"binaryData:\n  auth: {base64.b64encode(('admin:' + DATA['users'][0]['password']).encode()).decode()}\n".encode(),
        P("kubernetes/apps/c/configmap.yaml"): f"data:\n  x: {base64.b64encode(token.encode()).decode()}\n".encode(),
        P("kubernetes/apps/a/secret.sops.yaml"): f"stringData:\n  TOKEN: {token}\n".encode(),  # allowed
        P("kubernetes/apps/d/ok.yaml"): b"enabled: true\nshort: true\n",  # short values ignored
    }
    leaks = find_leaks(files, sensitive)
    assert leaks == [
        Leak(P("kubernetes/apps/a/configmap.yaml"), "cloudflare.token", "plain"),
        Leak(P("kubernetes/apps/b/configmap.yaml"), "users[0].password", "base64"),
        Leak(P("kubernetes/apps/c/configmap.yaml"), "cloudflare.token", "base64"),
    ]
    with pytest.raises(LeakError) as err:
        check_leaks(files, sensitive)
    message = str(err.value)
    assert "kubernetes/apps/a/configmap.yaml" in message and "cloudflare.token" in message
    for value in sensitive.values():
        if len(value) >= 8:
            assert value not in message
            assert base64.b64encode(value.encode()).decode() not in message
    assert err.value.exit_code == 1


def test_short_values_and_no_leaks() -> None:
    files = {P("a.yaml"): b"password: abc\nflag: true\n"}
    assert find_leaks(files, {"x.pw": "abc", "x.flag": "true", "x.long": "not-present-anywhere"}) == []
    check_leaks(files, {"x.pw": "abc"})


def test_mask_hides_values_and_base64_and_short_values_as_tokens() -> None:
    text = "error: token cf-Tok3n-abcdefgh rejected (Y2YtVG9rM24tYWJjZGVmZ2g=) for true, not truest; x=1"
    out = mask(text, ["cf-Tok3n-abcdefgh", "true", "x"])
    assert "cf-Tok3n-abcdefgh" not in out and "Y2YtVG9rM24tYWJjZGVmZ2g" not in out
    # a short sensitive value is hidden wherever it stands alone, whatever its length, but not inside words
    assert out == "error: token *** rejected (***) for ***, not truest; ***=1"


def test_mask_yaml_values_keeps_keys_and_marks_changes() -> None:
    old = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  a: one-secret\n  b: two-secret\n"
    new = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  a: one-secret\n  b: changed-secret\n  c: added\n"
    masked = mask_yaml_values(new, other=old)
    for value in ("one-secret", "two-secret", "changed-secret", "added"):
        assert value not in masked
    doc = yaml.safe_load(masked)
    assert doc["metadata"] == {"name": "s"}
    assert doc["stringData"] == {"a": "***", "b": "*** (changed)", "c": "*** (changed)"}
    assert yaml.safe_load(mask_yaml_values(new))["stringData"] == {"a": "***", "b": "***", "c": "***"}
    assert mask_yaml_values("a: [unclosed-secret") .startswith("***")
    assert "v1" not in mask_yaml_values("x: v1\n", keys=None)


# --------------------------------------------------------------------------- generate

GEN_SCHEMA = {
    "type": "object",
    "$defs": {"tok": {"type": "string", "x-sensitive": True,
                      "x-generate": {"alphabet": "base64url", "length": 43}}},
    "properties": {
        "litellm": {"type": "object", "properties": {
            "master_key": {"type": "string", "x-sensitive": True,
                           "x-generate": {"prefix": "sk-", "alphabet": "hex", "length": 48}},
            "salt": {"$ref": "#/$defs/tok"},
            "keep": {"$ref": "#/$defs/tok"},
            "missing": {"type": "string", "x-sensitive": True, "x-generate": True},
        }},
        "absent_section": {"type": "object", "properties": {"k": {"$ref": "#/$defs/tok"}}},
    },
}
SAMPLE = """\
# cluster.yaml -- operator data
litellm:
  # master key of the proxy
  master_key: ""  # leave empty: generated by init
  keep: "already-set-by-the-operator"
  salt:
other: [1, 2]   # flow style stays
"""


def test_generate_fills_empty_keeps_comments_never_overwrites() -> None:
    result = generate_missing_report(SAMPLE, GEN_SCHEMA)
    assert result.generated == ("litellm.master_key", "litellm.salt", "litellm.missing")
    text = result.text
    for comment in ("# cluster.yaml -- operator data", "# master key of the proxy", "# leave empty: generated by init",
                    "# flow style stays"):
        assert comment in text
    data = yaml.safe_load(text)
    assert data["litellm"]["keep"] == "already-set-by-the-operator"
    assert '"already-set-by-the-operator"' in text  # quoting preserved
    assert re.fullmatch(r"sk-[0-9a-f]{48}", data["litellm"]["master_key"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", data["litellm"]["salt"])
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["litellm"]["missing"])
    assert "absent_section" not in data
    assert data["other"] == [1, 2]
    # second run: nothing to fill, text returned byte for byte
    assert generate_missing(text, GEN_SCHEMA) == text
    # values differ between runs (fresh randomness)
    assert yaml.safe_load(generate_missing(SAMPLE, GEN_SCHEMA))["litellm"]["salt"] != data["litellm"]["salt"]


def test_generate_rejects_weak_specs() -> None:
    weak = {"type": "object", "properties": {"k": {"type": "string", "x-generate": {"alphabet": "hex", "length": 16}}}}
    with pytest.raises(ConfigError, match="bits"):
        generate_missing("k:\n", weak)
    bad = {"type": "object", "properties": {"k": {"type": "string", "x-generate": {"alphabet": "emoji"}}}}
    with pytest.raises(ConfigError, match="alphabet"):
        generate_missing("k:\n", bad)


def test_mask_secret_pair_for_diffs() -> None:
    from gitops_render.core.mask import mask_secret_pair
    old = "kind: Secret\nstringData:\n  a: one-secret\n  b: two-secret\n"
    new = "kind: Secret\nstringData:\n  a: one-secret\n  b: three-secret\n"
    a, b = mask_secret_pair(old, new)
    assert a is not None and b is not None
    assert yaml.safe_load(a)["stringData"] == {"a": "***", "b": "***"}
    assert yaml.safe_load(b)["stringData"] == {"a": "***", "b": "*** (changed)"}
    assert a.splitlines()[2] == b.splitlines()[2]  # unchanged key: identical diff line
    assert "secret" not in (a + b).replace("Secret", "")
    assert mask_secret_pair(None, new)[0] is None


def test_finding_12_23_thousands_of_sensitive_values_are_all_found_in_one_pass() -> None:
    """8 000 self-hosted models with an api_key each: the guard scans each output once (it used to
    test every value against every output, which took most of a minute) and still finds exactly the
    leaked values, plain and base64, and nothing else."""
    sensitive = {f"litellm_self_hosted_models.{i}.api_key": f"sk-hosted-{i:05d}-{'x' * 12}" for i in range(3000)}
    leaked_plain, leaked_b64 = {7, 1500, 2999}, {42, 2048}
    lines = [f"  - model: m{i}\n    api_key: os.environ/KEY_{i}\n" for i in range(3000)]
    lines += [f"    key: {sensitive[f'litellm_self_hosted_models.{i}.api_key']}\n" for i in sorted(leaked_plain)]
    lines += [f"    b64: {base64.b64encode(('user:' + sensitive[name]).encode()).decode()}\n"
              for name in (f"litellm_self_hosted_models.{i}.api_key" for i in sorted(leaked_b64))]
    files = {PurePosixPath("kubernetes/apps/ai-system/litellm/app/configmap.yaml"): "".join(lines).encode(),
             PurePosixPath("kubernetes/apps/ai-system/litellm/app/secret.sops.yaml"): "".join(lines).encode()}
    found = {(leak.field, leak.form) for leak in find_leaks(files, sensitive)}
    assert found == ({(f"litellm_self_hosted_models.{i}.api_key", "plain") for i in leaked_plain}
                     | {(f"litellm_self_hosted_models.{i}.api_key", "base64") for i in leaked_b64})
