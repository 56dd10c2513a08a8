"""The one place that runs external tools (sops, age, kubeconform, kustomize, helm).

Every call has a timeout, and failures become typed errors that name the tool
and say how to fix it. Tools are looked up on ``PATH`` after the project's
``.tools/bin`` (where ``scripts/install-tools.sh`` puts them) and may be
overridden per tool (``overrides``; the CLI takes them from ``GITOPS_RENDER_<TOOL>``).

>>> r = ToolRunner()
>>> r.run("kubeconform", ["-v"]).stdout.strip().startswith("v")  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gitops_render.core.errors import (
    ToolFailedError,
    ToolMissingError,
    ToolTimeoutError,
)

__all__ = ["DEFAULT_TIMEOUTS", "INSTALL_HINT", "MIN_VERSIONS", "RELEASES", "ToolResult", "ToolRunner", "install_hint"]

#: The oldest release of each tool gitops-render works with (doctor checks these; newer is fine).
MIN_VERSIONS: Mapping[str, str] = {"sops": "3.9.0", "age": "1.1.0", "age-keygen": "1.1.0",
                                   "kubeconform": "0.6.4", "kustomize": "5.0.0"}
#: Where each tool's release binaries are.
RELEASES: Mapping[str, str] = {
    "sops": "https://github.com/getsops/sops/releases",
    "age": "https://github.com/FiloSottile/age/releases",
    "age-keygen": "https://github.com/FiloSottile/age/releases",
    "kubeconform": "https://github.com/yannh/kubeconform/releases",
    "kustomize": "https://github.com/kubernetes-sigs/kustomize/releases",
}
_MISE_NAME = {"age-keygen": "age"}

INSTALL_HINT = "install {tool}: {where}, or `mise use {mise}` (or put it on PATH, or set GITOPS_RENDER_{TOOL})"


def install_hint(tool: str) -> str:
    """How to install ``tool``, in the ecosystem's words (release page, mise), not this repo's scripts.

    >>> install_hint("sops").split(" (")[0]
    'install sops >= 3.9.0: https://github.com/getsops/sops/releases, or `mise use sops`'
    """
    name = f"{tool} >= {MIN_VERSIONS[tool]}" if tool in MIN_VERSIONS else tool
    return INSTALL_HINT.format(tool=name, where=RELEASES.get(tool, "its release page"),
                               mise=_MISE_NAME.get(tool, tool), TOOL=tool.upper().replace("-", "_"))

DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "sops": 60.0,
    "age": 30.0,
    "age-keygen": 30.0,
    "kubeconform": 300.0,
    "kustomize": 120.0,
    "helm": 120.0,
}

# where install-tools.sh puts the binaries, relative to the project checkout
_PROJECT_TOOLS = Path(__file__).resolve().parents[3] / ".tools" / "bin"


@dataclass(frozen=True)
class ToolResult:
    """What a finished tool call produced."""

    tool: str
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class ToolRunner:
    """Runs external tools with timeouts and typed errors.

    ``env`` is added to the process environment for every call;
    ``timeouts`` overrides :data:`DEFAULT_TIMEOUTS` per tool; ``overrides`` maps a
    tool to the executable to use (``GITOPS_RENDER_<TOOL>``, read by the settings'
    ``RuntimeEnv`` and passed down).
    """

    env: Mapping[str, str] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    search_path: Sequence[Path] = field(default_factory=lambda: (_PROJECT_TOOLS,))
    overrides: Mapping[str, str] = field(default_factory=dict)

    def which(self, tool: str) -> str:
        """Absolute path of ``tool`` or :class:`ToolMissingError`."""
        override = self.overrides.get(tool)
        if override:
            if Path(override).is_file() and os.access(override, os.X_OK):
                return override
            raise ToolMissingError(tool, f"GITOPS_RENDER_{tool.upper()}={override} is not an executable file",
                                   hint=install_hint(tool))
        for d in self.search_path:
            cand = Path(d) / tool
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
        found = shutil.which(tool)
        if not found:
            raise ToolMissingError(tool, "not installed (not found on PATH)",
                                   hint=install_hint(tool))
        return found

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        input: bytes | str | None = None,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
        text: bool = True,
    ) -> ToolResult:
        """Run ``tool args`` and return its result.

        With ``check`` (the default) a non-zero exit raises
        :class:`ToolFailedError` carrying the tool's stderr (the caller must
        make sure that stderr cannot hold secrets before showing it).
        """
        exe = self.which(tool)
        full_env = dict(os.environ)
        full_env.update(self.env)
        if env:
            full_env.update(env)
        limit = timeout if timeout is not None else self.timeouts.get(tool, DEFAULT_TIMEOUTS.get(tool, 120.0))
        data = input.encode() if isinstance(input, str) else input
        try:
            proc = subprocess.run(
                [exe, *args],
                input=data,
                capture_output=True,
                cwd=str(cwd) if cwd is not None else None,
                env=full_env,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolTimeoutError(tool, f"did not finish within {limit:g}s and was stopped",
                                   hint=f"check that {tool} works on its own (kubeconform: are the schema "
                                        "locations reachable?); allow more time with GITOPS_RENDER_TIMEOUT=<seconds>"
                                   ) from exc
        except FileNotFoundError as exc:  # raced away between which() and exec
            raise ToolMissingError(tool, "not installed",
                                   hint=install_hint(tool)) from exc
        except OSError as exc:
            raise ToolFailedError(tool, f"could not be started: {exc.strerror}",
                                  hint=f"reinstall it: {install_hint(tool)}") from exc
        stdout = proc.stdout.decode("utf-8", "replace") if text else proc.stdout
        stderr = proc.stderr.decode("utf-8", "replace")
        result = ToolResult(tool, tuple(args), proc.returncode, stdout, stderr)  # type: ignore[arg-type]
        if check and proc.returncode != 0:
            first = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {proc.returncode}"
            raise ToolFailedError(tool, f"failed ({first})", returncode=proc.returncode, stderr=stderr)
        return result

    def version(self, tool: str) -> str:
        """The tool's version string, as the tool prints it."""
        args = {"sops": ["--version", "--disable-version-check"], "kubeconform": ["-v"],
                "kustomize": ["version"], "age": ["--version"], "age-keygen": ["--version"],
                "helm": ["version", "--template", "{{.Version}}"]}.get(tool, ["--version"])
        res = self.run(tool, args, check=False, timeout=30)
        out = (res.stdout or res.stderr).strip().splitlines()
        version = out[0] if out else "unknown"
        # `go install` builds embed no version (helm: only "v3.22"); install-tools.sh records the one it built
        stamp = Path(self.which(tool)).parent / f".{tool}.version"
        built = stamp.read_text().strip() if stamp.is_file() else ""
        if built and (version in ("development", "unknown") or built.startswith(version + ".")):
            version = f"{built} (built from source)"
        return version
