"""Hardening: whatever an operator (or a cat on the keyboard) puts in cluster.yaml, a run ends
either in a valid render (exit 0) or in one clean error (exit 2) — never a traceback, never a
partial tree.

Documents are mutations of a real, valid cluster.yaml: keys deleted, set to values of the wrong
type (huge, unicode, deeply nested), unknown keys added, and hand-written YAML spliced in (anchors,
aliases, merge keys, tags, yes/no/on/off, tabs, 5 000-deep nesting, BOM, NUL, broken syntax).

The number of examples comes from ``GITOPS_RENDER_FUZZ_EXAMPLES`` (CI: 1000).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import copy_project_repo, make_age_key
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gitops_render.cli import cli

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("GITOPS_RENDER_FUZZ_EXAMPLES", "1000"))

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF), max_size=20),
    st.sampled_from(["yes", "no", "on", "off", "y", "n", "~", "null", "0x1F", "1e3", "sk-", "true", "False"]),
    st.builds(lambda n: "x" * n, st.integers(min_value=1000, max_value=200_000)),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)

RAW_ODDITIES = st.sampled_from([
    "a: &x {b: 1}\nc: *x\n",
    "base: &b {litellm_enabled: true}\n<<: *b\n",
    "litellm_enabled: yes\n",
    "litellm_enabled: on\n",
    "x: !!binary aGVsbG8=\n",
    "x: !!python/name:os.system\n",
    "x: !custom tag\n",
    "\tlitellm_enabled: true\n",
    "litellm_enabled: true\nlitellm_enabled: false\n",
    "? [a, b]\n: c\n",
    "---\n...\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: " + "[" * 300 + "]" * 300 + "\n",
    "lol: &a [1,1,1,1,1,1,1,1,1]\nlol2: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nlol3: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "lol4: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\nlol5: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
    "\ufeffa: 1\n",
    "a: 1\x00\n",
    "",
])


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith((".gitops-render/cache", "cluster.yaml", "templates", "schemas")) or not p.is_file():
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def fuzz_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = copy_project_repo(tmp_path_factory.mktemp("fuzz") / "repo")
    make_age_key(root / "age.key")
    with pytest.MonkeyPatch.context() as mp:
        # the template set's age_key() reads SOPS_AGE_KEY_FILE, else ./age.key (operators run from the repo)
        mp.setenv("SOPS_AGE_KEY_FILE", str(root / "age.key"))
        result = CliRunner().invoke(cli, ["init", "--root", str(root)])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(cli, ["render", "--root", str(root)])
        assert result.exit_code == 0, result.output
    base = yaml.safe_load((root / "cluster.yaml").read_text())
    return root, base


# YAML spelled by hand: spliced into an otherwise valid document (a key is replaced by it or
# it is appended), so the oddity meets the schema and the templates, not only the parser.
RAW_VALUES = st.sampled_from([
    "yes", "no", "on", "off", "Yes", "OFF", "y", "n", "~", "null", "NULL", ".inf", "-.nan", "0o17", "0x1F",
    "1_000", "1e400", "12:30:00", "2001-12-14t21:59:43.10-05:00", "'yes'", '"on"', "!!str 1", "!!int '7'",
    "!!float 1", "!!bool 'maybe'", "!!binary aGVsbG8=", "!!python/object:os.system {}", "!custom tag",
    "!!set {a, b}", "!!omap [a: 1]", "*undefined_alias", "&anchor 3", "|\n  block\n  text",
    ">-\n  folded", "[1, 2", "{a: 1", "'unterminated", "\t1", "\"\\x00\"", "\"\\ud800\"",
])


def _splice(text: str, data: st.DataObject, keys: list[str]) -> str:
    kind = data.draw(st.sampled_from(["value", "anchor", "merge", "tab", "deep", "append", "bom"]), label="splice")
    key = data.draw(st.sampled_from(keys), label="splice key") if keys else "x"
    if kind == "value":
        return text + f"\n{key}: {data.draw(RAW_VALUES, label='raw value')}\n"
    if kind == "anchor":  # define once, use twice: aliases of a whole mapping
        return text + f"\n_shared: &shared {{{key}: 1}}\n_copy: *shared\n"
    if kind == "merge":  # merge key into the top level (<< duplicates / overrides real keys)
        return f"_defaults: &d {{{key}: on, litellm_replicas: '3'}}\n<<: *d\n" + text
    if kind == "tab":  # a tab used as indentation
        return text.replace("\n", "\n\t", data.draw(st.integers(1, 3), label="tabs"))
    if kind == "deep":
        depth = data.draw(st.sampled_from([10, 100, 1000, 5000]), label="depth")
        shape = data.draw(st.sampled_from(["flow-list", "flow-map", "block-map"]), label="shape")
        if shape == "flow-list":
            deep = "[" * depth + "]" * depth
        elif shape == "flow-map":
            deep = "{a: " * depth + "1" + "}" * depth
        else:
            deep = "".join("\n" + "  " * (i + 1) + "a:" for i in range(min(depth, 1000))) + " 1"
        return text + f"\n{key}: {deep}\n"
    if kind == "bom":
        return "\ufeff" + text
    return text + data.draw(RAW_ODDITIES, label="appended")


def _mutate(base: dict[str, Any], data: st.DataObject) -> str:
    doc = dict(base)
    keys = sorted(doc)
    for _ in range(data.draw(st.integers(min_value=0, max_value=4), label="mutations")):
        action = data.draw(st.sampled_from(["delete", "set", "add", "raw", "splice"]), label="action")
        if action == "delete" and keys:
            doc.pop(data.draw(st.sampled_from(keys), label="key"), None)
        elif action == "set" and keys:
            doc[data.draw(st.sampled_from(keys), label="key")] = data.draw(VALUES, label="value")
        elif action == "add":
            doc[data.draw(st.text(max_size=20), label="new key")] = data.draw(VALUES, label="value")
        elif action == "raw":
            return data.draw(RAW_ODDITIES, label="raw")
        elif action == "splice":
            try:
                text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
            except (yaml.YAMLError, ValueError):
                text = "a: 1\n"
            return _splice(text, data, keys)
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError):
        return "a: 1\n"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cluster_yaml_renders_or_fails_cleanly(fuzz_repo: tuple[Path, dict[str, Any]], data: st.DataObject,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root, base = fuzz_repo
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(root / "age.key"))
    text = _mutate(base, data)
    (root / "cluster.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    before = _tree_digest(root)
    result = CliRunner().invoke(cli, ["render", "--root", str(root), "--quiet"])
    output = result.output
    event(f"exit {result.exit_code}")
    assert "Traceback" not in output
    assert result.exit_code in (0, 2), (result.exit_code, output[-2000:], repr(result.exception))
    if result.exit_code == 2:
        assert output.startswith("error: "), output[:500]
        assert _tree_digest(root) == before, "a failed run changed the tree"
    assert not (root / ".gitops-render" / "journal.json").exists()
    leftovers = [p for p in root.rglob("*.gitops-render.tmp*")]
    assert not leftovers, leftovers
