"""A value in cluster.yaml can never add a key, a document or a YAML tag to the rendered tree.

An attacker (or a typo) puts a newline, a ``---``, an ``!!binary`` tag or a ``*alias`` into
a string field of cluster.yaml. Either the schema refuses it (exit 2, nothing written) or the
render carries it as the plain string it is: every output keeps the document and key
structure of a harmless value. Two layers prove it independently:

* the schema: every string field has an anchored pattern (or an enum) that refuses control
  characters, with end-of-text ``$`` (a trailing newline is refused too);
* the templates: every interpolation goes through the plugin's ``yaml_value`` filter, so even
  data that skipped the schema cannot change the structure.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from combos import ALL_FEATURES, VALKEY
from stack_helpers import SCHEMA_FILE, TEMPLATES, cluster_data, render_raw, schema

from gitops_render.core.errors import SchemaError
from gitops_render.core.load import LoadedData, Locations
from gitops_render.data.schema import load_schema, validate_data

INJECTIONS = {
    "new-key": "x\nenableSuperuserAccess: true",
    "new-document": "x\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: pwn}",
    "trailing-newline": "example.com\n",
    "crlf": "x\r\nkind: Evil",
    "nul": "x\x00y",
    "line-separator": "x\u2028kind: Evil",
}
# printable payloads: some fields may accept them; the render must keep them plain strings
PRINTABLE = {
    "binary-tag": "!!binary aGVsbG8=",
    "alias": "*alias",
    "anchor": "&anchor x",
    "comment": "x # y",
    "flow": "{a: 1}",
    "quotes": "a\"b'c\\d",
    "mapping": "key: value",
}
BASES = {"all-features": ALL_FEATURES, "valkey-sentinel": {**ALL_FEATURES, **VALKEY, "litellm_valkey_sentinel_enabled": True}}
BENIGN = "benign"


def _string_fields(node: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, property schema) of every string property, array items included (``[]`` in the path)."""
    for key, prop in (node.get("properties") or {}).items():
        types = prop.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types:
            yield (*path, key), prop
        if "object" in types:
            yield from _string_fields(prop, (*path, key))
        if "array" in types and isinstance(prop.get("items"), Mapping):
            items = prop["items"]
            if items.get("type") == "string":
                yield (*path, key, "[]"), items
            yield from _string_fields(items, (*path, key, "[]"))


FIELDS = dict(_string_fields(schema()))


def _with(data: dict[str, Any], path: tuple[str, ...], value: str) -> dict[str, Any]:
    """``data`` with the field at ``path`` set to ``value`` (in every item of a list on the way)."""
    out = copy.deepcopy(data)

    def put(node: Any, rest: tuple[str, ...]) -> None:
        head, tail = rest[0], rest[1:]
        if head == "[]":
            for i, item in enumerate(node):
                if tail:
                    put(item, tail)
                else:
                    node[i] = value
        elif tail:
            put(node[head], tail)
        else:
            node[head] = value

    put(out, path)
    return out


def _base(name: str) -> dict[str, Any]:
    data = cluster_data({**BASES[name], "cnpg_storage_class": "standard"})
    for model in data["litellm_self_hosted_models"]:
        model.setdefault("api_key", "fake-vllm-key")
    return data


def _structure(texts: Mapping[str, str]) -> dict[str, list[Any]]:
    """Per output file: per document, every key path with the type of its leaf (values left out)."""
    def shape(node: Any, where: str, out: list[str]) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                shape(value, f"{where}/{key}", out)
                if isinstance(value, str) and str(key).endswith(".yaml") and where.endswith("/data"):
                    shape(yaml.safe_load(value), f"{where}/{key}:", out)  # a YAML file inside a ConfigMap
        elif isinstance(node, list):
            for i, value in enumerate(node):
                shape(value, f"{where}[{i}]", out)
        else:
            out.append(f"{where}={type(node).__name__}")

    result: dict[str, list[Any]] = {}
    for rel, text in texts.items():
        docs = []
        for doc in yaml.safe_load_all(text):
            paths: list[str] = []
            shape(doc, "", paths)
            docs.append(sorted(paths))
        result[rel] = docs
    return result


SCHEMA = load_schema(SCHEMA_FILE)


def _validates(data: dict[str, Any]) -> bool:
    try:
        validate_data(LoadedData(data, Locations(), (Path("cluster.yaml"),)), SCHEMA)
    except SchemaError:
        return False
    return True


# --------------------------------------------------------------------------- the schema


def test_every_string_field_has_an_anchored_pattern_or_an_enum() -> None:
    assert len(FIELDS) > 50
    for path, prop in FIELDS.items():
        if "enum" in prop:
            continue
        pattern = prop.get("pattern")
        assert pattern, f"{'.'.join(path)} has no pattern"
        assert pattern.startswith("^") and pattern.endswith("$"), f"{'.'.join(path)}: {pattern} is not anchored"


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("payload", list(INJECTIONS))
def test_the_schema_refuses_a_control_character_in_every_string_field(base: str, payload: str) -> None:
    data = _base(base)
    assert _validates(data)
    accepted = [".".join(p) for p in FIELDS if _validates(_with(data, p, INJECTIONS[payload]))]
    assert accepted == [], f"the schema accepts {payload!r} in {accepted}"


