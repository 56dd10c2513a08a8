"""Installed like the ecosystem installs tools: from a built wheel, outside the checkout.

Given the wheel and sdist built from this checkout, a fresh virtualenv in a temporary
directory (not the checkout, not its .venv) installs the wheel; its ``gitops-render``
prints its version and renders a scratch cluster repo with the real tools found on PATH
(not through the checkout's ``.tools/bin``). Offline: the build uses the setuptools already
installed (no build isolation), and the fresh venv gets the runtime dependencies from the
project's environment through ``PYTHONPATH`` instead of from an index.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

from conftest import PROJECT, copy_project_repo
from operator_repo import TOOLS, cli_env

import gitops_render


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def test_the_wheel_installs_outside_the_checkout_and_renders_a_scratch_repo(tmp_path: Path) -> None:
    source, dist = tmp_path / "source", tmp_path / "dist"  # a copy: building writes egg-info and build/
    shutil.copytree(PROJECT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(PROJECT / name, source / name)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", dist, source,
        cwd=tmp_path, env=clean)
    run(sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))",
        cwd=source, env=clean)
    wheel = next(dist.glob("gitops_render-*.whl"))
    sdist = next(dist.glob("gitops_render-*.tar.gz"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "gitops_render/cli.py" in names and "gitops_render/py.typed" in names, names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "License-Expression: Apache-2.0" in meta and "Classifier: Programming Language :: Python :: 3.13" in meta
    with tarfile.open(sdist) as tf:
        assert any(n.endswith("/LICENSE") for n in tf.getnames())

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path, env=clean)
    env = cli_env(PYTHONPATH=sysconfig.get_paths()["purelib"],  # runtime deps, not the checkout's code
                  PATH=f"{bin_dir}{os.pathsep}{TOOLS}{os.pathsep}{os.environ['PATH']}")
    version = run(bin_dir / "gitops-render", "--version", cwd=tmp_path, env=env).stdout
    assert version.strip() == f"gitops-render, version {gitops_render.__version__}", version
    where = run(bin_dir / "python", "-c", "import gitops_render; print(gitops_render.__file__)", cwd=tmp_path,
                env=env).stdout
    assert where.startswith(str(env_dir)), where  # the installed wheel, not the checkout

    repo = copy_project_repo(tmp_path / "cluster-repo")
    run(bin_dir / "gitops-render", "init", cwd=repo, env=env)
    res = run(bin_dir / "gitops-render", "render", cwd=repo, env=env)
    assert re.match(r"[1-9]\d* added, 0 changed, 0 removed, 0 unchanged\n", res.stdout), res.stdout
    assert (repo / "kubernetes/apps/ai-system/litellm/app/helmrelease.yaml").is_file()
