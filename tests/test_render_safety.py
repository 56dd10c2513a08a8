"""Templates and plugins are the operator's code, but they run next to the age key: whatever they do,
the run ends with one clear message (exit 2, nothing written) and never hands out a file outside
the template inputs.

Regression tests for issue 12 findings 10 (a template including ``age.key`` through the internal
loader name), 15 (a plugin raising ``SystemExit``/``BaseException``) and 16 (an endless loop in a
template), and issue 11 item 4 (a plugin that needs another Python or a package the tool's
environment lacks) under the real interpreters 3.11, 3.12 and 3.13.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import PROJECT

from gitops_render.cli import cli

KEY_MATERIAL = "AGE-SECRET-KEY-1QQQTESTKEYMATERIALNEVERPRINTED"
PYENV = Path.home() / ".pyenv" / "versions"


def make_repo(root: Path, template: str, plugin: str | None = None, extra_settings: str = "") -> Path:
    """A small gitops-render repo: one template under templates/config, age.key next to it, out/ as output."""
    (root / "templates" / "config").mkdir(parents=True)
    (root / "age.key").write_text(f"# created: test\n{KEY_MATERIAL}\n")
    (root / "cluster.yaml").write_text("name: demo\n")
    (root / "templates" / "config" / "x.yaml.j2").write_text(textwrap.dedent(template))
    settings = '[gitops-render]\ninputs = ["templates/config"]\noutput = "out"\ndata = ["cluster.yaml"]\n'
    if plugin is not None:
        (root / "scripts").mkdir()
        (root / "scripts" / "plugin.py").write_text(textwrap.dedent(plugin))
        settings += 'import_paths = ["scripts"]\nplugins = ["plugin:Plugin"]\n'
    (root / "gitops-render.toml").write_text(settings + extra_settings)
    return root


def render(root: Path) -> Result:
    return CliRunner().invoke(cli, ["render", "--root", str(root)], catch_exceptions=False)


def written_outputs(root: Path) -> list[str]:
    out = root / "out"
    return sorted(p.relative_to(root).as_posix() for p in out.rglob("*")) if out.exists() else []


def files_holding(root: Path, needle: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != "age.key" and needle.encode() in p.read_bytes())


# --------------------------------------------------------------------------- 12.10: no file outside the inputs


@pytest.mark.parametrize("name", [
    "\\x00rooted\\x000/../../age.key",       # the internal name of the walk, pointing up
    "\\x00rooted\\x000/../../../r/age.key",
    "\\x00rooted\\x009/x.yaml.j2",           # an input that does not exist
    "\\x00rooted\\x00-1/x.yaml.j2",
    "../../age.key",                         # Jinja's own loader
    "/../../age.key",
])
def test_finding_12_10_template_cannot_include_the_age_key(tmp_path: Path, name: str) -> None:
    root = make_repo(tmp_path / "r", f'a: #{{ name }}#\nkey: |\n  #% include "{name}" %#\n')
    res = render(root)
    assert res.exit_code == 2, res.output
    assert "template not found" in res.output and "x.yaml.j2:3" in res.output
    assert KEY_MATERIAL not in res.output
    assert written_outputs(root) == []
    assert files_holding(root, KEY_MATERIAL) == []


def test_finding_12_10_symlinked_directory_inside_an_input_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", 'a: #{ name }#\n#% include "up/age.key" %#\n')
    (root / "templates" / "config" / "up").symlink_to(root)
    res = render(root)
    assert res.exit_code == 2, res.output
    assert "outside the template inputs" in res.output
    assert KEY_MATERIAL not in res.output and written_outputs(root) == []


def test_includes_inside_the_inputs_still_work(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", 'a: #{ name }#\n#% include "./parts//part.yaml.j2" %#\n')
    (root / "templates" / "config" / "parts").mkdir()
    (root / "templates" / "config" / "parts" / "part.yaml.j2").write_text("b: included\n")
    res = render(root)
    assert res.exit_code == 0, res.output
    assert (root / "out" / "x.yaml").read_text() == "a: demo\nb: included\n"


# --------------------------------------------------------------------------- 12.15: plugins ending the process


PLUGIN_EXITS = {
    "import": "raise SystemExit(0)\nclass Plugin:\n    pass\n",
    "constructor": "class Plugin:\n    def __init__(self):\n        raise SystemExit(0)\n",
    "data hook": "class Plugin:\n    def data(self):\n        raise SystemExit(0)\n",
    "path filter": ("class Plugin:\n    def path_filters(self):\n        return [self.keep]\n"
                    "    def keep(self, path):\n        raise SystemExit(0)\n"),
    "filter while rendering": ("def boom(value):\n    raise SystemExit(0)\n"
                               "class Plugin:\n    def filters(self):\n        return [boom]\n"),
    "BaseException subclass": ("class Stop(BaseException):\n    pass\n"
                               "class Plugin:\n    def data(self):\n        raise Stop('plugin gave up')\n"),
}


@pytest.mark.parametrize("where", list(PLUGIN_EXITS))
def test_finding_12_15_plugin_ending_the_process_is_one_error_exit_2(tmp_path: Path, where: str) -> None:
    template = "a: #{ name | boom }#\n" if where == "filter while rendering" else "a: #{ name }#\n"
    root = make_repo(tmp_path / "r", template, plugin=PLUGIN_EXITS[where])
    res = render(root)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert ("SystemExit" in res.output) or ("Stop: plugin gave up" in res.output)
    assert "plugin.py" in res.output
    assert written_outputs(root) == []


# --------------------------------------------------------------------------- 12.16: endless loops


def gitops_render(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real command in its own process: a hang fails the test instead of hanging the suite."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    return subprocess.run([sys.executable, "-m", "gitops_render", *args, "--root", str(root)],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)


@pytest.mark.parametrize("body", [
    "#% for i in range(10 ** 12) %##% endfor %#\n",
    "#{ name | forever }#\n",
], ids=["template loop", "plugin filter that never returns"])
def test_finding_12_16_endless_template_stops_at_the_time_limit(tmp_path: Path, body: str) -> None:
    plugin = ("def forever(v):\n    while True:\n        pass\n"
              "class Plugin:\n    def filters(self):\n        return [forever]\n")
    root = make_repo(tmp_path / "r", "a: #{ name }#\n" + body, plugin=plugin,
                     extra_settings="template_timeout = 1\n")
    res = gitops_render(root, "render", timeout=30)
    assert res.returncode == 2, res.stderr
    assert "x.yaml.j2" in res.stderr and "did not finish within 1 s" in res.stderr
    assert "template_timeout" in res.stderr and "Traceback" not in res.stderr
    assert written_outputs(root) == []


def test_template_timeout_is_a_checked_setting(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", "a: #{ name }#\n", extra_settings='template_timeout = "soon"\n')
    res = render(root)
    assert res.exit_code == 2
    assert "template_timeout: expected a positive number" in res.output


# --------------------------------------------------------------------------- 11.4: the plugin's interpreter


def interpreter(version: str) -> list[str]:
    """Python ``version`` (3.11 is this venv's; 3.12/3.13 from pyenv, borrowing this venv's pure-Python packages)."""
    if version == "3.11":
        return [sys.executable]
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    assert found, f"Python {version} is not installed under {PYENV} (the machines have it)"
    return [str(found[-1])]


def run_under(version: str, root: Path) -> subprocess.CompletedProcess[str]:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT / "src"), site]))
    return subprocess.run([*interpreter(version), "-m", "gitops_render", "render", "--root", str(root)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


TYPE_ALIAS_PLUGIN = "type Port = int\nclass Plugin:\n    def data(self):\n        return {'port': 80}\n"


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_plugin_needing_python_3_12_names_the_interpreter(tmp_path: Path, version: str) -> None:
    root = make_repo(tmp_path / "r", "port: #{ port }#\n", plugin=TYPE_ALIAS_PLUGIN)
    res = run_under(version, root)
    if version == "3.11":
        assert res.returncode == 2, res.stderr
        assert "SyntaxError" in res.stderr and "plugin.py:1" in res.stderr
        assert f"{sys.executable} (Python 3.11." in res.stderr
        assert "pipx install --python python3.12 gitops-render" in res.stderr
        assert written_outputs(root) == []
    else:
        assert res.returncode == 0, res.stderr
        assert (root / "out" / "x.yaml").read_text() == "port: 80\n"


@pytest.mark.parametrize("version", ["3.11", "3.13"])
def test_plugin_missing_a_package_names_the_package_and_the_fix(tmp_path: Path, version: str) -> None:
    plugin = "import pydantic_settings_for_test\nclass Plugin:\n    pass\n"
    root = make_repo(tmp_path / "r", "a: #{ name }#\n", plugin=plugin)
    res = run_under(version, root)
    assert res.returncode == 2, res.stderr
    assert "No module named 'pydantic_settings_for_test'" in res.stderr
    assert f"(Python {version}." in res.stderr
    for fix in ("pipx inject gitops-render pydantic_settings_for_test",
                "uv tool install gitops-render --with pydantic_settings_for_test",
                "-m pip install pydantic_settings_for_test"):
        assert fix in res.stderr
    assert written_outputs(root) == []


def test_missing_plugin_module_itself_still_points_at_import_paths(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", "a: #{ name }#\n", plugin="class Plugin:\n    pass\n")
    (root / "scripts" / "plugin.py").rename(root / "scripts" / "other.py")
    settings = root / "gitops-render.toml"  # a module name no other test can have made importable
    settings.write_text(settings.read_text().replace('"plugin:Plugin"', '"gr_plugin_that_is_nowhere:Plugin"'))
    res = render(root)
    assert res.exit_code == 2
    assert "import_paths" in res.output and "pipx" not in res.output
