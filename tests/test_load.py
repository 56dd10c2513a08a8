"""Stage 1: an operator's data files are read exactly, and every mistake names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_render.core.errors import DataError
from gitops_render.core.load import load_data


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_toml_json_merge_shallowly_in_order(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "x: {y: 1, z: 2}\nkeep: 1\n")
    b = write(tmp_path, "b.toml", "[x]\ny = 9\n")
    c = write(tmp_path, "c.json", '{"j": [1, 2]}')
    loaded = load_data([a, b, c], data_vars={"deep.key": "5"})
    assert loaded.data == {"x": {"y": 9}, "keep": 1, "j": [1, 2], "deep": {"key": "5"}}


def test_line_of_each_key_is_known(tmp_path: Path) -> None:
    p = write(tmp_path, "cluster.yaml", "a: 1\nb:\n  c:\n    - d: 1\n")
    loaded = load_data([p])
    assert loaded.locations.line_for(("b", "c", 0, "d"))[1] == 4
    assert loaded.locations.line_for(("b", "unknown"))[1] == 2


def test_duplicate_key_is_an_error_with_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "cluster.yaml", "litellm_enabled: true\nother: 1\nlitellm_enabled: false\n")
    with pytest.raises(DataError) as e:
        load_data([p])
    assert e.value.line == 3
    assert "duplicate key 'litellm_enabled'" in str(e.value) and "line 1" in str(e.value)


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    p = write(tmp_path, "c.yaml", "base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  y: 3\n")
    assert load_data([p]).data["over"] == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: [1, 2\nb: 3\n", 2, "invalid YAML"),
        ("a:\n\tb: 1\n", 2, "tabs"),
        ("a: 1\n---\n", 3, "empty document"),
        ("- a\n- b\n", 1, "found a list"),
        ("x: !!python/object/apply:os.system ['true']\n", 1, "tag"),
        ("yes: 1\n", 1, "not a string"),
    ],
)
def test_malformed_yaml_names_file_line_and_fix(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    p = write(tmp_path, "cluster.yaml", text)
    with pytest.raises(DataError) as e:
        load_data([p])
    assert e.value.line == line
    assert str(e.value).startswith(f"{p}:{line}: ")
    assert fragment in str(e.value)
    assert e.value.hint


def test_missing_data_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_data([tmp_path / "cluster.yaml"])
    assert "not found" in str(e.value) and "init" in str(e.value)


def test_json_duplicate_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="duplicate key 'a'"):
        load_data([write(tmp_path, "d.json", '{"a": 1, "a": 2}')])
    with pytest.raises(DataError) as e:
        load_data([write(tmp_path, "e.json", '{\n"a": 1,\n}')])
    assert e.value.line == 3


def test_deep_nesting_is_a_clean_error(tmp_path: Path) -> None:
    p = write(tmp_path, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DataError):
        load_data([p])
