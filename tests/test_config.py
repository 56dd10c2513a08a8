"""Settings from gitops-render.toml / makejinja.toml, env and overrides."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PROJECT

from gitops_render.core.errors import ConfigError, ToolFailedError
from gitops_render.settings.config import (
    RuntimeEnv,
    SecretsTable,
    Settings,
    find_root,
    load_settings,
    resolve_key_file,
    run_exec_hooks,
)


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
    s = load_settings(PROJECT, environ={})
    assert s.compat == "gitops-render"
    assert PROJECT / "templates/config" in s.inputs
    assert all(p.is_absolute() for p in (*s.inputs, *s.import_paths, s.output))
    assert s.schema is None or s.schema.is_absolute()
    assert s.secrets.age_key_file == "age.key" and s.age_key_file == PROJECT / "age.key"
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


# --------------------------------------------------------------------------- one typed declaration


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run the CLI in-process in ``cwd`` (what an operator types there)."""
    from gitops_render.cli import cli

    with contextlib.chdir(cwd):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("table, line, fragment, hint", [
    ("secrets", 'age_key_fle = "age.key"', "unknown key 'age_key_fle' in [gitops-render.secrets]",
     "did you mean 'age_key_file'"),
    ("validate", 'kubernetes_versoin = "1.35.0"', "unknown key 'kubernetes_versoin' in [gitops-render.validate]",
     "did you mean 'kubernetes_version'"),
    ("cluster", "provided_source = []", "unknown key 'provided_source' in [gitops-render.cluster]",
     "did you mean 'provided_sources'"),
    ("secrets", 'parallelism = "eight"', "secrets.parallelism: expected an integer, got string 'eight'", ""),
    ("secrets", "parallelism = 0", "secrets.parallelism: expected a positive integer", ""),
    ("validate", "timeout = nan", "validate.timeout: expected a positive number", ""),
])
def test_a_typo_or_a_wrong_type_in_any_table_stops_configure_with_exit_2_naming_file_and_key(
        tmp_path: Path, table: str, line: str, fragment: str, hint: str) -> None:
    _write(tmp_path, "gitops-render.toml", f'[gitops-render]\ninputs = ["t"]\n[gitops-render.{table}]\n{line}\n')
    _write(tmp_path, "t/x.txt", "x\n")
    res = _cli(tmp_path, "render")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: gitops-render.toml [gitops-render]: "), res.output
    assert fragment in res.output and hint in res.output
    assert not (tmp_path / "x.txt").exists()


def test_a_new_key_is_one_line_of_declaration() -> None:
    """Types, converters, unknown-key lists and docs all come from the dataclass fields."""
    from gitops_render.settings.model import ValidateTable, declared_fields, option_of

    names = [f.name for f in declared_fields(ValidateTable)]
    assert names == ["roots", "kubernetes_version", "schema_locations", "helm_schemas", "timeout", "helm_charts",
                     "chart_cache", "helm_api_versions", "stale_values_schema", "missing_schemas"]
    assert all(option_of(f) is not None and option_of(f).help for f in declared_fields(ValidateTable))  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the environment, read once


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_an_unusable_timeout_in_the_environment_is_exit_2_with_the_variable_named(tmp_path: Path, value: str) -> None:
    _write(tmp_path, "gitops-render.toml", '[gitops-render]\ninputs = ["t"]\n')
    _write(tmp_path, "t/x.txt", "x\n")
    res = _cli(tmp_path, "render", env={"GITOPS_RENDER_TIMEOUT": value})
    assert res.exit_code == 2, res.output
    assert f"GITOPS_RENDER_TIMEOUT={value!r} is not a positive number of seconds" in res.output
    assert not (tmp_path / "x.txt").exists()


