"""Drop-in on the real upstream repo: onedr0p/cluster-template, unmodified.

The snapshot in ``shared/real-repos/`` (its README lists the facts used here) is
unpacked once per module, with the inputs its own CI creates before rendering:
``age.key`` (age-keygen), ``deploy.key`` (ssh-keygen, ed25519), ``flux-webhook-token.txt``
and ``cloudflare-tunnel.json``. Then, as an operator who swaps ``just configure`` for
``gitops-render configure`` in that checkout would see it:

* for each of the 8 valid configs (``.github/template-tests/valid/*.toml`` copied to
  ``cluster.toml``): ``gitops-render render`` writes what makejinja 2.9.1 writes (every
  file, every file mode; secrets compared by their decrypted documents, since makejinja
  leaves them plaintext), and ``configure`` then ``check`` exit 0 with no finding
  against the offline schemas;
* for each of the 20 invalid configs: exit 2, the plugin's own message (what
  ``template/scripts/validate.py`` prints for that file), and nothing written.

gitops-render runs under Python 3.13 with pydantic 2.13.4 (the plugin needs ``type X =``
statements and pydantic); makejinja 2.9.1 runs in the same kind of environment the repo's
``uv run`` gives it. Both come from ``scripts/install-tools.sh --test``. Select these
tests with ``-m real_repo``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT, SHARED, make_age_key
from operator_repo import STATE, changed_paths, cli_env, decrypted_docs, docs, fail_unless, snapshot

pytestmark = pytest.mark.real_repo

SNAPSHOT = SHARED / "real-repos" / "onedr0p-cluster-template-ae73246.tar.gz"
PY313 = PROJECT / ".venv-py313" / "bin" / "python"
PY312 = PROJECT / ".venv-py312" / "bin" / "python"
MAKEJINJA_PY = PROJECT / ".venv-makejinja" / "bin" / "python"
TESTS_DIR = ".github/template-tests"
VALID = ("public", "private", "selfhosted", "no-webhook", "direct", "internal", "multi-controller", "single-node")
INVALID = (
    "bad-bgp-asn", "bad-mac-address", "bad-repo-url", "bad-vlan-tag", "duplicate-gateway-addrs",
    "duplicate-node-names", "gateway-node-collision", "missing-dns-token", "missing-external-gateway",
    "missing-known-hosts", "missing-schematic", "nested-cidr-overlap", "node-addr-outside-cidr",
    "node-uses-gateway-addr", "non-canonical-cidr", "overlapping-cidrs", "partial-bgp", "reserved-node-name",
    "tiny-svc-cidr", "tunnel-without-dns",
)
#: the summary line of a validation that found something (cli.py)
FINDINGS = re.compile(r"validation: \d+ finding")
#: the directories cluster-template's own encrypt-secrets step searches for ``*.sops.*``
SECRET_ROOTS = ("bootstrap", "kubernetes", "talos")


def _interpreter(path: Path) -> str:
    assert path.is_file(), f"{path} is missing: run scripts/install-tools.sh --test"
    return str(path)


def _env() -> dict[str, str]:
    """The operator's shell: offline schemas, no personal sops keys, this checkout's code first."""
    env = cli_env()
    env["PYTHONPATH"] = str(PROJECT / "src")
    for name in [k for k in env if k.startswith("MAKEJINJA_")]:
        del env[name]
    return env


def gitops_render(repo: Path, *args: str, python: Path = PY313) -> subprocess.CompletedProcess[str]:
    """``gitops-render ARGS`` from the repo root, under the given interpreter."""
    return subprocess.run([_interpreter(python), "-m", "gitops_render", *args], cwd=repo, env=_env(),
                          capture_output=True, text=True, timeout=300)


def makejinja(repo: Path) -> subprocess.CompletedProcess[str]:
    """What ``just template render`` runs: makejinja with the repo's makejinja.toml, from the repo root."""
    env = _env()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([_interpreter(MAKEJINJA_PY), "-m", "makejinja", "-q"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def _is_secret(rel: str) -> bool:
    """``find bootstrap kubernetes talos -name '*.sops.*'``, as the repo's encrypt-secrets does."""
    top, _, rest = rel.partition("/")
    return top in SECRET_ROOTS and bool(rest) and ".sops." in rel.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- the checkout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The snapshot unpacked with its modes (a checkout under umask 002), plus the inputs its CI makes."""
    assert SNAPSHOT.is_file(), f"snapshot not found: {SNAPSHOT} (set GITOPS_RENDER_SHARED)"
    dest = tmp_path_factory.mktemp("real")
    with tarfile.open(SNAPSHOT) as tar:
        tar.extractall(dest, filter="fully_trusted")  # test data; keep its modes
    repo = dest / "cluster-template"
    make_age_key(repo / "age.key")
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-C", "deploy-key", "-f", str(repo / "deploy.key"), "-q", "-P", ""],
                   check=True, capture_output=True, timeout=60)
    (repo / "flux-webhook-token.txt").write_text(secrets.token_hex(16) + "\n")
    (repo / "cloudflare-tunnel.json").write_text('{"AccountTag":"fake","TunnelSecret":"fake","TunnelID":"fake"}\n')
    return repo


def repo_with(checkout: Path, dest: Path, fixture: str) -> Path:
    """A copy of the checkout with ``fixture`` (e.g. ``valid/public``) as its cluster.toml."""
    shutil.copytree(checkout, dest, symlinks=True)
    shutil.copy2(checkout / TESTS_DIR / f"{fixture}.toml", dest / "cluster.toml")
    return dest


def test_the_snapshot_has_exactly_the_configs_these_tests_cover(checkout: Path) -> None:
    found = {kind: sorted(p.stem for p in (checkout / TESTS_DIR / kind).glob("*.toml"))
             for kind in ("valid", "invalid")}
    assert found == {"valid": sorted(VALID), "invalid": sorted(INVALID)}


# --------------------------------------------------------------------------- render = makejinja


@dataclass(frozen=True)
class Rendered:
    makejinja: Path
    ours: Path
    result: subprocess.CompletedProcess[str]


_RENDERED: dict[tuple[str, str], Rendered] = {}


@pytest.fixture(scope="module")
def rendered(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``rendered(config, python)``: the config rendered once by makejinja and once by gitops-render."""

    def get(config: str, python: Path = PY313) -> Rendered:
        key = (config, str(python))
        if key not in _RENDERED:
            base = tmp_path_factory.mktemp(f"render-{config}")
            theirs = repo_with(checkout, base / "makejinja", f"valid/{config}")
            proc = makejinja(theirs)
            assert proc.returncode == 0, f"makejinja failed on {config}:\n{proc.stderr[-3000:]}"
            ours = repo_with(checkout, base / "gitops-render", f"valid/{config}")
            _RENDERED[key] = Rendered(theirs, ours, gitops_render(ours, "render", "--yes", python=python))
        return _RENDERED[key]

    return get


def _state(rel: str) -> bool:
    """gitops-render's own state directory (makejinja has none)."""
    return rel == STATE or rel.startswith(f"{STATE}/")


def assert_same_tree(theirs: Path, ours: Path) -> None:
    """Same files and file modes as makejinja's output; secrets encrypted, with the same documents."""
    a = {k: v[1:] for k, v in snapshot(theirs).items() if v[0] != "dir" and not _state(k)}
    b = {k: v[1:] for k, v in snapshot(ours).items() if v[0] != "dir" and not _state(k)}
    assert sorted(set(a) ^ set(b)) == [], "file sets differ (left: only makejinja's, right: only ours)"
    modes = {rel: (oct(a[rel][0]), oct(b[rel][0])) for rel in a if a[rel][0] != b[rel][0]}
    assert modes == {}, "file modes differ (makejinja's, ours)"
    secret_rels = sorted(rel for rel in a if _is_secret(rel))
    assert secret_rels, "no *.sops.* file rendered: the comparison would prove nothing"
    differ = sorted(rel for rel in a if not _is_secret(rel) and a[rel][1] != b[rel][1])
    assert differ == [], "files whose bytes differ from makejinja's"
    for rel in secret_rels:
        fail_unless(b"\nsops:\n" in b[rel][1], f"{rel} is not sops-encrypted")
        fail_unless(decrypted_docs(ours, rel) == docs(a[rel][1]),
                    f"{rel}: decrypted documents differ from makejinja's plaintext")


@pytest.mark.parametrize("config", VALID)
def test_render_writes_what_makejinja_writes(rendered: Any, config: str) -> None:
    r = rendered(config)
    assert r.result.returncode == 0, f"exit {r.result.returncode}\n{r.result.stderr}"
    assert_same_tree(r.makejinja, r.ours)


def test_render_gives_output_directories_the_template_directory_modes(rendered: Any) -> None:
    """copy_metadata = true: makejinja copystat()s each template directory onto its output directory."""
    r = rendered("public")
    assert r.result.returncode == 0, r.result.stderr
    a = {k: v[1] for k, v in snapshot(r.makejinja).items() if v[0] == "dir" and not _state(k)}
    b = {k: v[1] for k, v in snapshot(r.ours).items() if v[0] == "dir" and not _state(k)}
    assert sorted(set(a) ^ set(b)) == []
    assert {k: oct(v) for k, v in b.items()} == {k: oct(v) for k, v in a.items()}


def test_render_under_python_3_12_writes_what_makejinja_writes(rendered: Any) -> None:
    r = rendered("public", PY312)
    assert r.result.returncode == 0, f"exit {r.result.returncode}\n{r.result.stderr}"
    assert_same_tree(r.makejinja, r.ours)


def test_under_python_3_11_the_plugin_failure_names_the_interpreter(checkout: Path, tmp_path: Path) -> None:
    """The plugin uses ``type X = ...`` (Python >= 3.12): the message says which Python ran it."""
    assert sys.version_info[:2] == (3, 11), "this story needs the suite's own interpreter to be Python 3.11"
    repo = repo_with(checkout, tmp_path / "repo", "valid/public")
    before = snapshot(repo)
    res = gitops_render(repo, "render", "--yes", python=Path(sys.executable))
    assert res.returncode == 2, res.stderr
    assert "SyntaxError" in res.stderr
    assert "3.11" in res.stderr and (sys.executable in res.stderr or os.path.realpath(sys.executable) in res.stderr), (
        f"the message does not name the interpreter ({sys.executable}, Python 3.11):\n{res.stderr}")
    assert "Traceback" not in res.stderr
    assert changed_paths(before, snapshot(repo)) == []
    assert not (repo / STATE).exists()


# --------------------------------------------------------------------------- configure + check


@pytest.mark.parametrize("config", VALID)
def test_configure_then_check_pass_with_no_finding(checkout: Path, tmp_path: Path, config: str) -> None:
    repo = repo_with(checkout, tmp_path / "repo", f"valid/{config}")
    res = gitops_render(repo, "configure", "--yes")
    assert res.returncode == 0, f"configure exit {res.returncode}\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    assert "validation: ok" in res.stdout + res.stderr
    assert not FINDINGS.search(res.stdout + res.stderr)
    res = gitops_render(repo, "check")
    assert res.returncode == 0, f"check exit {res.returncode}\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    assert not FINDINGS.search(res.stdout + res.stderr)


def test_validation_only_settings_change_no_rendered_file(rendered: Any, tmp_path: Path) -> None:
    """A gitops-render.toml with only validation tables keeps makejinja.toml's render settings."""
    r = rendered("public")
    assert r.result.returncode == 0, r.result.stderr
    repo = tmp_path / "repo"
    shutil.copytree(r.ours, repo, symlinks=True)
    (repo / "gitops-render.toml").write_text(
        '[gitops-render.cluster]\nprovided_sources = ["flux-system/GitRepository/flux-system"]\n')
    before = snapshot(repo)
    res = gitops_render(repo, "render", "--yes")
    assert res.returncode == 0, res.stderr
    state = f"{STATE}/"
    assert [p for p in changed_paths(before, snapshot(repo)) if not p.startswith(state)] == []


# --------------------------------------------------------------------------- invalid configs


def plugin_message(repo: Path) -> list[str]:
    """What the repo's validator says about its cluster.toml (``validate.py cluster.toml``, as its CI runs it)."""
    res = subprocess.run([_interpreter(MAKEJINJA_PY), "template/scripts/validate.py", "cluster.toml"], cwd=repo,
                         env=dict(_env(), PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, f"validate.py accepted the invalid fixture:\n{res.stdout[-2000:]}"
    lines = [line.strip() for line in res.stderr.splitlines() if line.strip()]
    assert lines, "validate.py rejected the fixture without a message"
    return lines


@pytest.mark.parametrize("config", INVALID)
def test_invalid_config_exits_2_with_the_plugin_message_and_writes_nothing(
        checkout: Path, tmp_path: Path, config: str) -> None:
    repo = repo_with(checkout, tmp_path / "repo", f"invalid/{config}")
    expected = plugin_message(repo)
    before = snapshot(repo)
    res = gitops_render(repo, "configure", "--yes")
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    missing = [line for line in expected if line not in res.stderr]
    assert missing == [], f"the plugin's message is not in the error:\n{res.stderr}"
    assert "Traceback" not in res.stderr
    assert changed_paths(before, snapshot(repo)) == []
    assert not (repo / STATE).exists()
