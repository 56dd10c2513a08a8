"""Shared fixtures: the offline schema mirror, real age keys, and a cluster repo to configure.

Every fixture uses the real tools (sops, age, kubeconform, kustomize) built by
scripts/install-tools.sh; a missing tool fails the test, it is never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gitops_render.core.runner import ToolRunner

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GITOPS_RENDER_SHARED", PROJECT.parent / "shared"))


def offline_charts(shared: Path = SHARED) -> str:
    """GITOPS_RENDER_HELM_CHARTS for the offline copy of app-template 4.5.0 (see its README)."""
    return f"app-template@4.5.0={shared / 'charts' / 'app-template-4.5.0' / 'chart'}"


def offline_locations(shared: Path = SHARED) -> tuple[str, str]:
    """kubeconform -schema-location values for the offline mirror (see its README)."""
    base = shared / "kubernetes-schemas"
    return (
        f"{base}/core/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/"
        f"{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        f"{base}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
    )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert (SHARED / "kubernetes-schemas").is_dir(), (
        f"offline schema mirror not found at {SHARED}/kubernetes-schemas: set GITOPS_RENDER_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def offline_schema_locations(shared_dir: Path) -> tuple[str, ...]:
    return offline_locations(shared_dir)


# What a test's environment changes, for the in-process (autouse ``_offline_env``) and the
# subprocess (``cli_env``) stories alike: offline schemas, none of the operator's own sops keys
# or config, no debug tracebacks. ``None`` removes the variable.
def _offline_changes() -> dict[str, str | None]:
    return {
        "GITOPS_RENDER_SCHEMA_LOCATION": ";".join(offline_locations()),
        "GITOPS_RENDER_HELM_CHARTS": offline_charts(),
        "SOPS_AGE_KEY": None,
        "SOPS_AGE_KEY_FILE": None,
        "SOPS_AGE_KEY_CMD": None,
        "GITOPS_RENDER_DEBUG": None,
        "XDG_CONFIG_HOME": "/nonexistent-xdg-config",
    }


def cli_env(**extra: str | None) -> dict[str, str]:
    """The environment of an operator's shell in a test: offline schemas, no personal sops keys.

    ``extra`` sets (or, with ``None``, removes) variables on top.
    """
    env = dict(os.environ)
    for name, value in {**_offline_changes(), **extra}.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def offline_environ(monkeypatch: pytest.MonkeyPatch, **extra: str | None) -> None:
    """Make this process's environment :func:`cli_env` (``extra`` on top), undone with ``monkeypatch``."""
    for name, value in {**_offline_changes(), **extra}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never use the network or the operator's own sops keys; charts render from the offline copy."""
    offline_environ(monkeypatch)


@pytest.fixture(scope="session")
def runner() -> ToolRunner:
    return ToolRunner()


def make_age_key(path: Path, runner: ToolRunner | None = None) -> str:
    """Create a classic X25519 age key with the real age-keygen; return its public key."""
    runner = runner or ToolRunner()
    exe = runner.which("age-keygen")
    subprocess.run([exe, "-o", str(path)], check=True, capture_output=True)
    for line in path.read_text().splitlines():
        if line.startswith("# public key: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError("age-keygen wrote no public key line")


@pytest.fixture
def age_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "age-key.txt"
    return key, make_age_key(key)


def copy_project_repo(dest: Path) -> Path:
    """A cluster repo made of this project's template set, schema, sample and settings."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("templates", "schemas"):
        shutil.copytree(PROJECT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("gitops-render.toml", "cluster.sample.yaml"):
        shutil.copy2(PROJECT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample configured once per test module (read-only; tests that change it use ``repo``)."""
    from operator_repo import configured_repo

    return configured_repo(tmp_path_factory.mktemp("sample") / "repo")


@pytest.fixture
def repo(sample_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the configured sample repo."""
    from operator_repo import clone

    return clone(sample_repo, tmp_path / "repo")
