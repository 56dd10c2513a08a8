"""render_tree: in-memory rendering, errors, caching, determinism."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import jinja2
import pytest

from gitops_render.core.errors import ConfigError, TemplateError
from gitops_render.render.bytecode import FingerprintedBytecodeCache
from gitops_render.render.engine import RenderedFile, render_tree
from gitops_render.render.environment import build_environment
from gitops_render.render.walk import ExcludeMatcher
from gitops_render.settings.config import load_settings

P = PurePosixPath


def _repo(tmp_path: Path, files: dict[str, str], extra: str = "") -> Path:
    root = tmp_path / "repo"
    for rel, text in files.items():
        path = root / "templates" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "gitops-render.toml").write_text(
        f'[gitops-render]\ninputs = ["templates"]\noutput = "out"\njinja_suffix = ".j2"\n{extra}')
    return root


def _render(root: Path, data: dict | None = None, environ: dict[str, str] | None = None, **kw):
    return render_tree(load_settings(root, environ=environ or {}), data or {}, **kw)


def test_renders_in_memory_only(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"a/b.yaml.j2": "v: #{ v }#\n", "c.txt": "copy {{ me }}\n"})
    result = _render(root, {"v": 1})
    assert result.files[P("a/b.yaml")] == RenderedFile(b"v: 1\n", None, root / "templates/a/b.yaml.j2", True)
    assert result.files[P("c.txt")].content == b"copy {{ me }}\n" and not result.files[P("c.txt")].template
    assert result.dirs == {P("a")}
    assert not (root / "out").exists()


def test_strict_undefined_names_variable_and_line(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"k/x.yaml.j2": "a: 1\nb: #{ cluster.name }#\n"})
    with pytest.raises(TemplateError) as err:
        _render(root, {"cluster": {}})
    e = err.value
    assert e.template == "templates/k/x.yaml.j2" and e.line == 2
    assert "has no attribute 'name'" in str(e) and "b: #{ cluster.name }#" in str(e)
    with pytest.raises(TemplateError, match="'missing' is undefined"):
        render_tree(load_settings(_repo(tmp_path / "2", {"x.j2": "#{ missing }#"}), environ={}), {})


def test_syntax_error_line(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.yaml.j2": "a: 1\n#% if %#\n"})
    with pytest.raises(TemplateError) as err:
        _render(root)
    assert err.value.line == 2 and "syntax error" in str(err.value)


def test_error_in_included_template_points_at_partial(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.yaml.j2": "#% include 'p/part.j2' %#\n", "p/part.j2": "ok\n#{ nope }#\n"},
                 extra='exclude_patterns = ["p"]\n')
    with pytest.raises(TemplateError) as err:
        _render(root)
    assert err.value.template == "templates/p/part.j2" and err.value.line == 2
    assert "while rendering templates/x.yaml.j2" in str(err.value)


def test_missing_include(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.yaml.j2": "a\n#% include 'nope.j2' %#\n"})
    with pytest.raises(TemplateError, match="template not found: nope.j2"):
        _render(root)


def test_excluded_dir_and_double_star(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"keep/a.yaml.j2": "a\n", "drop/deep/b.yaml.j2": "b\n",
                            "x/y/z/tmp.yaml.j2": "t\n", "x/keep.yaml.j2": "k\n"},
                 extra='exclude_patterns = ["drop", "x/**/tmp.yaml.j2"]\n')
    result = _render(root)
    assert set(result.files) == {P("keep/a.yaml"), P("x/keep.yaml")}
    assert result.dirs == {P("keep"), P("x")}


def test_exclude_matcher_matches_like_path_match() -> None:
    m = ExcludeMatcher(("*.partial.yaml.j2", "config/kubernetes/*", "/abs/x"))
    assert m.matches(P("/r/templates/config/kubernetes/app.yaml.j2"))
    assert not m.matches(P("/r/templates/config/kubernetes/apps/app.yaml.j2"))
    assert m.matches(P("/abs/x")) and not m.matches(P("/r/abs/x"))
    for path, pat in [("/a/b/c.txt", "b/*.txt"), ("/a/b/c.txt", "*.txt"), ("/a/b/c.txt", "a/*.txt")]:
        assert ExcludeMatcher((pat,)).matches(P(path)) == Path(path).match(pat)


def test_force_false_skips_existing(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"old.yaml.j2": "#{ undefined_but_never_rendered }#\n", "new.yaml.j2": "n\n"},
                 extra="force = false\n")
    (root / "out").mkdir()
    (root / "out" / "old.yaml").write_text("keep\n")
    result = _render(root)
    assert result.skipped_existing == [P("old.yaml")] and set(result.files) == {P("new.yaml")}


def test_modes(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"run.sh.j2": "echo #{ 1 }#\n", "plain.sh": "echo\n"})
    os.chmod(root / "templates/run.sh.j2", 0o750)
    os.chmod(root / "templates/plain.sh", 0o751)
    result = _render(root)
    assert result.files[P("run.sh")].mode is None and result.files[P("plain.sh")].mode == 0o751
    with_meta = render_tree(load_settings(root, environ={}, overrides={"copy_metadata": True}), {})
    assert with_meta.files[P("run.sh")].mode == 0o750


def test_deterministic(tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i}.yaml.j2": f"i: #{{ {i} }}#\nenv: #{{ data_key }}#\n" for i in range(60)}
    root = _repo(tmp_path, files)
    r1, r2 = _render(root, {"data_key": "x"}), _render(root, {"data_key": "x"})
    assert list(r1.files) == list(r2.files) == sorted(r1.files)
    assert r1.files == r2.files


def test_env_global_and_data_globals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GR_TEST_VAR", "hello")
    root = _repo(tmp_path, {"x.j2": "#{ env.GR_TEST_VAR }# #{ env }#\n"})
    out = _render(root, {"env": "shadowed-by-os-environ"}).files[P("x")].content
    assert out.startswith(b"hello environ(") or out.startswith(b"hello {")


def test_bytecode_cache_reused_and_invalidated(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.yaml.j2": "v: #{ v }#\n"})
    cache = tmp_path / "cache"
    assert _render(root, {"v": 1}, cache_dir=cache).files[P("x.yaml")].content == b"v: 1\n"
    entries = sorted(cache.iterdir())
    assert len(entries) == 1
    assert _render(root, {"v": 2}, cache_dir=cache).files[P("x.yaml")].content == b"v: 2\n"
    assert sorted(cache.iterdir()) == entries  # reused, same key
    (root / "templates/x.yaml.j2").write_text("w: #{ v }#\n")
    assert _render(root, {"v": 3}, cache_dir=cache).files[P("x.yaml")].content == b"w: 3\n"
    # a changed delimiter must not reuse code compiled with the old one
    s = load_settings(root, environ={}, overrides={"delimiter.variable_start": "[[", "delimiter.variable_end": "]]"})
    (root / "templates/x.yaml.j2").write_text("w: [[ v ]] #{ v }#\n")
    assert render_tree(s, {"v": 4}, cache_dir=cache).files[P("x.yaml")].content == b"w: 4 #{ v }#\n"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bytecode_cache_skips_compilation_on_second_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        jobs: str) -> None:
    """A cold run (serial, or forked compile workers) fills the cache: the warm run compiles nothing."""
    body = "".join(f"k{i}: #{{ v | default('x') }}#\n#% if v is defined %#\ny{i}\n#% endif %#\n" for i in range(5))
    root = _repo(tmp_path, {f"f{i}.yaml.j2": body for i in range(32)})
    cache = tmp_path / "cache"
    cold = _render(root, {"v": 1}, {"GITOPS_RENDER_JOBS": jobs}, cache_dir=cache)
    compiled: list[str] = []
    original = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, *a, **kw):  # type: ignore[no-untyped-def]
        compiled.append(name)
        return original(self, source, name, filename, *a, **kw)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    # serial, so that a compilation would happen in this process, where it is counted
    warm = _render(root, {"v": 1}, {"GITOPS_RENDER_JOBS": "1"}, cache_dir=cache)
    assert cold.files == warm.files and len(warm.files) == 32
    assert compiled == []
    shutil.rmtree(cache)  # and the counter does count: without the cache every template is compiled
    _render(root, {"v": 1}, {"GITOPS_RENDER_JOBS": "1"}, cache_dir=cache)
    assert len(compiled) >= 32


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_parallel_compilation_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: str) -> None:
    files = {f"d{i % 5}/f{i}.yaml.j2": f"#% import 'm.partial.j2' as m %#\nk: #{{ m.x({i}) }}# #{{ v }}#\n"
             for i in range(80)}
    files["m.partial.j2"] = "#% macro x(n) %#n-#{ n * 2 }##% endmacro %#"
    files["copy.txt"] = "plain\n"
    root = _repo(tmp_path, files, 'exclude_patterns = ["*.partial.j2"]\n')
    serial = _render(root, {"v": 7}, {"GITOPS_RENDER_JOBS": "1"})
    cache = tmp_path / "cache"
    parallel = _render(root, {"v": 7}, {"GITOPS_RENDER_JOBS": jobs}, cache_dir=cache)
    assert list(parallel.files) == list(serial.files) and parallel.files == serial.files
    assert parallel.files[P("d3/f13.yaml")].content == b"k: n-26 7\n"
    with open(cache / "templates.pack", "rb") as pack:
        packed = FingerprintedBytecodeCache.read_index(pack.fileno())
    assert len(packed) == 81  # every template and the partial, cached for the next run
    assert _render(root, {"v": 7}, cache_dir=cache).files == serial.files


def test_compiled_templates_are_read_per_entry_and_a_damaged_pack_is_compiled_again(tmp_path: Path) -> None:
    """The pack is an index plus entries: a run reads only what it renders; a damaged entry, a
    truncated pack or a failed run never changes what is rendered, and leaves no temporary file."""
    files = {f"f{i:02d}.yaml.j2": f"k: #{{ {i} * v }}#\n" for i in range(60)}
    root = _repo(tmp_path, files)
    cache = tmp_path / "cache"
    first = _render(root, {"v": 2}, {"GITOPS_RENDER_JOBS": "2"}, cache_dir=cache)
    pack = cache / "templates.pack"
    with open(pack, "rb") as fh:
        index = FingerprintedBytecodeCache.read_index(fh.fileno())
    assert len(index) == 60
    _checksum, offset, length = next(iter(index.values()))
    raw = bytearray(pack.read_bytes())
    raw[offset:offset + length] = b"\xff" * length  # one damaged entry
    pack.write_bytes(bytes(raw))
    assert _render(root, {"v": 2}, cache_dir=cache).files == first.files
    pack.write_bytes(pack.read_bytes()[:100])  # a truncated pack: everything compiled again
    assert _render(root, {"v": 2}, cache_dir=cache).files == first.files
    (root / "templates/f07.yaml.j2").write_text("#% if %#\n")
    with pytest.raises(TemplateError):
        _render(root, {"v": 2}, cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == ["templates.pack"]  # no spool left behind
    (root / "templates/f07.yaml.j2").write_text(files["f07.yaml.j2"])
    assert _render(root, {"v": 3}, cache_dir=cache).files[P("f10.yaml")].content == b"k: 30\n"


def test_parallel_compilation_reports_errors_like_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"f{i:02d}.yaml.j2": f"k: #{{ {i} }}#\n" for i in range(70)}
    files["f33.yaml.j2"] = "a: 1\n#% if %#\n"
    root = _repo(tmp_path, files)
    with pytest.raises(TemplateError) as err:
        _render(root, environ={"GITOPS_RENDER_JOBS": "2"}, cache_dir=tmp_path / "cache")
    assert err.value.template == "templates/f33.yaml.j2" and err.value.line == 2


def test_empty_and_keep_empty(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"e/empty.yaml.j2": "#% if false %#x#% endif %#\n  \n", "x.j2": "x\n"})
    result = _render(root)
    assert result.skipped_empty == [P("e/empty.yaml")] and result.dirs == set()
    kept = render_tree(load_settings(root, environ={}, overrides={"keep_empty": True}), {})
    assert P("e/empty.yaml") in kept.files and kept.dirs == {P("e")}


def test_build_environment_matches_settings(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.j2": ""}, extra='extensions = ["jinja2.ext.do"]\n')
    env = build_environment(load_settings(root, environ={}), {"a": 1})
    assert env.variable_start_string == "#{" and env.trim_blocks and env.keep_trailing_newline
    assert env.globals["a"] == 1 and "jinja2.ext.ExprStmtExtension" in env.extensions


def test_bad_extension_is_config_error(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.j2": ""}, extra='extensions = ["jinja2.ext.nope"]\n')
    with pytest.raises(ConfigError, match="extensions"):
        _render(root)


def test_output_must_be_directory(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"x.j2": ""})
    (root / "out").write_text("a file")
    with pytest.raises(ConfigError, match="is a file"):
        _render(root)
