"""Error types of gitops-render, written for operators.

Every error the tool raises on purpose derives from :class:`GitopsRenderError`.
The CLI prints ``str(error)`` (never a traceback) and exits with
``error.exit_code``: 2 for configuration/usage/input problems, 1 for findings.

Messages never contain secret values: code that has a sensitive value in hand
masks it with :func:`gitops_render.mask.mask` before raising.

>>> str(DataError("cluster.yaml", 3, "duplicate key 'a'", hint="remove one of them"))
"cluster.yaml:3: duplicate key 'a'\\n  hint: remove one of them"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ConfigError",
    "DataError",
    "GitopsRenderError",
    "LeakError",
    "LockError",
    "PathEscapeError",
    "PluginError",
    "SchemaError",
    "SchemaViolation",
    "SecretsError",
    "TemplateError",
    "ToolError",
    "ToolFailedError",
    "ToolMissingError",
    "ToolTimeoutError",
    "WriteError",
]


class GitopsRenderError(Exception):
    """Base of every error gitops-render reports to an operator."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(GitopsRenderError):
    """gitops-render.toml / makejinja.toml / CLI options are wrong."""


class PluginError(GitopsRenderError):
    """A plugin could not be imported, constructed or called."""


class DataError(GitopsRenderError):
    """A data file (cluster.yaml ...) cannot be read: syntax, duplicate key, type."""

    def __init__(self, file: str | Path, line: int | None, message: str, *, hint: str | None = None) -> None:
        where = f"{file}:{line}" if line else f"{file}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.file = str(file)
        self.line = line


@dataclass(frozen=True)
class SchemaViolation:
    """One schema violation, located in the data file."""

    file: str
    line: int | None
    path: str  # dotted path, e.g. "litellm.replicas" or "<root>"
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class SchemaError(GitopsRenderError):
    """The data does not satisfy the cluster schema; carries every violation."""

    def __init__(self, violations: list[SchemaViolation]) -> None:
        self.violations = violations
        lines = [f"{len(violations)} schema violation(s):"] + [f"  {v}" for v in violations]
        super().__init__("\n".join(lines), hint="fix the values above in your data file and run again")


class TemplateError(GitopsRenderError):
    """A template failed to compile or render."""

    def __init__(self, template: str, line: int | None, message: str, *, hint: str | None = None) -> None:
        where = f"{template}:{line}" if line else template
        super().__init__(f"template {where}: {message}", hint=hint)
        self.template = template
        self.line = line


class PathEscapeError(GitopsRenderError):
    """A path would leave the output roots (``..``, absolute, symlink out)."""


class ToolError(GitopsRenderError):
    """An external tool (sops, kubeconform, kustomize, age) could not do its job."""

    def __init__(self, tool: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{tool}: {message}", hint=hint)
        self.tool = tool


class ToolMissingError(ToolError):
    """The tool is not installed / not on PATH."""


class ToolTimeoutError(ToolError):
    """The tool did not finish within its timeout and was killed."""


class ToolFailedError(ToolError):
    """The tool exited non-zero or printed something unusable."""

    def __init__(self, tool: str, message: str, *, returncode: int | None = None,
                 stderr: str = "", hint: str | None = None) -> None:
        super().__init__(tool, message, hint=hint)
        self.returncode = returncode
        self.stderr = stderr


class SecretsError(GitopsRenderError):
    """Secrets cannot be encrypted/decrypted (no key, bad .sops.yaml, ...)."""


class LeakError(GitopsRenderError):
    """A sensitive value appears in an output that is not a ``*.sops.*`` file."""

    exit_code = 1


class LockError(GitopsRenderError):
    """Another gitops-render run holds the repository lock."""


class WriteError(GitopsRenderError):
    """Staging or applying the write plan failed; the tree was left as it was."""