def test_runtime_env_is_typed_and_passed_down() -> None:
    env = RuntimeEnv.from_environ({"GITOPS_RENDER_TIMEOUT": "7", "GITOPS_RENDER_JOBS": "3",
                                   "GITOPS_RENDER_SCHEMA_LOCATION": "a; b", "GITOPS_RENDER_VALIDATE_CACHE": "0",
                                   "GITOPS_RENDER_AGE_KEYGEN": "/opt/age-keygen", "GITOPS_RENDER_DEBUG": ""})
    assert (env.timeout, env.jobs, env.schema_locations, env.validate_cache, env.debug) == (7.0, 3, ("a", "b"),
                                                                                          False, False)
    runner = env.tool_runner()
    assert runner.overrides == {"age-keygen": "/opt/age-keygen"} and runner.timeouts["kubeconform"] == 7.0
    with pytest.raises(ConfigError, match="GITOPS_RENDER_JOBS='many'"):
        RuntimeEnv.from_environ({"GITOPS_RENDER_JOBS": "many"})


def test_no_stage_reads_gitops_render_variables_from_the_environment() -> None:
    """Every GITOPS_RENDER_* / SOPS_AGE_KEY_FILE read goes through settings/runtime.py."""
    src = PROJECT / "src" / "gitops_render"
    offenders = []
    for path in src.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            reads = re.search(r"(environ|getenv)\b.*(GITOPS_RENDER_|SOPS_AGE_KEY_FILE)|^\w+ = \"GITOPS_RENDER_", line)
            if reads and path.name != "runtime.py":
                offenders.append(f"{path.relative_to(src)}:{n}: {line.strip()}")
    assert offenders == []


# --------------------------------------------------------------------------- one key-file resolution


def test_key_file_precedence_env_then_setting_then_age_key_relative_to_the_root(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml", "[gitops-render]\n")
    assert load_settings(tmp_path, environ={}).age_key_file == tmp_path.resolve() / "age.key"
    _write(tmp_path, "gitops-render.toml", '[gitops-render.secrets]\nage_key_file = "keys/k.txt"\n')
    assert load_settings(tmp_path, environ={}).age_key_file == tmp_path.resolve() / "keys/k.txt"
    s = load_settings(tmp_path, environ={"SOPS_AGE_KEY_FILE": "other.key"})
    assert s.age_key_file == tmp_path.resolve() / "other.key"
    assert load_settings(tmp_path, environ={"SOPS_AGE_KEY_FILE": "/x/k.txt"}).age_key_file == Path("/x/k.txt")
    assert resolve_key_file(Path("/repo"), "age.key", RuntimeEnv()) == Path("/repo/age.key")


def test_the_template_plugin_uses_the_key_file_gitops_render_resolved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under gitops-render the plugin reads config.age_key_file; it falls back to the environment only without it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plugin_under_test", PROJECT / "templates/scripts/plugin.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    for name, letter in (("configured.key", "c"), ("env.key", "e")):
        _write(tmp_path, name, f"# public key: age1{letter * 58}\nAGE-SECRET-KEY-1{letter.upper() * 58}\n")
    _write(tmp_path, "gitops-render.toml", '[gitops-render.secrets]\nage_key_file = "configured.key"\n')
    monkeypatch.delenv("SOPS_AGE_KEY_FILE", raising=False)
    settings = load_settings(tmp_path, environ={"SOPS_AGE_KEY_FILE": "env.key"})
    (age_key,) = plugin.Plugin({}, settings).functions()
    assert age_key("public") == "age1" + "e" * 58
    (age_key,) = plugin.Plugin({}, load_settings(tmp_path, environ={})).functions()
    assert age_key("public") == "age1" + "c" * 58
    monkeypatch.chdir(tmp_path)  # plain makejinja: no resolved file on its config
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "env.key"))
    (age_key,) = plugin.Plugin({}, object()).functions()
    assert age_key("public") == "age1" + "e" * 58


# --------------------------------------------------------------------------- docs/configuration.md


