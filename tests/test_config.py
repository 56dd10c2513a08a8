"""Settings from gitops-render.toml / makejinja.toml, env and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_render.settings.config import SecretsTable, Settings, load_settings, run_exec_hooks
from gitops_render.core.errors import ConfigError, ToolFailedError

REPO = Path(__file__).resolve().parents[1]


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_gitops_render_defaults(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", '[gitops-render]\ninputs = ["templates"]\n')
    s = load_settings(tmp_path, environ={})
    assert s.compat == "gitops-render"
    assert s.root == tmp_path.resolve() and s.output == tmp_path.resolve()
    assert s.config_file == (tmp_path / "gitops-render.toml").resolve()
    assert s.undefined == "strict"
    assert (s.delimiter.block_start, s.delimiter.variable_end, s.delimiter.comment_end) == ("#%", "}#", "#|")
    assert s.whitespace.trim_blocks and s.whitespace.lstrip_blocks and s.whitespace.keep_trailing_newline
    assert s.whitespace.newline_sequence == "\n"
    assert s.include_patterns == ("**/*",) and s.jinja_suffix == ".j2"
    assert s.import_paths == (tmp_path.resolve(),)
    assert (s.force, s.clean, s.keep_empty, s.copy_metadata) == (True, False, False, False)
    assert s.secrets == SecretsTable() and s.schema is None
    assert s.age_key_file == tmp_path.resolve() / "age.key"


def test_makejinja_defaults(tmp_path: Path) -> None:
    _write(tmp_path, "makejinja.toml", '[makejinja]\noutput = "out"\n')
    s = load_settings(tmp_path, environ={})
    assert s.compat == "makejinja"
    assert s.undefined == "default"
    assert (s.delimiter.block_start, s.delimiter.variable_start, s.delimiter.comment_start) == ("{%", "{{", "{#")
    assert s.prefix.line_statement is None and s.internal.cache_size == 0
    assert s.output == (tmp_path / "out").resolve()


def test_repository_settings_file_loads() -> None:
    """The project's own gitops-render.toml is valid (its values are the lead's to change)."""
    s = load_settings(REPO, environ={})
    assert s.compat == "gitops-render"
    assert REPO / "templates/config" in s.inputs
    assert all(p.is_absolute() for p in (*s.inputs, *s.import_paths, s.output))
    assert s.schema is None or s.schema.is_absolute()
    assert s.secrets.age_key_file == "age.key" and s.age_key_file == REPO / "age.key"
    assert "flux-system/GitRepository/flux-system" in s.cluster.provided_sources
    assert s.validate.helm_schemas["app-template@4.5.0"] == "schemas/charts/app-template-4.5.0"


def test_gitops_render_file_wins_over_makejinja(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", '[gitops-render]\ninputs = ["t"]\nforce = true\n')
    _write(tmp_path, "makejinja.toml", '[makejinja]\noutput = "x"\nforce = false\n')
    s = load_settings(tmp_path, environ={"MAKEJINJA_FORCE": "false"})
    assert s.compat == "gitops-render" and s.force is True


def test_no_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither gitops-render.toml nor makejinja.toml"):
        load_settings(tmp_path, environ={})


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", "[gitops-render]\nexclude_pattern = []\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ={})
    assert "unknown key 'exclude_pattern'" in str(err.value)
    assert "did you mean 'exclude_patterns'" in str(err.value)
    assert "gitops-render.toml" in str(err.value)


def test_unknown_nested_key(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", '[gitops-render.delimiter]\nblock_stat = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'block_start'"):
        load_settings(tmp_path, environ={})


def test_gitops_only_keys_rejected_in_makejinja_mode(tmp_path: Path) -> None:
    _write(tmp_path, "makejinja.toml", '[makejinja]\noutput = "o"\nschema = "x.json"\n')
    with pytest.raises(ConfigError, match="unknown key 'schema'"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize("line, fragment", [
    ('force = "yes"', "force: expected a boolean"),
    ("inputs = 3", "inputs: expected a list of path strings"),
    ('undefined = "strikt"', "did you mean 'strict'"),
    ("delimiter = 1", "delimiter: expected a table"),
    ("internal = { cache_size = \"big\" }", "internal.cache_size: expected an integer"),
    ('data_vars = { a = [1] }', "data_vars.a: expected a scalar"),
    ('whitespace = { newline_sequence = "x" }', "whitespace.newline_sequence: 'x' is not one of"),
])
def test_wrong_types(tmp_path: Path, line: str, fragment: str) -> None:
    _write(tmp_path, "gitops-render.toml", f"[gitops-render]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ={})
    assert fragment in str(err.value)
    assert "gitops-render.toml" in str(err.value)


def test_invalid_toml(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", "[gitops-render\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(tmp_path, environ={})


def test_makejinja_precedence_file_env_overrides(tmp_path: Path) -> None:
    _write(tmp_path, "makejinja.toml",
           '[makejinja]\noutput = "out"\nforce = true\nquiet = true\n'
           '[makejinja.delimiter]\nvariable_start = "<<"\n')
    env = {"MAKEJINJA_FORCE": "false", "MAKEJINJA_DELIMITER_VARIABLE_START": "[[",
           "MAKEJINJA_EXCLUDE_PATTERNS": "a:b", "MAKEJINJA_UNDEFINED": "chainable"}
    s = load_settings(tmp_path, environ=env)
    assert s.force is False and s.quiet is True
    assert s.delimiter.variable_start == "[["
    assert s.exclude_patterns == ("a", "b") and s.undefined == "chainable"
    s2 = load_settings(tmp_path, environ=env, overrides={"force": True, "delimiter.variable_start": "(("})
    assert s2.force is True and s2.delimiter.variable_start == "(("
    s3 = load_settings(tmp_path, environ=env, overrides={"delimiter": {"variable_end": "))"}})
    assert s3.delimiter.variable_end == "))" and s3.delimiter.variable_start == "[["


def test_makejinja_env_mapping_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "makejinja.toml", '[makejinja]\noutput = "out"\n')
    with pytest.raises(ConfigError, match="MAKEJINJA_DATA_VARS"):
        load_settings(tmp_path, environ={"MAKEJINJA_DATA_VARS": "a=1"})


def test_makejinja_settings_files_merge_and_resolve(tmp_path: Path) -> None:
    _write(tmp_path, "repo/makejinja.toml", '[makejinja]\noutput = "out"\ninputs = ["t"]\n')
    other = _write(tmp_path, "elsewhere/extra.toml", '[makejinja]\ndata = ["d.yaml"]\noutput = "o2"\n')
    s = load_settings(tmp_path / "repo", environ={"MAKEJINJA_SETTINGS": str(other)})
    assert s.inputs == ((tmp_path / "repo/t").resolve(),)
    assert s.data == ((tmp_path / "elsewhere/d.yaml").resolve(),)
    assert s.output == (tmp_path / "elsewhere/o2").resolve()
    assert s.config_file == other.resolve()
    with pytest.raises(ConfigError, match="mandatory"):
        load_settings(tmp_path / "repo", environ={"MAKEJINJA_SETTINGS": "!/nonexistent.toml"})


def test_makejinja_requires_output(tmp_path: Path) -> None:
    _write(tmp_path, "makejinja.toml", '[makejinja]\ninputs = ["t"]\n')
    with pytest.raises(ConfigError, match="'output' is not set"):
        load_settings(tmp_path, environ={})


def test_dash_keys_and_scalar_data_vars(tmp_path: Path) -> None:
    _write(tmp_path, "makejinja.toml",
           '[makejinja]\noutput = "o"\nkeep-empty = true\ndata_vars = { n = 1, b = true, "a.b" = "x" }\n'
           '[makejinja.file_data]\n"x.j2" = ["f.yaml"]\n')
    s = load_settings(tmp_path, environ={})
    assert s.keep_empty is True
    assert dict(s.data_vars) == {"n": "1", "b": "true", "a.b": "x"}
    assert s.file_data["x.j2"] == ((tmp_path / "f.yaml").resolve(),)


def test_explicit_config_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "conf/custom.toml", '[makejinja]\noutput = "out"\n')
    s = load_settings(tmp_path, config_file=cfg, environ={})
    assert s.compat == "makejinja" and s.output == (tmp_path / "conf/out").resolve()
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path, config_file=tmp_path / "nope.toml", environ={})


def test_settings_are_frozen(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", "[gitops-render]\n")
    s = load_settings(tmp_path, environ={})
    with pytest.raises(AttributeError):
        s.force = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.secrets.parallelism = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.validate.helm_schemas["x"] = "y"  # type: ignore[index]
    assert isinstance(s, Settings) and s.all_plugins == ()


def test_exec_hooks(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml",
           '[gitops-render]\nexec_pre = ["echo pre > pre.txt"]\nexec_post = ["exit 3"]\n')
    s = load_settings(tmp_path, environ={})
    run_exec_hooks(s, "pre")
    assert (tmp_path / "pre.txt").read_text() == "pre\n"
    with pytest.raises(ToolFailedError, match="exit code 3") as err:
        run_exec_hooks(s, "post")
    assert err.value.returncode == 3
