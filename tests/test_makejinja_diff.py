"""Differential tests: makejinja 2.8.1 and gitops-render render the same trees identically.

Each case copies a fixture twice, runs the real makejinja (subprocess, cwd = copy A)
and gitops-render's library (root = copy B), and compares the output trees: file
set, bytes and permission bits (directory set too). Where makejinja is broken on
purpose-tested points, gitops-render's documented behaviour is tested instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from helpers_render import render_to_dir
from trees import snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "makejinja"

pytest.importorskip("makejinja", reason="the differential tests need makejinja 2.8.1")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKEJINJA_")}
    env.update(extra)
    return env


def _copy(case: str, dest: Path, executable: tuple[str, ...] = ()) -> Path:
    shutil.copytree(FIXTURES / case, dest)
    for rel in executable:
        os.chmod(dest / rel, 0o755)
    return dest


def _run_makejinja(cwd: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "makejinja", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# (case id, fixture, extra env, makejinja CLI args, gitops-render overrides (paths relative to copy B), executables)
CASES = [
    ("overlay", "overlay", {}, (), {}, ("templates/config/scripts/run.sh",)),
    ("plugin", "plugin", {}, (), {}, ()),
    ("undefined-default", "undefined", {"MAKEJINJA_UNDEFINED": "default"}, (), {}, ()),
    ("undefined-debug", "undefined", {"MAKEJINJA_UNDEFINED": "debug"}, (), {}, ()),
    ("undefined-chainable", "undefined", {"MAKEJINJA_UNDEFINED": "chainable"}, (), {}, ()),
    ("undefined-chainable-deep", "undefined_chain", {"MAKEJINJA_UNDEFINED": "chainable"}, (), {}, ()),
    ("whitespace-off-crlf", "whitespace", {}, (), {}, ()),
    ("whitespace-defaults", "whitespace2", {}, (), {}, ()),
    ("line-prefixes", "prefix", {}, (), {}, ()),
    ("keep-suffix-empty-metadata", "keep", {}, (), {}, ("templates/bin/tool.sh.jinja",)),
    ("no-suffix-file-input-include-patterns", "nosuffix", {}, (), {}, ()),
    ("force-false-keeps-existing", "noforce", {}, (), {}, ()),
    ("env-override-force", "noforce", {"MAKEJINJA_FORCE": "true"}, (), {}, ()),
    ("cli-file-data-single", "file_data", {}, ("--file-data", "sub/one.yaml.j2=fd/one.yaml"),
     {"file_data": {"sub/one.yaml.j2": ["fd/one.yaml"]}}, ()),
    ("cli-extension-and-data-var", "undefined", {}, ("-e", "jinja2.ext.do", "-D", "known=cli"),
     {"extensions": ["jinja2.ext.do"], "data_vars": {"known": "cli"}}, ()),
]


def _abs_overrides(overrides: dict, root: Path) -> dict:
    out = dict(overrides)
    if "file_data" in out:
        out["file_data"] = {k: [str(root / p) for p in v] for k, v in out["file_data"].items()}
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_output_as_makejinja(tmp_path: Path, case: tuple) -> None:
    _id, fixture, extra_env, mj_args, overrides, executables = case
    a = _copy(fixture, tmp_path / "a", executables)
    b = _copy(fixture, tmp_path / "b", executables)
    env = _clean_env(**extra_env)
    proc = _run_makejinja(a, env, mj_args)
    assert proc.returncode == 0, proc.stderr
    settings, _result = render_to_dir(b, environ=env, overrides=_abs_overrides(overrides, b))
    assert settings.compat == "makejinja"
    expected, actual = snapshot(a / "out"), snapshot(b / "out")
    assert sorted(actual) == sorted(expected)
    for rel, item in expected.items():
        assert actual[rel] == item, rel


def test_makejinja_settings_env_location(tmp_path: Path) -> None:
    """MAKEJINJA_SETTINGS names the file; its relative paths resolve against its directory."""
    a = _copy("overlay", tmp_path / "a" / "proj", ("templates/config/scripts/run.sh",))
    b = _copy("overlay", tmp_path / "b" / "proj", ("templates/config/scripts/run.sh",))
    for proj in (a, b):
        (proj / "makejinja.toml").rename(proj / "settings.toml")
    cwd_a = tmp_path / "a" / "elsewhere"
    cwd_a.mkdir()
    proc = _run_makejinja(cwd_a, _clean_env(MAKEJINJA_SETTINGS=str(a / "settings.toml")))
    assert proc.returncode == 0, proc.stderr
    render_to_dir(tmp_path / "b" / "elsewhere-root-without-config",
                  environ=_clean_env(MAKEJINJA_SETTINGS=str(b / "settings.toml")))
    assert snapshot(a / "out") == snapshot(b / "out")


# --------------------------------------------------------------------------- documented differences


def test_excluded_directory_excludes_contents(tmp_path: Path) -> None:
    """makejinja skips the directory entry, then crashes writing its files; gitops-render skips all."""
    a = _copy("overlay", tmp_path / "a", ("templates/config/scripts/run.sh",))
    b = _copy("overlay", tmp_path / "b", ("templates/config/scripts/run.sh",))
    for proj in (a, b):
        toml = proj / "makejinja.toml"
        toml.write_text(toml.read_text().replace('"excl-dir", "excl-dir/*"', '"excl-dir"'))
    proc = _run_makejinja(a, _clean_env())
    assert proc.returncode != 0 and "FileNotFoundError" in proc.stderr
    _s, result = render_to_dir(b, environ=_clean_env())
    assert not any(p.parts[0] == "excl-dir" for p in result.files)
    assert not (b / "out" / "excl-dir").exists()


def test_double_star_exclude_is_recursive(tmp_path: Path) -> None:
    b = _copy("overlay", tmp_path / "b", ("templates/config/scripts/run.sh",))
    toml = b / "makejinja.toml"
    toml.write_text(toml.read_text().replace('"excl-dir", "excl-dir/*"', '"excl-dir", "kubernetes/**/db.yaml.j2"'))
    _s, result = render_to_dir(b, environ=_clean_env())
    names = {p.as_posix() for p in result.files}
    assert "kubernetes/apps/db/db.yaml" not in names
    assert "kubernetes/apps/app.yaml" in names


def test_plugin_extensions_are_registered(tmp_path: Path) -> None:
    """makejinja drops the extensions a plugin returns ("unknown tag 'do'"); gitops-render registers them."""
    src = _copy("plugin", tmp_path / "b")
    (src / "scripts" / "extplugin.py").write_text(
        "import jinja2.ext\n\nclass ExtPlugin:\n    def extensions(self):\n        return [jinja2.ext.do]\n")
    toml = src / "makejinja.toml"
    toml.write_text(toml.read_text().replace('extensions = ["jinja2.ext.do", "jinja2.ext.loopcontrols"]',
                                             'extensions = ["jinja2.ext.loopcontrols"]')
                    .replace('loaders = ["plugin.SecondPlugin"]',
                             'loaders = ["plugin.SecondPlugin", "extplugin:ExtPlugin"]'))
    a = tmp_path / "a"
    shutil.copytree(src, a)
    proc = _run_makejinja(a, _clean_env())
    assert proc.returncode != 0 and "unknown tag 'do'" in proc.stderr
    _s, result = render_to_dir(src, environ=_clean_env())
    assert b"acc: [1]" in result.files[PurePosixPath("main.yaml")].content


def test_file_data_from_toml_with_several_files(tmp_path: Path) -> None:
    """gitops-render loads every file_data file listed in makejinja.toml in order, skipping
    missing/unsupported ones. makejinja 2.8.1 does the same with click >= 8.5; with older click
    its settings layer mangles the list into one bogus path and the data never loads."""
    a = _copy("file_data", tmp_path / "a")
    b = _copy("file_data", tmp_path / "b")
    assert _run_makejinja(a, _clean_env()).returncode == 0
    render_to_dir(b, environ=_clean_env())
    ours = (b / "out" / "sub" / "one.yaml").read_text()
    assert ours == "who: one\nshared: g\nextra: 42\n"
    assert (b / "out" / "two.yaml").read_text() == "who: global\nextra: none\n"
    theirs = (a / "out" / "sub" / "one.yaml").read_text()
    if theirs != "who: global\nshared: g\nextra: \n":  # not the old-click mangling: must agree
        assert theirs == ours
        assert (a / "out" / "two.yaml").read_text() == (b / "out" / "two.yaml").read_text()


def test_overlay_excluded_first_copy_uses_second_inputs_content(tmp_path: Path) -> None:
    """When input 1's copy of a path is excluded, input 2's file is rendered from input 2
    (makejinja loads it by name and renders input 1's excluded file instead)."""
    b = _copy("overlay", tmp_path / "b", ("templates/config/scripts/run.sh",))
    toml = b / "makejinja.toml"
    toml.write_text(toml.read_text().replace('"excl-dir", "excl-dir/*"',
                                             '"excl-dir", "overrides/kubernetes/apps/app.yaml.j2"'))
    _s, result = render_to_dir(b, environ=_clean_env())
    assert result.files[PurePosixPath("kubernetes/apps/app.yaml")].content == b"name: beta-config\n"