def test_configuration_doc_is_generated_from_the_declaration_and_not_stale() -> None:
    from gitops_render.settings.docs import configuration_markdown

    text = configuration_markdown()
    for needle in ("`age_key_file`", "`provided_variables`", "`GITOPS_RENDER_TIMEOUT`", "`exec_timeout`",
                   "`newline_sequence`", "`SOPS_AGE_KEY_FILE`"):
        assert needle in text
    committed = (PROJECT / "docs" / "configuration.md").read_text()
    assert committed == text, "docs/configuration.md is stale: run python -m gitops_render.settings.docs " \
                              "docs/configuration.md"


# --------------------------------------------------------------------------- zero-change drop-in


def _makejinja_repo(root: Path) -> Path:
    _write(root, "makejinja.toml", '[makejinja]\ninputs = ["templates"]\noutput = "out"\ndata = ["c.yaml"]\n'
                                   'jinja_suffix = ".j2"\n')
    _write(root, "c.yaml", "name: demo\n")
    _write(root, "templates/a.yaml.j2", "name: {{ name }}\n")
    _write(root, "templates/copy.txt", "{{ raw }}\n")
    return root


def test_adding_a_gitops_render_toml_with_only_validation_tables_changes_no_rendered_file(tmp_path: Path) -> None:
    from helpers_render import render_to_dir
    from trees import snapshot

    root = _makejinja_repo(tmp_path / "repo")
    _settings, before = render_to_dir(root, environ={})
    first = snapshot(root / "out")
    shutil.rmtree(root / "out")  # makejinja semantics (no force): existing outputs would be kept, not rendered
    _write(root, "gitops-render.toml", '[gitops-render.validate]\nroots = ["out"]\n'
                                       '[gitops-render.cluster]\nprovided_sources = ["flux-system/GitRepository/x"]\n')
    settings, after = render_to_dir(root, environ={})
    assert settings.compat == "makejinja" and settings.validate.roots == ("out",)
    assert settings.cluster.provided_sources == ("flux-system/GitRepository/x",)
    assert after.files == before.files and len(after.files) == 2
    assert snapshot(root / "out") == first


def test_render_keys_in_gitops_render_toml_without_inputs_next_to_makejinja_toml_is_an_error(tmp_path: Path) -> None:
    root = _makejinja_repo(tmp_path)
    _write(root, "gitops-render.toml", "[gitops-render]\nforce = true\n")
    with pytest.raises(ConfigError, match="sets render keys \\(force\\) but no inputs"):
        load_settings(root, environ={})


# --------------------------------------------------------------------------- schema per data file


def test_a_schema_per_data_file_validates_each_file_with_its_own_lines(tmp_path: Path) -> None:
    from gitops_render.app.pipeline import RunOptions, prepare
    from gitops_render.core.errors import SchemaError

    _write(tmp_path, "cluster.yaml", "domain: example.com\n")
    _write(tmp_path, "nodes.yaml", "nodes:\n  - name: n1\n    address: 10.0.0.1\n")
    _write(tmp_path, "cluster.schema.json", json.dumps({
        "type": "object", "additionalProperties": False, "required": ["domain"],
        "properties": {"domain": {"type": "string"}, "timezone": {"type": "string", "default": "UTC"}}}))
    _write(tmp_path, "nodes.schema.json", json.dumps({
        "type": "object", "additionalProperties": False,
        "properties": {"nodes": {"type": "array", "items": {
            "type": "object", "required": ["name", "address"],
            "properties": {"name": {"type": "string"}, "address": {"type": "string", "format": "ipv4"}}}}}}))
    _write(tmp_path, "t/out.txt.j2", "#{ domain }# #{ timezone }# #{ nodes[0].name }#\n")
    _write(tmp_path, "gitops-render.toml",
           '[gitops-render]\ninputs = ["t"]\noutput = "out"\ndata = ["cluster.yaml", "nodes.yaml"]\n'
           '[gitops-render.schema]\n"cluster.yaml" = "cluster.schema.json"\n"nodes.yaml" = "nodes.schema.json"\n')
    prep = prepare(RunOptions(root=tmp_path))
    assert prep.result.files[PurePosixPath("out.txt")].content == b"example.com UTC n1\n"
    _write(tmp_path, "nodes.yaml", "nodes:\n  - name: n1\n    address: not-an-ip\n")
    with pytest.raises(SchemaError) as err:
        prepare(RunOptions(root=tmp_path))
    assert "nodes.yaml:3" in str(err.value) and "nodes[0].address" in str(err.value)
    _write(tmp_path, "gitops-render.toml",
           '[gitops-render]\ninputs = ["t"]\noutput = "out"\ndata = ["cluster.yaml"]\n'
           '[gitops-render.schema]\n"nodes.yaml" = "nodes.schema.json"\n')
    with pytest.raises(ConfigError, match="not one of the data files"):
        load_settings(tmp_path, environ={})


