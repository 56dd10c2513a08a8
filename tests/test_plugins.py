"""Plugin loading: makejinja's API, registered extensions, errors, sys.path hygiene, shim."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from gitops_render.core.errors import PluginError, TemplateError
from gitops_render.render.engine import render_tree
from gitops_render.render.plugins import plugin_import_paths
from gitops_render.settings.config import load_settings


def _repo(tmp_path: Path, plugin_src: str, template: str = "x: #{ value }#\n",
          plugins: str = '["plugin:Plugin"]', name: str = "repo") -> Path:
    root = tmp_path / name
    (root / "scripts").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "scripts" / "plugin.py").write_text(textwrap.dedent(plugin_src))
    (root / "templates" / "x.yaml.j2").write_text(template)
    (root / "gitops-render.toml").write_text(
        f'[gitops-render]\ninputs = ["templates"]\noutput = "out"\njinja_suffix = ".j2"\n'
        f'import_paths = ["scripts"]\nplugins = {plugins}\n')
    return root


def _render(root: Path, data: dict | None = None):
    return render_tree(load_settings(root, environ={}), data or {})


def test_hooks_ctor_kwargs_and_order(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        calls = []
        class Plugin:
            def __init__(self, config, env, data):
                self.config, self.env, self.d = config, env, data
                calls.append("init")
            def globals(self): calls.append("globals"); return []
            def functions(self): calls.append("functions"); return [self.fn]
            def data(self): calls.append("data"); return {"value": self.d["n"] * 2, "calls": calls}
            def extensions(self): calls.append("extensions"); return []
            def filters(self): calls.append("filters"); return []
            def tests(self): calls.append("tests"); return []
            def policies(self): calls.append("policies"); return {}
            def path_filters(self): calls.append("path_filters"); return []
            def fn(self): return type(self.config).__name__
        """, template="x: #{ value }# #{ fn() }# #{ calls | join(',') }#\n")
    result = _render(root, {"n": 21})
    assert result.files[PurePosixPath("x.yaml")].content == (
        b"x: 42 Settings init,globals,functions,data,extensions,filters,tests,policies,path_filters\n")
    assert len(result.plugins) == 1


def test_caller_data_is_not_mutated(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        class Plugin:
            def __init__(self, data): data["nested"]["added"] = 1; self.d = data
            def data(self): return {"value": self.d["nested"]["added"]}
        """)
    data = {"nested": {}}
    assert _render(root, data).files[PurePosixPath("x.yaml")].content == b"x: 1\n"
    assert data == {"nested": {}}


def test_missing_plugin_module(tmp_path: Path) -> None:
    root = _repo(tmp_path, "class Plugin: pass\n", plugins='["nothere:Plugin"]')
    with pytest.raises(PluginError) as err:
        _render(root)
    assert "'nothere:Plugin'" in str(err.value) and "cannot be imported" in str(err.value)
    assert "import_paths" in str(err.value)


def test_missing_class(tmp_path: Path) -> None:
    root = _repo(tmp_path, "class Other: pass\n")
    with pytest.raises(PluginError, match="class not found"):
        _render(root)


def test_error_in_hook_names_plugin_file_and_line(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        class Plugin:
            def data(self):
                d = {}
                return d["boom"]
        """)
    with pytest.raises(PluginError) as err:
        _render(root)
    msg = str(err.value)
    assert "plugin 'plugin:Plugin': data() failed: KeyError: 'boom'" in msg
    assert f"{root / 'scripts' / 'plugin.py'}:5" in msg


def test_syntax_error_in_plugin(tmp_path: Path) -> None:
    root = _repo(tmp_path, "class Plugin:\n    def data(self) return {}\n")
    with pytest.raises(PluginError, match=r"plugin\.py:2"):
        _render(root)


def test_constructor_with_unknown_parameter(tmp_path: Path) -> None:
    root = _repo(tmp_path, "class Plugin:\n    def __init__(self, settings):\n        pass\n")
    with pytest.raises(PluginError, match="constructor failed") as err:
        _render(root)
    assert "env, environment, data and config" in str(err.value)


def test_exception_in_filter_is_template_error(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        def explode(v):
            raise ValueError("bad " + str(v))
        class Plugin:
            def filters(self): return [explode]
        """, template="a: 1\nb: #{ 3 | explode }#\n")
    with pytest.raises(TemplateError) as err:
        _render(root)
    msg = str(err.value)
    assert "templates/x.yaml.j2:2" in msg and "ValueError: bad 3" in msg and "plugin.py:3" in msg


def test_plugin_extensions_registered(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        import jinja2.ext
        class Plugin:
            def extensions(self): return [jinja2.ext.do]
        """, template="#% set l = [] %#\n#% do l.append(7) %#\nl: #{ l }#\n")
    assert _render(root).files[PurePosixPath("x.yaml")].content == b"l: [7]\n"


def test_sys_path_restored_and_modules_forgotten(tmp_path: Path) -> None:
    src = 'class Plugin:\n    def data(self): return {"value": "%s"}\n'
    one = _repo(tmp_path, src % "one", name="one")
    two = _repo(tmp_path, src % "two", name="two")
    before = list(sys.path)
    earlier = sys.modules.get("plugin")  # another test may have imported a 'plugin' module before
    assert _render(one).files[PurePosixPath("x.yaml")].content == b"x: one\n"
    assert _render(two).files[PurePosixPath("x.yaml")].content == b"x: two\n"
    assert sys.path == before and sys.modules.get("plugin") is earlier


def test_import_paths_are_prepended(tmp_path: Path) -> None:
    with plugin_import_paths([tmp_path]):
        assert sys.path[0] == str(tmp_path.resolve())
    assert str(tmp_path.resolve()) not in sys.path


def test_path_filter_rejecting_directory_excludes_contents(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        class Plugin:
            def data(self): return {"value": 1}
            def path_filters(self): return [lambda p: p.name != "private"]
        """)
    (root / "templates" / "private").mkdir()
    (root / "templates" / "private" / "s.yaml.j2").write_text("s: 1\n")
    result = _render(root)
    assert set(result.files) == {PurePosixPath("x.yaml")}


SHIM_SCRIPT = r"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "makejinja" or name.startswith("makejinja."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from pathlib import Path
from gitops_render.settings.config import load_settings
from gitops_render.render.engine import render_tree
import gitops_render.render.plugins as p
root = Path(sys.argv[1])
res = render_tree(load_settings(root, environ={}), {})
print(res.files[__import__("pathlib").PurePosixPath("x.yaml")].content.decode(), end="")
print(sys.modules["makejinja"].__name__)
"""


def test_shim_when_makejinja_missing(tmp_path: Path) -> None:
    root = _repo(tmp_path, """
        import makejinja
        from makejinja.plugin import Plugin as Base, Data, Filters, PathFilters
        from makejinja.config import Config
        import makejinja.loader
        class Plugin(Base):
            def __init__(self, data: Data, config: Config):
                self.config = config
            def data(self) -> Data:
                return {"value": len(self.config.inputs)}
        """)
    proc = subprocess.run([sys.executable, "-c", SHIM_SCRIPT, str(root)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "x: 1\ngitops_render.render._makejinja_shim\n"


def test_real_makejinja_preferred_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("makejinja")
    root = _repo(tmp_path, """
        import makejinja
        from makejinja.plugin import Plugin as Base
        class Plugin(Base):
            def data(self): return {"value": makejinja.__name__ + ":" + str(hasattr(makejinja, "makejinja"))}
        """)
    assert _render(root).files[PurePosixPath("x.yaml")].content == b"x: makejinja:True\n"
