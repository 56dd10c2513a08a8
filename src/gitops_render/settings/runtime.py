"""The environment of one run: every ``GITOPS_RENDER_*`` variable (and ``SOPS_AGE_KEY_FILE``), read once.

:meth:`RuntimeEnv.from_environ` is the only place that reads them; the stages get
the typed values passed down (``settings.runtime``, ``ToolRunner(overrides=…)``).
A variable set to the empty string counts as unset. A value that cannot be used
(``GITOPS_RENDER_TIMEOUT=nan``) is a :class:`ConfigError` naming the variable (exit 2).
``os.environ`` itself is passed in by the caller (:func:`~.sources.load_settings`, the CLI).

>>> env = RuntimeEnv.from_environ({"GITOPS_RENDER_TIMEOUT": "2.5", "GITOPS_RENDER_SOPS": "/opt/sops"})
>>> env.timeout, env.tool_overrides
(2.5, {'sops': '/opt/sops'})
>>> resolve_key_file(Path("/repo"), "keys/age.key", env)
PosixPath('/repo/keys/age.key')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitops_render.core.errors import ConfigError
from gitops_render.core.runner import ToolRunner

__all__ = ["EnvVar", "RuntimeEnv", "env_fields", "resolve_key_file"]

ENV = "gitops_render.env"
_FALSE = ("0", "false", "no", "off", "n", "f")
_TRUE = ("1", "true", "yes", "on", "y", "t")


@dataclass(frozen=True)
class EnvVar:
    """The declaration of one environment variable: its name, help and list separator."""

    name: str
    help: str
    separator: str = ""  # a list variable: split on this
    tool: str = ""  # GITOPS_RENDER_<TOOL>: the executable of this tool


def _env(default: Any, name: str, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={ENV: EnvVar(name, help, **kwargs)})


def _tool(name: str) -> Any:
    var = "GITOPS_RENDER_" + name.upper().replace("-", "_")
    return _env(None, var, f"use this executable for {name} (otherwise `.tools/bin`, then `PATH`)", tool=name)


def env_fields() -> Iterator[tuple[dataclasses.Field[Any], EnvVar]]:
    """Every declared variable of :class:`RuntimeEnv`, in declaration order."""
    for f in dataclasses.fields(RuntimeEnv):
        var = f.metadata.get(ENV)
        if isinstance(var, EnvVar):
            yield f, var


@dataclass(frozen=True)
class RuntimeEnv:
    """The typed environment of a run (see the module docstring)."""

    sops_age_key_file: str | None = _env(
        None, "SOPS_AGE_KEY_FILE", "the age key file (relative: to the repository root); wins over "
                                   "`[secrets] age_key_file`. sops is always run with exactly this key")
    timeout: float | None = _env(
        None, "GITOPS_RENDER_TIMEOUT", "seconds before a hanging tool is stopped (defaults: sops 60, "
                                       "kustomize 120, kubeconform 300)")
    schema_locations: tuple[str, ...] | None = _env(
        None, "GITOPS_RENDER_SCHEMA_LOCATION", "kubeconform schema locations, `;`-separated; replace "
                                               "`[validate] schema_locations`", separator=";")
    helm_charts: tuple[str, ...] | None = _env(
        None, "GITOPS_RENDER_HELM_CHARTS", "local charts, `chart@version=path` entries `;`-separated; added over "
                                           "`[validate] helm_charts`", separator=";")
    jobs: int | None = _env(None, "GITOPS_RENDER_JOBS", "template compile processes (default: up to 8 "
                                                        "for large trees)")
    validate_cache: bool = _env(True, "GITOPS_RENDER_VALIDATE_CACHE", "`0` bypasses the validation caches")
    debug: bool = _env(False, "GITOPS_RENDER_DEBUG", "show the traceback of an internal error (it may "
                                                     "contain rendered values)")
    sops: str | None = _tool("sops")
    age: str | None = _tool("age")
    age_keygen: str | None = _tool("age-keygen")
    kubeconform: str | None = _tool("kubeconform")
    kustomize: str | None = _tool("kustomize")
    helm: str | None = _tool("helm")
    dot: str | None = _tool("dot")  # Graphviz, for `graph --format svg`

    @property
    def tool_overrides(self) -> dict[str, str]:
        """``tool -> executable`` for the tools whose ``GITOPS_RENDER_<TOOL>`` is set."""
        out: dict[str, str] = {}
        for f, var in env_fields():
            value = getattr(self, f.name)
            if var.tool and value:
                out[var.tool] = value
        return out

    @property
    def tool_timeouts(self) -> dict[str, float]:
        """``GITOPS_RENDER_TIMEOUT`` for every tool (empty when unset)."""
        if self.timeout is None:
            return {}
        return dict.fromkeys(("sops", "kubeconform", "kustomize", "age", "age-keygen", "helm", "dot"), self.timeout)

    def tool_runner(self) -> ToolRunner:
        """The tool runner of a run: ``GITOPS_RENDER_<TOOL>`` executables and ``GITOPS_RENDER_TIMEOUT``."""
        return ToolRunner(timeouts=self.tool_timeouts, overrides=self.tool_overrides)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RuntimeEnv:
        """Read and check every declared variable of ``environ`` (``os.environ`` for a real run)."""
        values: dict[str, Any] = {}
        for f, var in env_fields():
            raw = environ.get(var.name, "").strip()
            if raw:
                values[f.name] = _parse(f, var, raw)
        return cls(**values)


def _parse(f: dataclasses.Field[Any], var: EnvVar, raw: str) -> Any:
    kind = str(f.type)
    if var.separator:
        return tuple(p.strip() for p in raw.split(var.separator) if p.strip())
    if kind == "bool":
        low = raw.lower()
        if low in _TRUE or (low not in _FALSE and f.name == "debug"):  # any other value switches debug on
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{var.name}={raw!r} is not a boolean", hint=f"set {var.name}=1 or {var.name}=0")
    if kind.startswith("float"):
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise ConfigError(f"{var.name}={raw!r} is not a positive number of seconds",
                              hint=f"set e.g. {var.name}=120, or unset it for the defaults")
        return number
    if kind.startswith("int"):
        try:
            count = int(raw)
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"{var.name}={raw!r} is not a number of processes",
                              hint=f"set e.g. {var.name}=2, or unset it for the default")
        return count
    return raw


def resolve_key_file(root: Path, configured: str, runtime: RuntimeEnv) -> Path:
    """The age key file of a run: ``SOPS_AGE_KEY_FILE`` > ``[secrets] age_key_file`` (> ``age.key``).

    A relative path is taken relative to the repository ``root``. This is the one
    resolution rule: the pipeline, ``init``/``doctor``/``secrets decrypt`` and (through
    ``config.age_key_file``) the template plugin all use its result.
    """
    chosen = Path(runtime.sops_age_key_file or configured or "age.key").expanduser()
    return chosen if chosen.is_absolute() else root / chosen
