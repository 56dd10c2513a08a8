"""Terminal manners: what a command prints (summary, ``-v`` list, reports), colour policy
(``NO_COLOR``/``FORCE_COLOR``) and the live stage display.

Stage lines (``render 1234 files``, ``encrypt 3 secrets``, ``validate ...``) go to
stderr, and only when stderr is a terminal: a pipe or a CI log gets the one-line
summary on stdout and nothing else. On a colour terminal the running stage shows a
spinner, a bar when the stage counts its items, and the elapsed time (rich); with
``NO_COLOR`` (or ``TERM=dumb``) the same stage lines are printed as plain text, with
no escape sequence at all (no colour, no cursor movement).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import click

from gitops_render.app.stages import NullReporter

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from gitops_render.secrets.policy import SecretDecision
    from gitops_render.validate.model import ValidationReport
    from gitops_render.write import Plan

__all__ = ["Output", "PlainStages", "RichStages", "color_wanted", "emit_report", "plain_terminal", "print_plan",
           "print_report", "stage_reporter"]


def _set(env: Mapping[str, str], name: str) -> bool:
    return bool(env.get(name, ""))  # no-color.org: present and not empty


def color_wanted(stream: IO[str], explicit: bool | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Colour for ``stream``: ``--color/--no-color``, else ``NO_COLOR``, else ``FORCE_COLOR``, else a terminal.

    >>> import io
    >>> color_wanted(io.StringIO(), env={"FORCE_COLOR": "1"}), color_wanted(io.StringIO(), env={})
    (True, False)
    >>> color_wanted(io.StringIO(), env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    False
    """
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit
    if _set(env, "NO_COLOR"):
        return False
    if _set(env, "FORCE_COLOR"):
        return True
    return stream.isatty() and env.get("TERM") != "dumb"


def plain_terminal(env: Mapping[str, str] | None = None) -> bool:
    """A terminal that must get no escape sequence (``NO_COLOR`` set, or ``TERM=dumb``)."""
    env = os.environ if env is None else env
    return _set(env, "NO_COLOR") or env.get("TERM") == "dumb"


class PlainStages:
    """Stage lines as plain text on stderr (``NO_COLOR`` terminals)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started: dict[str, tuple[float, int | None]] = {}

    def __enter__(self) -> PlainStages:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, stage: str, total: int | None = None) -> None:
        self.started[stage] = (time.monotonic(), total)

    def advance(self, stage: str, n: int = 1) -> None:
        """Plain output has no live line: only the line at the end of a stage."""

    def done(self, stage: str, detail: str) -> None:
        began, _total = self.started.pop(stage, (time.monotonic(), None))
        print(f"{stage:<9} {detail} ({time.monotonic() - began:.1f}s)", file=self.stream, flush=True)


class RichStages:
    """The live display: spinner, bar (n/N) and elapsed time per stage; a line when a stage ends."""

    def __init__(self) -> None:
        from rich.console import Console, RenderableType
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            Task,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Table
        from rich.text import Text

        class CountedBar(ProgressColumn):
            """A bar and n/N only for a stage that counts its items (a spinner and the time for the others)."""

            bar = BarColumn()

            def render(self, task: Task) -> RenderableType:
                if task.total is None:
                    return Text("")
                row = Table.grid(padding=(0, 1))
                row.add_row(self.bar.render(task), f"{task.completed:g}/{task.total:g}")
                return row

        self.progress: Progress = Progress(
            SpinnerColumn(), TextColumn("{task.description:<9}"), CountedBar(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True)
        self.tasks: dict[str, tuple[TaskID, float]] = {}

    def __enter__(self) -> RichStages:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def start(self, stage: str, total: int | None = None) -> None:
        self.tasks[stage] = (self.progress.add_task(stage, total=total), time.monotonic())

    def advance(self, stage: str, n: int = 1) -> None:
        if stage in self.tasks:
            self.progress.advance(self.tasks[stage][0], n)

    def done(self, stage: str, detail: str) -> None:
        task, began = self.tasks.pop(stage, (None, time.monotonic()))
        if task is not None:
            self.progress.remove_task(task)
        self.progress.console.print(f"[green]✓[/] {stage:<9} {detail} [dim]({time.monotonic() - began:.1f}s)[/]",
                                    highlight=False)


class _Quiet(NullReporter):
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def stage_reporter(quiet: bool = False) -> PlainStages | RichStages | _Quiet:
    """The reporter for this process: live on a terminal, plain with ``NO_COLOR``, silent otherwise."""
    if quiet or not sys.stderr.isatty():
        return _Quiet()
    if plain_terminal():
        return PlainStages(sys.stderr)
    return RichStages()


class Output:
    """Printing policy (quiet/verbose) for one invocation."""

    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet, self.verbose = quiet, verbose

    def info(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg)

    def detail(self, msg: str) -> None:
        if self.verbose and not self.quiet:
            click.echo(msg)

    def error(self, msg: str) -> None:
        click.echo(msg, err=True)


def print_plan(out: Output, plan: Plan, decisions: Sequence[SecretDecision]) -> None:
    """The one-line summary; with ``-v`` the per-file list after it."""
    out.info(plan.summary())
    for change in plan.changes:
        kind = change.kind.name.lower()
        sign = {"added": "+", "changed": "~", "removed": "-", "unchanged": "="}.get(kind, "?")
        out.detail(f"  {sign} {change.path}")
    by_action: dict[str, int] = {}
    for d in decisions:
        by_action[d.action] = by_action.get(d.action, 0) + 1
    if decisions:
        out.info("secrets: " + ", ".join(f"{n} {a}" for a, n in sorted(by_action.items())))
    for w in plan.warnings:
        out.error(f"warning: {w}")


def print_report(out: Output, report: ValidationReport | None) -> int:
    if report is None:
        return 0
    for note in report.notes:
        out.info(f"note: {note}")
    for f in report.findings:
        doc = f" [{f.document}]" if f.document else ""
        click.echo(f"{f.file}{doc}: {f.check}: {f.message}")
    if report.findings:
        out.error(f"validation: {len(report.findings)} finding(s)")
        return 1
    out.info("validation: ok")
    return 0


def emit_report(out: Output, report: Any, output: str | None, drift: tuple[str, ...] = ()) -> int:
    """Print the report as ``--output`` asks (text: the notes/findings/summary lines); 1 with findings."""
    from gitops_render.validate.report import default_format, render_report

    fmt = output or default_format()
    if fmt == "text":
        return print_report(out, report)
    if report is not None:
        click.echo(render_report(report, fmt, drift=drift))  # type: ignore[arg-type]
    return 1 if report is not None and report.findings else 0
