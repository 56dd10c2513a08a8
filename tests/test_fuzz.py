"""Hardening: whatever an operator (or a cat on the keyboard) puts in cluster.yaml, a run ends
either in a valid render (exit 0) or in one clean error (exit 2) — never a traceback, never a
partial tree.

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitops_render.cli import cli

from conftest import copy_project_repo, make_age_key

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
    result = CliRunner().invoke(cli, ["init", "--root", str(root)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["render", "--root", str(root)])
    assert result.exit_code == 0, result.output
    base = yaml.safe_load((root / "cluster.yaml").read_text())
    return root, base


def _mutate(base: dict[str, Any], data: st.DataObject) -> str:
    doc = dict(base)
    keys = sorted(doc)
    for _ in range(data.draw(st.integers(min_value=0, max_value=4), label="mutations")):
        action = data.draw(st.sampled_from(["delete", "set", "add", "raw"]), label="action")
        if action == "delete" and keys:
            doc.pop(data.draw(st.sampled_from(keys), label="key"), None)
        elif action == "set" and keys:
            doc[data.draw(st.sampled_from(keys), label="key")] = data.draw(VALUES, label="value")
        elif action == "add":
            doc[data.draw(st.text(max_size=20), label="new key")] = data.draw(VALUES, label="value")
        elif action == "raw":
            return data.draw(RAW_ODDITIES, label="raw")
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError):
        return "a: 1\n"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cluster_yaml_renders_or_fails_cleanly(fuzz_repo: tuple[Path, dict[str, Any]], data: st.DataObject) -> None:
    root, base = fuzz_repo
    text = _mutate(base, data)
    (root / "cluster.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    before = _tree_digest(root)
    result = CliRunner().invoke(cli, ["render", "--root", str(root), "--quiet"])
    output = result.output
    assert "Traceback" not in output
    assert result.exit_code in (0, 2), (result.exit_code, output[-2000:], repr(result.exception))
    if result.exit_code == 2:
        assert output.startswith("error: "), output[:500]
        assert _tree_digest(root) == before, "a failed run changed the tree"
    assert not (root / ".gitops-render" / "journal.json").exists()
    leftovers = [p for p in root.rglob("*.gitops-render.tmp*")]
    assert not leftovers, leftovers
