"""Stage 2: the schema reports every violation at once, with line, path, hint — and no secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_render.core.errors import SchemaError
from gitops_render.core.load import load_data
from gitops_render.data.schema import apply_defaults, sensitive_values, validate_data

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "litellm_enabled": {"type": "boolean", "default": False},
        "litellm_replicas": {"type": "integer", "minimum": 1, "default": 1},
        "litellm_master_key": {"type": "string", "pattern": "^sk-", "minLength": 32, "x-sensitive": True},
        "litellm": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {"log_level": {"enum": ["INFO", "DEBUG"], "default": "INFO"}},
        },
    },
    "allOf": [
        {
            "if": {"properties": {"litellm_enabled": {"const": True}}, "required": ["litellm_enabled"]},
            "then": {"required": ["litellm_master_key"]},
        }
    ],
}


def run(tmp_path: Path, text: str) -> dict:
    p = tmp_path / "cluster.yaml"
    p.write_text(text)
    return validate_data(load_data([p], display_root=tmp_path), SCHEMA)


def test_defaults_from_the_schema_are_applied(tmp_path: Path) -> None:
    data = run(tmp_path, "litellm_enabled: false\n")
    assert data == {"litellm_enabled": False, "litellm_replicas": 1, "litellm": {"log_level": "INFO"}}


def test_every_violation_at_once_with_file_line_path(tmp_path: Path) -> None:
    text = "litellm_enabled: true\nlitellm_replicas: 0\nlitellm:\n  log_levle: INFO\nlitellm_mastr_key: x\n"
    with pytest.raises(SchemaError) as e:
        run(tmp_path, text)
    lines = [str(v) for v in e.value.violations]
    assert "cluster.yaml:2: litellm_replicas: 0 is less than the minimum of 1" in lines
    assert "cluster.yaml:4: litellm.log_levle: unknown key (did you mean 'log_level'?)" in lines
    assert "cluster.yaml:5: litellm_mastr_key: unknown key (did you mean 'litellm_master_key'?)" in lines
    assert any("litellm_master_key: missing required key" in line for line in lines)
    assert len(lines) == 4


def test_sensitive_value_never_appears_in_errors(tmp_path: Path) -> None:
    secret = "not-a-key-but-secret-value-1234567"
    with pytest.raises(SchemaError) as e:
        run(tmp_path, f"litellm_enabled: true\nlitellm_master_key: {secret}\n")
    text = str(e.value)
    assert secret not in text
    assert "cluster.yaml:2: litellm_master_key: *** does not match '^sk-'" in text


def test_wrong_type_message(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as e:
        run(tmp_path, "litellm_enabled: 'yes please'\n")
    assert "cluster.yaml:1: litellm_enabled: 'yes please' is not of type 'boolean'" in str(e.value)


def test_sensitive_values_lists_only_marked_fields() -> None:
    data = apply_defaults({"litellm_enabled": True, "litellm_master_key": "sk-" + "a" * 40}, SCHEMA)
    assert sensitive_values(data, SCHEMA) == {"litellm_master_key": "sk-" + "a" * 40}


def test_a_rerun_skips_the_checks_that_passed_for_the_same_schema_and_data(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm runs: the schema's meta-schema check and the data's validation are recorded (keyed markers in
    the state cache) and not repeated for the same bytes; anything else is checked as on a first run."""
    import json

    import jsonschema

    import gitops_render.data.schema as schema_module
    from gitops_render.core.errors import ConfigError
    from gitops_render.data.schema import load_schema

    cache = tmp_path / ".gitops-render" / "cache"
    schema_file = tmp_path / "cluster.schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    good = tmp_path / "cluster.yaml"
    good.write_text("litellm_enabled: true\nlitellm_master_key: sk-" + "x" * 40 + "\n")
    schema = load_schema(schema_file, cache_dir=cache)
    assert validate_data(load_data([good], display_root=tmp_path), schema, cache_dir=cache)["litellm_replicas"] == 1
    markers = sorted(p.name.split("-")[0] for p in (cache / "schema-checked").iterdir())
    assert markers == ["data", "key", "schema"]
    assert not any("sk-" in p.name for p in (cache / "schema-checked").iterdir())

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema", fail)
    monkeypatch.setattr(schema_module, "_data_validator", fail)
    schema = load_schema(schema_file, cache_dir=cache)  # same bytes: not checked again
    again = validate_data(load_data([good], display_root=tmp_path), schema, cache_dir=cache)
    assert again["litellm"] == {"log_level": "INFO"}  # defaults still applied
    monkeypatch.undo()
    bad = tmp_path / "bad.yaml"
    bad.write_text("litellm_enabled: true\nlitellm_replicas: 0\n")  # other data: validated, and it fails
    with pytest.raises(SchemaError):
        validate_data(load_data([bad], display_root=tmp_path), schema, cache_dir=cache)
    schema_file.write_text(json.dumps({**SCHEMA, "type": "objekt"}))  # other schema bytes: checked, and it fails
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        load_schema(schema_file, cache_dir=cache)