# --------------------------------------------------------------------------- settings safety


@pytest.mark.parametrize("output", [".git", ".git/hooks", "sub/../.git"])
def test_output_inside_git_is_refused_with_exit_2(tmp_path: Path, output: str) -> None:
    (tmp_path / ".git").mkdir()
    _write(tmp_path, "gitops-render.toml", f'[gitops-render]\ninputs = ["t"]\noutput = "{output}"\n')
    _write(tmp_path, "t/config", "[core]\n")
    res = _cli(tmp_path, "render")
    assert res.exit_code == 2 and "is inside a .git directory" in res.output, res.output
    assert sorted(p.name for p in (tmp_path / ".git").iterdir()) == []


def test_a_state_directory_pointing_outside_the_repo_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "repo"
    _write(root, "gitops-render.toml", '[gitops-render]\ninputs = ["t"]\n')
    _write(root, "t/x.txt", "x\n")
    (root / ".gitops-render").symlink_to(elsewhere)
    res = _cli(root, "render")
    assert res.exit_code == 2 and "is a symlink" in res.output and "real directory" in res.output, res.output
    assert list(elsewhere.iterdir()) == [] and not (root / "x.txt").exists()


# --------------------------------------------------------------------------- found from a subdirectory


def test_settings_are_found_from_any_subdirectory_like_git(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    _write(root, "gitops-render.toml", '[gitops-render]\ninputs = ["t"]\noutput = "out"\n')
    _write(root, "t/x.txt", "x\n")
    deep = root / "out" / "a" / "b"
    deep.mkdir(parents=True)
    res = _cli(deep, "render")
    assert res.exit_code == 0, res.output
    assert (root / "out" / "x.txt").read_text() == "x\n" and not (deep / "x.txt").exists()
    assert find_root(deep) == root.resolve()
    outside = tmp_path / "repo2" / "sub"
    (tmp_path / "repo2" / ".git").mkdir(parents=True)
    outside.mkdir()
    _write(tmp_path, "gitops-render.toml", "[gitops-render]\n")  # above the git top level: not used
    assert find_root(outside) == outside.resolve()


# --------------------------------------------------------------------------- exec hook time limit


def test_a_hanging_exec_hook_is_stopped_after_exec_timeout_with_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, "gitops-render.toml",
           '[gitops-render]\ninputs = ["t"]\nexec_timeout = 0.5\nexec_pre = ["sleep 30; touch late"]\n')
    _write(tmp_path, "t/x.txt", "x\n")
    started = time.monotonic()
    res = _cli(tmp_path, "render")
    assert time.monotonic() - started < 10
    assert res.exit_code == 2, res.output
    assert "exec_pre: command 'sleep 30; touch late' did not finish within 0.5s" in res.output
    assert "exec_timeout" in res.output and not (tmp_path / "x.txt").exists()
    time.sleep(0.2)
    assert not (tmp_path / "late").exists()


def test_the_folder_tree_is_the_architecture_no_module_over_500_lines() -> None:
    """Stage packages under src/gitops_render, and no module too long to be one concept."""
    src = PROJECT / "src" / "gitops_render"
    packages = sorted(p.parent.name for p in src.glob("*/__init__.py"))
    assert {"app", "core", "data", "render", "secrets", "settings", "validate", "write"} <= set(packages)
    long = {p.relative_to(src).as_posix(): n for p in src.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}
