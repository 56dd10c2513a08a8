"""Plans the operator must confirm: a mass deletion, or overwriting files gitops-render did not write.

A settings mistake (a ``gitops-render.toml`` that finds no templates, a data file that
disables everything) must never delete a tree with exit 0: :func:`check_plan` stops such a
plan before anything is written (exit 2), naming the count and the likely cause, until the
operator confirms it (``--allow-mass-prune``; ``--yes`` for files gitops-render did not write).
"""

from __future__ import annotations

from gitops_render.core.errors import WriteError
from gitops_render.write.plan import Plan, WarningKind

__all__ = ["MASS_PRUNE_SHARE", "check_plan"]


#: At most this share of the generated files may be pruned by one run without confirmation.
MASS_PRUNE_SHARE = 0.5


def check_plan(plan: Plan, *, allow_mass_prune: bool = False, overwrite_unowned: bool = False) -> None:
    """Refuse, before anything is written, a plan the operator has not confirmed.

    * a mass deletion: every generated file, or more than half of them, would be pruned,
      or the render produced no file while the manifest lists some;
    * files gitops-render never wrote would be overwritten.
    """
    previous = len(plan.previous_manifest.files)
    removed = len(plan.removed)
    rendered = len(plan.changes) - removed
    if previous and not allow_mass_prune and (
            rendered == 0 or removed == previous or removed > previous * MASS_PRUNE_SHARE):
        if rendered == 0:
            cause = ("the render produced no file at all: most likely the settings found no inputs "
                     "(check the render settings in gitops-render.toml / makejinja.toml and the template "
                     "directories they name)")
        elif removed == previous:
            cause = ("not one file generated earlier is generated now: most likely the settings point at "
                     "other templates or another output layout")
        else:
            cause = "a settings or data change disabled most of the tree"
        raise WriteError(f"nothing written: this run would prune {removed} of the {previous} files gitops-render "
                         f"generated earlier and renders {rendered}; {cause}",
                         hint="fix the settings or data; if the deletion is intended, run again with "
                              "--allow-mass-prune")
    unowned = [w for w in plan.warnings if w.kind is WarningKind.UNOWNED_OVERWRITTEN]
    if unowned and not overwrite_unowned:
        shown = ", ".join(str(w.path) for w in unowned[:5]) + (", ..." if len(unowned) > 5 else "")
        raise WriteError(f"nothing written: {len(unowned)} file(s) that gitops-render did not write would be "
                         f"overwritten by generated files: {shown}",
                         hint="move them away (or fold them into the templates), or run again with --yes "
                              "to overwrite them")
