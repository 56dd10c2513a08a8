"""Stage 5: plan the changes, then apply them atomically (journal, manifest, lock, path safety).

The facade the app uses: everything else in this package is an implementation detail.
"""

from gitops_render.core.naming import STATE_DIR
from gitops_render.write.apply import IncompleteWriteError, apply_plan, recover
from gitops_render.write.guard import check_plan
from gitops_render.write.lock import RepoLock
from gitops_render.write.manifest import Manifest
from gitops_render.write.plan import (
    DEFAULT_PROTECTED,
    ApplyResult,
    ChangeKind,
    DesiredFile,
    Inputs,
    Plan,
    PlannedChange,
    PlanWarning,
    WarningKind,
    load_manifest,
    make_plan,
)
from gitops_render.write.state import StateSession
from gitops_render.write.targets import safe_target

__all__ = [
    "DEFAULT_PROTECTED",
    "STATE_DIR",
    "ApplyResult",
    "ChangeKind",
    "DesiredFile",
    "IncompleteWriteError",
    "Inputs",
    "Manifest",
    "Plan",
    "PlanWarning",
    "PlannedChange",
    "RepoLock",
    "StateSession",
    "WarningKind",
    "apply_plan",
    "check_plan",
    "load_manifest",
    "make_plan",
    "recover",
    "safe_target",
]
