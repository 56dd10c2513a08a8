"""Issue 12 attacks on secrets, masking and inputs: each reproduction must fail to break anything.

Stories: an operator's secret is 6 characters, holds quotes and tabs, is escaped by ``tojson``
or URL-encoded into a DATABASE_URL; a schema marks a whole object or an integer sensitive; a
creation rule forgets ``stringData``; a "sops" echoes its input with a fake ``sops:`` block;
a template writes the age identity into a ConfigMap; cluster.yaml holds an alias bomb or a
5 000-digit number; the schema points at a remote ``$ref``; the data is JSON or TOML.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path, PurePosixPath
from urllib.parse import quote, quote_plus

import jinja2
import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import make_age_key

from gitops_render.app.pipeline import RunOptions, run_render
from gitops_render.cli import cli
from gitops_render.core.errors import ConfigError, DataError, GitopsRenderError, LeakError, SchemaError
from gitops_render.core.load import LoadedData, Locations, load_data
from gitops_render.core.mask import mask, mask_secret_pair
from gitops_render.data.schema import load_schema, sensitive_values, validate_data
from gitops_render.secrets.leak import Leak, check_leaks, find_leaks

P = PurePosixPath
SIX = "pw1234"


def cli_run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--root", str(root)], catch_exceptions=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith((".gitops-render/cache",
                                                                                ".gitops-render/lock"))}


def mini_repo(root: Path, schema: dict[str, object], data: str, templates: dict[str, str],
              plugin: str = "") -> Path:
    """A small repo: a schema, data, templates and (optionally) a plugin; no secrets outputs."""
    (root / "templates").mkdir(parents=True)
    (root / "scripts").mkdir()
    plugins = 'plugins = ["myplugin:Plugin"]\nimport_paths = ["scripts"]\n' if plugin else ""
    (root / "gitops-render.toml").write_text(textwrap.dedent("""\
        [gitops-render]
        inputs = ["templates"]
        output = "out"
        data = ["cluster.yaml"]
        schema = "schema.json"
        jinja_suffix = ".j2"
        undefined = "strict"
        """) + plugins + textwrap.dedent("""\

        [gitops-render.delimiter]
        block_start = "{%"
        block_end = "%}"
        variable_start = "{{"
        variable_end = "}}"
        comment_start = "{#"
        comment_end = "#}"
        """))
    (root / "schema.json").write_text(json.dumps(schema))
    (root / "cluster.yaml").write_text(data)
    if plugin:
        (root / "scripts" / "myplugin.py").write_text(textwrap.dedent(plugin))
    for rel, text in templates.items():
        (root / "templates" / rel).write_text(text)
    return root


def render_error(root: Path) -> GitopsRenderError:
    with pytest.raises(GitopsRenderError) as err:
        run_render(RunOptions(root=root, validate=False))
    return err.value


PW_SCHEMA = {"type": "object", "properties": {"pw": {"type": "string", "x-sensitive": True},
                                              "strict_pw": {"type": "string", "x-sensitive": True,
                                                            "pattern": "^[a-z]{12,}$"}}}


# --------------------------------------------------------------------------- one masker (10.3, 12.4, 12.17)


def test_attack_six_character_secret_is_masked_in_schema_template_and_plugin_errors(tmp_path: Path) -> None:
    schema_repo = mini_repo(tmp_path / "schema", PW_SCHEMA, f"strict_pw: {SIX}\n", {"a.yaml.j2": "a: 1\n"})
    template_repo = mini_repo(tmp_path / "template", PW_SCHEMA, f"pw: {SIX}\n",
                              {"a.yaml.j2": "a: {{ {}[pw] }}\n"})
    plugin_repo = mini_repo(tmp_path / "plugin", PW_SCHEMA, f"pw: {SIX}\n", {"a.yaml.j2": "a: {{ pw | boom }}\n"},
                            plugin="""\
        class Plugin:
            def __init__(self, data, config):
                pass
            def filters(self):
                def boom(value):
                    raise ValueError(f"cannot use {value!r} here")
                return [boom]
        """)
    for root, kind in ((schema_repo, SchemaError), (template_repo, GitopsRenderError),
                       (plugin_repo, GitopsRenderError)):
        error = render_error(root)
        assert isinstance(error, kind), error
        text = str(error)
        assert SIX not in text, f"{root.name}: the 6-character secret is printed"
        assert "***" in text, text
        assert not (root / "out").exists()


def test_attack_schema_error_prints_paths_and_types_never_a_value_whatever_its_escaping() -> None:
    awkward = {"quotes": "a'b\"c-d", "backslash": "x\\y\\z", "tab": "p\tq", "short": "ab", "int": 4711}
    schema = {
        "type": "object",
        "properties": {**{k: {"x-sensitive": True} for k in awkward},
                       "provider_key": {"type": "string", "x-sensitive": True},
                       "enabled": {"type": "boolean"}},
        # LiteLLM on, no provider credentials: the error's instance is the whole data
        "if": {"properties": {"enabled": {"const": True}}},
        "then": {"anyOf": [{"required": ["provider_key"]}, {"required": ["other_key"]}]},
    }
    data = {"enabled": True, **awkward}
    with pytest.raises(SchemaError) as err:
        validate_data(LoadedData(data, Locations(), ()), schema)
    text = str(err.value)
    assert "<root>: the mapping matches none of the allowed forms" in text, text
    for value in awkward.values():
        for form in {str(value), repr(value)[1:-1], json.dumps(value)}:
            as_token = re.compile(r"(?<![A-Za-z0-9])" + re.escape(form) + r"(?![A-Za-z0-9])")
            assert not as_token.search(text), f"a sensitive value appears in the schema error as {form!r}"


def test_attack_a_sensitive_value_of_the_wrong_type_shows_the_type_not_the_value() -> None:
    schema = {"type": "object", "properties": {"token": {"type": "string", "x-sensitive": True}}}
    with pytest.raises(SchemaError) as err:
        validate_data(LoadedData({"token": 987654}, Locations(), ()), schema)
    assert "token: *** is not of type 'string' (found integer)" in str(err.value)
    assert "987654" not in str(err.value)


def test_attack_short_values_are_masked_as_tokens_not_inside_words() -> None:
    assert mask("no attribute 'ab' in abc", ["ab"]) == "no attribute '***' in abc"
    assert mask('DATABASE_URL=postgresql://u:p%40ss@h', ["p@ss"]) == "DATABASE_URL=postgresql://u:***@h"
    assert mask(r'"a\"b"', ['a"b']) == '"***"'


# --------------------------------------------------------------------------- one walker (10.3)


def test_attack_x_sensitive_on_an_object_map_allof_ref_or_integer_is_leak_guarded(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "$defs": {"secret": {"x-sensitive": True}},
        "properties": {
            "tls": {"type": "object", "x-sensitive": True},
            "api_keys": {"type": "object", "additionalProperties": {"type": "string", "x-sensitive": True}},
            "via_allof": {"allOf": [{"$ref": "#/$defs/secret"}]},
            "pin": {"type": "integer", "x-sensitive": True},
        },
    }
    data = ("tls:\n  key: TLS-KEY-MATERIAL-1\napi_keys:\n  openai: sk-openai-000111\n"
            "via_allof: allof-secret-9\npin: 80604711\n")
    template = "a: {{ tls.key }}\nb: {{ api_keys.openai }}\nc: {{ via_allof }}\nd: {{ pin }}\n"
    root = mini_repo(tmp_path / "r", schema, data, {"cm.yaml.j2": template})
    error = render_error(root)
    assert isinstance(error, LeakError) and error.exit_code == 1, error
    for field in ("tls.key", "api_keys.openai", "via_allof", "pin"):
        assert field in str(error), error
    for value in ("TLS-KEY-MATERIAL-1", "sk-openai-000111", "allof-secret-9", "80604711"):
        assert value not in str(error)
    assert not (root / "out").exists()
    assert sensitive_values(yaml.safe_load(data), schema) == {
        "tls.key": "TLS-KEY-MATERIAL-1", "api_keys.openai": "sk-openai-000111",
        "via_allof": "allof-secret-9", "pin": "80604711"}


# --------------------------------------------------------------------------- leak guard (12.8, 12.18)


def test_attack_tojson_escaped_and_url_encoded_secrets_are_leak_guarded() -> None:
    secret = "p&<s>'ä\\w0rd"
    env = jinja2.Environment()
    files = {
        P("cm/tojson.yaml"): env.from_string("v: {{ s | tojson }}\n").render(s=secret).encode(),
        P("cm/json.yaml"): f"v: {json.dumps(secret)}\n".encode(),
        P("cm/url.yaml"): f"DATABASE_URL: postgresql://litellm:{quote(secret, safe='')}@db:5432/x\n".encode(),
        P("cm/plus.yaml"): f"q: a={quote_plus(secret)}\n".encode(),
        P("cm/yaml.yaml"): yaml.safe_dump({"v": secret}, allow_unicode=True).encode(),
    }
    leaks = find_leaks(files, {"litellm_db_password": secret})
    assert sorted(leak.path.as_posix() for leak in leaks) == sorted(p.as_posix() for p in files), leaks


def test_attack_litellm_backup_example_key_does_not_match_litellm_backups() -> None:
    sensitive = {"litellm_s3_access_key": "litellm-backup"}
    assert find_leaks({P("a.yaml"): b"bucket: litellm-backups\nprefix: xlitellm-backup\n"}, sensitive) == []
    found = find_leaks({P("b.yaml"): b"key: litellm-backup\n"}, sensitive)
    assert found == [Leak(P("b.yaml"), "litellm_s3_access_key", "plain")]
    with pytest.raises(LeakError) as err:
        check_leaks({P("b.yaml"): b"key: litellm-backup\n"}, sensitive)
    assert "by coincidence" in (err.value.hint or "") and "choose another one" in (err.value.hint or "")


def test_attack_short_sensitive_values_are_leak_guarded_on_token_boundaries() -> None:
    sensitive = {"litellm_valkey_password": SIX}
    assert find_leaks({P("a.yaml"): f"password: {SIX}\n".encode()}, sensitive) != []
    assert find_leaks({P("a.yaml"): f"password: '{SIX}'\n".encode()}, sensitive) != []
    assert find_leaks({P("a.yaml"): f"image: x/{SIX}7:1\n".encode()}, sensitive) == []


# --------------------------------------------------------------------------- diff (12.5)


def test_attack_diff_masks_values_a_non_standard_creation_rule_encrypts() -> None:
    old = ("kind: KeycloakRealmImport\nspec:\n  realm:\n    clients:\n"
           "    - clientId: litellm\n      secret: OLD-CLIENT-SECRET-1\n")
    new = old.replace("OLD-CLIENT-SECRET-1", "NEW-CLIENT-SECRET-2")
    enc = "ENC[AES256_GCM,data:xx,iv:yy,tag:zz,type:str]"
    old_public = old.replace("OLD-CLIENT-SECRET-1", enc).replace("clientId: litellm", f"clientId: {enc}")
    a, b = mask_secret_pair(old, new, old_public=old_public, new_public=old_public)
    assert a is not None and b is not None
    assert "OLD-CLIENT-SECRET-1" not in a + b and "NEW-CLIENT-SECRET-2" not in a + b
    assert "*** (changed)" in b and "KeycloakRealmImport" in a  # public structure stays readable


# --------------------------------------------------------------------------- inputs (12.12, 12.13, 12.22)


def test_attack_alias_bomb_in_a_typed_field_is_refused_quickly_with_a_short_message(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append("litellm_replicas: *a9")
    (tmp_path / "cluster.yaml").write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_data([tmp_path / "cluster.yaml"], display_root=tmp_path)
    assert time.monotonic() - start < 5
    assert "alias bomb" in str(err.value) and len(str(err.value)) < 500
    assert str(err.value).startswith("cluster.yaml:")


@pytest.mark.parametrize(("name", "text"), [("cluster.yaml", "replicas: 1{}\n"), ("cluster.json", '{"replicas": 1{}}'),
                                            ("cluster.toml", "replicas = 1{}\n")])
def test_attack_a_five_thousand_digit_integer_is_a_data_error_naming_the_line(
        tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text("\n" + text.replace("{}", "0" * 5000))
    with pytest.raises(DataError) as err:
        load_data([tmp_path / name], display_root=tmp_path)
    assert err.value.exit_code == 2 and err.value.line == 2 and "too long" in str(err.value), err.value


def test_attack_a_remote_ref_in_the_schema_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object", "properties": {"x": {"$ref": "https://example.invalid/x.json"}}}))
    with pytest.raises(ConfigError) as err:
        load_schema(path)
    assert err.value.exit_code == 2
    assert str(path) in str(err.value) and "properties.x.$ref" in str(err.value) and "$defs" in str(err.value)


@pytest.mark.parametrize(("name", "text", "line"), [
    ("cluster.json", '{\n  "name": "x",\n  "nested": {\n    "replicas": "two"\n  }\n}\n', 4),
    ("cluster.toml", 'name = "x"\n\n[nested]\nother = 1\nreplicas = "two"\n', 5),
])
def test_attack_json_and_toml_data_get_schema_errors_with_line_numbers(
        tmp_path: Path, name: str, text: str, line: int) -> None:
    (tmp_path / name).write_text(text)
    schema = {"type": "object", "properties": {"nested": {"type": "object",
                                                          "properties": {"replicas": {"type": "integer"}}}}}
    with pytest.raises(SchemaError) as err:
        validate_data(load_data([tmp_path / name], display_root=tmp_path), schema)
    assert f"{name}:{line}: nested.replicas: 'two' is not of type 'integer'" in str(err.value), err.value


# --------------------------------------------------------------------------- the real repo (12.3, 12.9)


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from conftest import copy_project_repo

    root = copy_project_repo(tmp_path / "repo")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(root / "age.key"))
    make_age_key(root / "age.key")
    for args in (["init"], ["configure", "--no-validate"]):
        res = cli_run(root, *args)
        assert res.exit_code == 0, res.output
    return root


def _rotate_a_secret(root: Path) -> str:
    doc = yaml.safe_load((root / "cluster.yaml").read_text())
    doc["dragonfly_litellm_password"] = value = "ROTATED-" + "r" * 32
    (root / "cluster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return value


def test_attack_age_identity_in_a_plain_configmap_is_refused(configured: Path) -> None:
    template = configured / "templates/config/kubernetes/apps/ai-system/litellm/app/debug.yaml.j2"
    template.write_text("key: \"#{ age_key('private') }#\"\n")
    before = snapshot(configured)
    res = cli_run(configured, "configure", "--no-validate")
    assert res.exit_code == 1, res.output
    assert "age identity" in res.output and "debug.yaml" in res.output, res.output
    assert "AGE-SECRET-KEY-" not in res.output
    assert snapshot(configured) == before


def test_attack_creation_rule_without_stringdata_stops_before_writing_plaintext(configured: Path) -> None:
    rules = configured / "templates/config/.sops.yaml.j2"
    rules.write_text(rules.read_text().replace('"^(data|stringData)$"', '"^(data)$"'))
    value = _rotate_a_secret(configured)
    before = snapshot(configured)
    res = cli_run(configured, "configure", "--no-validate")
    assert res.exit_code == 2, res.output
    assert ".sops.yaml" in res.output and "stringData." in res.output and "unencrypted" in res.output, res.output
    assert "encrypted_regex" in res.output, res.output
    assert value not in res.output
    assert snapshot(configured) == before


def test_a_secret_value_equal_to_one_of_its_keys_is_not_a_leak(configured: Path) -> None:
    """sops leaves every key in clear: a value that equals a key of the same file (``subPath:
    config.yaml`` beside a ``config.yaml:`` key, as in a cluster-template fork) is structure, not a leak."""
    template = configured / "templates/config/kubernetes/apps/demo/config.sops.yaml.j2"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text("apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo\n  namespace: default\n"
                        "stringData:\n  config.yaml: |-\n    tunnel: demo\n  subPath: config.yaml\n")
    res = cli_run(configured, "configure", "--no-validate")
    assert res.exit_code == 0, res.output
    ciphertext = (configured / "kubernetes/apps/demo/config.sops.yaml").read_text()
    assert "config.yaml: ENC[" in ciphertext and "subPath: ENC[" in ciphertext


def test_attack_a_sops_echoing_its_input_with_a_fake_sops_block_is_refused(
        configured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-sops"
    from operator_repo import SOPS as sops  # decrypting is left to the real one
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case " $* " in *" --encrypt "*) ;; *) exec {sops} "$@";; esac
        cat
        printf 'sops:\\n    mac: ENC[AES256_GCM,data:AAAA,iv:BBBB,tag:CCCC,type:str]\\n    version: 3.11.0\\n'
        """))
    fake.chmod(0o755)
    monkeypatch.setenv("GITOPS_RENDER_SOPS", str(fake))
    value = _rotate_a_secret(configured)
    before = snapshot(configured)
    res = cli_run(configured, "configure", "--no-validate")
    assert res.exit_code == 2, res.output
    assert "unencrypted" in res.output and "nothing was written" in res.output, res.output
    assert value not in res.output
    assert snapshot(configured) == before
