"""``gitops-render graph``: the Flux graph of the output tree, and what a change touches.

The graph is read from the tree on disk (:func:`gitops_render.validate.graph.graph_of_tree`).
What changed comes from one of:

* ``--changed``: what ``configure`` would change (the ``diff`` of the working tree: the
  plan of a render in memory, nothing written); each changed file is placed on the nodes it
  holds, else on the Kustomizations that apply it;
* ``--base REF``: ``diff --base REF`` (:mod:`gitops_render.app.basediff`); each changed
  built resource is placed on its node, else on the Kustomization that builds it, and each
  changed secret file like a changed file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from gitops_render.app.pipeline import RunOptions, _runner, _settings, _validate_settings, plan_changes, prepare

if TYPE_CHECKING:
    from gitops_render.app.basediff import BaseDiff
    from gitops_render.draw.view import GraphView
    from gitops_render.settings.model import Settings
    from gitops_render.validate.graph import Changes, FluxGraph

__all__ = ["GraphFormat", "GraphOutcome", "base_diff_picture", "changes_from_base_diff", "run_graph", "write_picture"]

GraphFormat = Literal["mermaid", "dot", "svg"]


@dataclass(frozen=True)
class GraphOutcome:
    """The picture, the graph and view it was drawn from, and notes for the operator."""

    text: str
    graph: FluxGraph
    view: GraphView
    notes: list[str] = field(default_factory=list)


def _graph(settings: Settings, opts: RunOptions) -> FluxGraph:
    from gitops_render.validate.graph import graph_of_tree

    return graph_of_tree(Path(settings.output), _validate_settings(settings, opts))


def _changes_from_plan(opts: RunOptions, graph: FluxGraph, roots: tuple[str, ...]) -> Changes:
    from gitops_render.validate.graph import Changes
    from gitops_render.write import ChangeKind

    prep = prepare(opts)
    plan, _decisions, _notes = plan_changes(prep, need_key=False)
    out = Changes()
    for change in plan.changes:
        if change.kind is ChangeKind.UNCHANGED:
            continue
        rel = PurePosixPath(change.path)
        if rel.parts and rel.parts[0] in roots:  # .sops.yaml, talos/ ...: not part of the Flux graph
            out |= graph.touched_by(rel)
    return out


def _split(resource: str) -> tuple[str, str | None, str]:
    """``"Kind ns/name"`` (or ``"Kind name"``) -> kind, namespace, name (basediff's resource key)."""
    kind, _, rest = resource.partition(" ")
    namespace, _, name = rest.rpartition("/")
    return kind, namespace or None, name


def changes_from_base_diff(graph: FluxGraph, diff: BaseDiff, output: PurePosixPath) -> Changes:
    """The nodes ``diff --base`` found changed (resources by identity, secret files by path)."""
    from gitops_render.validate.graph import Changes

    out = Changes()
    for change in diff.resources:
        kind, namespace, name = _split(change.resource)
        out |= graph.touched_by_resource(change.unit, kind, namespace, name)
    for secret in diff.secrets:
        rel = PurePosixPath(secret.path)
        try:
            rel = rel.relative_to(output)
        except ValueError:
            pass
        out |= graph.touched_by(rel)
    return out


def _draw(view: GraphView, fmt: GraphFormat, settings: Settings, opts: RunOptions) -> str:
    from gitops_render.draw import to_dot, to_mermaid, to_svg

    if fmt == "mermaid":
        return to_mermaid(view)
    text = to_dot(view)
    return to_svg(text, _runner(opts, settings)) if fmt == "svg" else text


def _notes(view: GraphView) -> list[str]:
    notes = [f"{len(view.graph.dangling)} dangling reference(s): "
             + ", ".join(str(n.key) for n in view.graph.dangling)] if view.graph.dangling else []
    notes += ["dependsOn cycle: " + " -> ".join(k.namespaced_name for k in c) for c in view.graph.cycles]
    if view.focused:
        notes.append(view.summary)
    notes += [f"changed, but on no node of the graph: {u}" for u in view.unplaced]
    return notes


def run_graph(opts: RunOptions, fmt: GraphFormat = "mermaid", *, changed: bool = False, base: str | None = None,
              collapse: bool = True) -> GraphOutcome:
    """The picture of the output tree's Flux graph; with ``changed`` or ``base``, of what a change touches."""
    from gitops_render.draw import make_view

    settings = _settings(opts)
    graph = _graph(settings, opts)
    changes: Changes | None = None
    if base is not None:
        from gitops_render.app.pipeline import run_base_diff

        diff = run_base_diff(opts, base)
        changes = changes_from_base_diff(graph, diff, _output_rel(settings, opts))
    elif changed:
        changes = _changes_from_plan(opts, graph, tuple(settings.validate.roots))
    view = make_view(graph, changes, collapse=collapse)
    return GraphOutcome(_draw(view, fmt, settings, opts), graph, view, _notes(view))


def _output_rel(settings: Settings, opts: RunOptions) -> PurePosixPath:
    """The output folder relative to the git top (basediff's paths are), ``.`` when it is the top."""
    from gitops_render.app.basediff import git_toplevel

    top = git_toplevel(_runner(opts, settings), Path(settings.root)).resolve()
    try:
        return PurePosixPath(Path(settings.output).resolve().relative_to(top).as_posix())
    except ValueError:
        return PurePosixPath(".")


def base_diff_picture(opts: RunOptions, diff: BaseDiff) -> str | None:
    """The Mermaid picture of what ``diff`` touches, for the pull-request comment (``None``: nothing changed)."""
    from gitops_render.draw import make_view, to_mermaid

    if not diff.changed:
        return None
    settings = _settings(opts)
    graph = _graph(settings, opts)
    changes = changes_from_base_diff(graph, diff, _output_rel(settings, opts))
    if not changes.nodes:
        return None
    return to_mermaid(make_view(graph, changes))


def write_picture(path: Path, text: str) -> None:
    """``--output FILE``: the picture written atomically; a path that cannot be written is bad input."""
    from gitops_render.core.errors import ConfigError
    from gitops_render.core.fsio import atomic_write, os_message

    try:
        atomic_write(Path(path), text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"--output {path}: {os_message(exc)}",
                          hint="name a file in an existing, writable folder") from None
