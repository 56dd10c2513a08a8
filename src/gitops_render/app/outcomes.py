"""What a run was asked to do and what it did: the app's option and outcome types.

The CLI builds :class:`RunOptions`; the pipeline returns one outcome per command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_render import write
from gitops_render.app.stages import NullReporter, StageReporter
from gitops_render.core.errors import GitopsRenderError
from gitops_render.core.runner import ToolRunner

if TYPE_CHECKING:
    from gitops_render.app.diff import FileDiff
    from gitops_render.secrets.policy import SecretDecision
    from gitops_render.validate.model import ValidationReport
    from gitops_render.write import Plan, PlannedChange

__all__ = ["CheckOutcome", "DiffOutcome", "RenderOutcome", "RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    """What the operator asked for (CLI options, or a library caller's choice)."""

    root: Path = Path(".")
    config_file: Path | None = None  # gitops-render.toml / makejinja.toml override
    data_files: tuple[Path, ...] = ()  # --config: replaces the settings' data list
    validate: bool = True
    schema_locations: tuple[str, ...] | None = None
    output: Path | None = None  # render somewhere else (check uses a temp tree)
    lock_timeout: float = 30.0
    runner: ToolRunner | None = None
    # Asked before applying a plan that overwrites generated files edited by hand (or files
    # gitops-render did not write); None (non-interactive, --yes) applies without asking.
    confirm: Callable[[Plan], bool] | None = None
    # stage events (render n files, encrypt k secrets, validate) for a progress display
    stages: StageReporter = field(default_factory=NullReporter)
    overwrite_unowned: bool = False  # --yes: overwrite files at generated paths gitops-render did not write
    allow_mass_prune: bool = False  # --allow-mass-prune: confirm pruning most or all generated files
    rotate_age_key: bool = False  # --rotate-age-key: re-encrypt committed secrets the key cannot decrypt


@dataclass
class RenderOutcome:
    """What ``render``/``configure`` did."""

    plan: Plan
    decisions: list[SecretDecision] = field(default_factory=list)
    report: ValidationReport | None = None
    notes: list[str] = field(default_factory=list)
    recovered: bool = False
    # validation could not run (e.g. schemas unreachable): the tree WAS written
    validation_error: GitopsRenderError | None = None


@dataclass
class CheckOutcome:
    """What ``check`` found: drift (files that differ) and validation findings."""

    plan: Plan
    report: ValidationReport | None
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> list[PlannedChange]:
        return [c for c in self.plan.changes if c.kind is not write.ChangeKind.UNCHANGED]

    @property
    def ok(self) -> bool:
        return not self.drift and (self.report is None or self.report.ok)


@dataclass
class DiffOutcome:
    """What ``diff`` shows: one masked unified diff per file that configure would change."""

    diffs: list[FileDiff]
    notes: list[str] = field(default_factory=list)
    uncompared: int = 0  # secret files whose content could not be compared (no key)