def test_a_domain_with_a_trailing_newline_is_refused_naming_the_field() -> None:
    """Python's ``$`` matches before a final newline; the schema stage uses end-of-text semantics."""
    with pytest.raises(SchemaError) as err:
        validate_data(LoadedData(_with(_base("all-features"), ("cloudflare_domain",), "example.com\n"), Locations(),
                                 (Path("cluster.yaml"),)), load_schema(SCHEMA_FILE))
    assert [v.path for v in err.value.violations] == ["cloudflare_domain"]


# --------------------------------------------------------------------------- the templates


@pytest.mark.parametrize("base", list(BASES))
def test_printable_payloads_the_schema_accepts_render_as_plain_strings(base: str, tmp_path: Path) -> None:
    """Every field that accepts ``*alias``, ``!!binary …``, ``# …`` or quotes gets it at once:
    the rendered structure is the one of a harmless value, and the value arrives intact."""
    data = _base(base)
    fast = {"schema_doc": load_schema(SCHEMA_FILE), "cache_dir": tmp_path / "jinja"}  # compile the pack once
    for name, payload in PRINTABLE.items():
        fields = [p for p in FIELDS if _validates(_with(data, p, payload))]
        assert fields, name
        injected, benign = data, data
        for path in fields:
            injected, benign = _with(injected, path, payload), _with(benign, path, BENIGN + name)
        assert _validates(injected), name
        ours = render_raw(injected, tmp_path / f"{name}-injected", **fast)
        assert _structure(ours) == _structure(render_raw(benign, tmp_path / f"{name}-benign", **fast)), name
        secret = next(d for d in yaml.safe_load_all(ours["kubernetes/apps/ai-system/litellm/app/secret.sops.yaml"])
                      if d["metadata"]["name"] == "litellm-secret")
        assert payload in secret["stringData"].values(), name


# fields whose value is compared with a constant or parsed by the plugin (not interpolated as is)
CLASSIFIED = {("litellm_cache_backend",), ("litellm_db_pooler_mode",), ("litellm_self_hosted_models", "[]", "api_base")}


@pytest.mark.parametrize("payload", list(INJECTIONS) + ["new-document-and-tag"])
def test_even_data_that_skipped_the_schema_cannot_change_the_rendered_structure(payload: str, tmp_path: Path) -> None:
    """Defence in depth: the same payload in every string field at once, rendered without the
    schema stage (as plain makejinja would), gives the structure of a harmless value."""
    from gitops_render.render.engine import render_tree
    from gitops_render.settings.config import load_settings

    text = INJECTIONS.get(payload, "x\n--- !!binary\n*alias: &a {b: 1}\n")
    data = _base("valkey-sentinel")
    injected, benign = data, data
    for path in FIELDS:
        if path not in CLASSIFIED and path[0] not in ("litellm_routing_strategy", "litellm_log_level"):
            injected = _with(injected, path, f"{BENIGN}{text}")
            benign = _with(benign, path, BENIGN)

    def render(values: dict[str, Any]) -> dict[str, str]:
        import os

        key = tmp_path / "age.key"
        key.write_text("# public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n"
                       "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n")
        os.environ["SOPS_AGE_KEY_FILE"] = str(key)
        try:
            result = render_tree(load_settings(TEMPLATES.parents[1]), values)
        finally:
            os.environ.pop("SOPS_AGE_KEY_FILE", None)
        return {str(rel): f.content.decode("utf-8") for rel, f in result.files.items()}

    assert _structure(render(injected)) == _structure(render(benign))


def test_every_interpolation_in_the_templates_goes_through_yaml_value() -> None:
    """The rule the two tests above rely on, checked on the template source."""
    offenders = []
    for template in sorted(TEMPLATES.rglob("*.j2")):
        source = re.sub(r"#\|.*?#\|", "", template.read_text(encoding="utf-8"), flags=re.DOTALL)
        for expr in re.findall(r"#\{(.*?)\}#", source, flags=re.DOTALL):
            if not re.search(r"\|\s*(yaml_value|yaml_block\(\d+\))\s*$", expr):
                offenders.append(f"{template.relative_to(TEMPLATES)}: #{{{expr}}}#")
    assert offenders == [], "\n".join(offenders)


def test_yaml_value_round_trips_what_yaml_would_misread() -> None:
    import importlib.util

    from stack_helpers import SCRIPTS

    spec = importlib.util.spec_from_file_location("plugin_for_injection", SCRIPTS / "plugin.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    values = [*INJECTIONS.values(), *PRINTABLE.values(), "", "yes", "null", "1e3", "0x1F", "~", "é", "\x85\ufeff",
              "- a", "[a]", "%TAG", "@x", "`x`", "|", ">"]
    for value in values:
        doc = yaml.safe_load(f"k: {plugin.yaml_value(value)}\nnext: 1\n")
        assert doc == {"k": value, "next": 1}, repr(value)
    items = ["a\nb: 1", 2, True, None]
    assert yaml.safe_load(f"k: {plugin.yaml_value(items)}") == {"k": items}
    assert json.loads(plugin.yaml_value({"a": "x"})) == {"a": "x"}
