"""The ``gitops-render`` command line: parse options, call the library, print results.

Exit codes: 0 ok; 1 findings (validation findings, drift, leaks); 2 usage,
configuration or input error (nothing was written); 3 internal error (a bug:
please report it; nothing is printed that could hold a secret).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from gitops_render import __version__
from gitops_render.core.errors import GitopsRenderError

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


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


def _handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GitopsRenderError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `gitops-render diff | head`: the reader left, that is fine
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was applied unless the summary above says so", err=True)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("GITOPS_RENDER_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__} (set GITOPS_RENDER_DEBUG=1 for the traceback; "
                       f"it may contain rendered values)", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


def common_options(fn: F) -> F:
    """``--root``, ``--config``, ``--settings``, ``--quiet``, ``--verbose``, ``--yes``."""
    decorators = [
        click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                     show_default=True, help="Repository root (where gitops-render.toml lives)."),
        click.option("--config", "data_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Data file(s) to use instead of the settings' 'data' (e.g. cluster.yaml)."),
        click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Settings file (default: gitops-render.toml, else makejinja.toml)."),
        click.option("-q", "--quiet", is_flag=True, help="Print only errors and findings."),
        click.option("-v", "--verbose", is_flag=True, help="Print every path, not only a summary."),
        click.option("-y", "--yes", is_flag=True,
                     help="Non-interactive: never prompt (hand-edited generated files, and files gitops-render "
                          "did not write at generated paths, are overwritten)."),
    ]
    for d in reversed(decorators):
        fn = d(fn)
    return fn


def _opts(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, **extra: Any) -> Any:
    from gitops_render.app.pipeline import RunOptions

    return RunOptions(root=root, config_file=settings_file, data_files=tuple(data_files), **extra)


def _confirm_overwrite(yes: bool) -> Any:
    """Ask before overwriting hand edits, only when a person is at the terminal."""
    if yes or not sys.stdin.isatty():
        return None

    def ask(plan: Any) -> bool:
        for w in plan.warnings:
            click.echo(f"warning: {w}", err=True)
        return click.confirm("Overwrite these files (edited by hand, or not written by gitops-render)?",
                             default=False, err=True)

    return ask


def _print_plan(out: Output, plan: Any, decisions: list[Any]) -> None:
    out.info(plan.summary())
    for change in plan.changes:
        kind = change.kind.name.lower()
        if kind == "unchanged":
            out.detail(f"  = {change.path}")
        else:
            sign = {"added": "+", "changed": "~", "removed": "-"}.get(kind, "?")
            out.info(f"  {sign} {change.path}")
    by_action: dict[str, int] = {}
    for d in decisions:
        by_action[d.action] = by_action.get(d.action, 0) + 1
    if decisions:
        out.info("secrets: " + ", ".join(f"{n} {a}" for a, n in sorted(by_action.items())))
    for w in getattr(plan, "warnings", ()) or ():
        out.error(f"warning: {w}")


def _print_report(out: Output, report: Any) -> int:
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


mass_prune_option = click.option(
    "--allow-mass-prune", is_flag=True,
    help="Confirm a run that prunes every generated file, more than half of them, or renders nothing.")

schema_location_option = click.option(
    "--schema-location", "schema_locations", multiple=True,
    help="kubeconform -schema-location (repeatable); replaces the settings' list.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="gitops-render")
def cli() -> None:
    """Render cluster.yaml into a validated, SOPS-encrypted Flux GitOps tree."""


@cli.command()
@common_options
@mass_prune_option
@_handle_errors
def render(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
           yes: bool, allow_mass_prune: bool) -> None:
    """Load, validate, derive, render and write (secrets encrypted); no validation of the output."""
    from gitops_render.app.pipeline import run_render

    out = Output(quiet, verbose)
    outcome = run_render(_opts(root, data_files, settings_file, confirm=_confirm_overwrite(yes),
                               overwrite_unowned=yes, allow_mass_prune=allow_mass_prune))
    if outcome.recovered:
        out.info("completed an interrupted earlier run first (journal)")
    _print_plan(out, outcome.plan, outcome.decisions)
    for n in outcome.notes:
        out.info(f"note: {n}")


@cli.command()
@common_options
@schema_location_option
@mass_prune_option
@click.option("--validate/--no-validate", default=True, show_default=True, help="Validate the written tree.")
@_handle_errors
def configure(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
              yes: bool, schema_locations: tuple[str, ...], allow_mass_prune: bool, validate: bool) -> None:
    """Render and write the tree, then validate it (what `task configure` runs)."""
    from gitops_render.app.pipeline import run_configure

    out = Output(quiet, verbose)
    outcome = run_configure(_opts(root, data_files, settings_file, validate=validate,
                                  schema_locations=tuple(schema_locations) or None,
                                  confirm=_confirm_overwrite(yes), overwrite_unowned=yes,
                                  allow_mass_prune=allow_mass_prune))
    if outcome.recovered:
        out.info("completed an interrupted earlier run first (journal)")
    _print_plan(out, outcome.plan, outcome.decisions)
    for n in outcome.notes:
        out.info(f"note: {n}")
    if outcome.validation_error is not None:
        raise outcome.validation_error
    sys.exit(_print_report(out, outcome.report))


@cli.command()
@common_options
@schema_location_option
@_handle_errors
def validate(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
             yes: bool, schema_locations: tuple[str, ...]) -> None:
    """Validate the output tree as it is (kubeconform, kustomize, Flux graph, Helm values, YAML)."""
    from gitops_render.app.pipeline import run_validate

    out = Output(quiet, verbose)
    report = run_validate(_opts(root, data_files, settings_file, schema_locations=tuple(schema_locations) or None))
    sys.exit(_print_report(out, report))


@cli.command()
@common_options
@schema_location_option
@click.option("--validate/--no-validate", default=True, show_default=True)
@_handle_errors
def check(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
          yes: bool, schema_locations: tuple[str, ...], validate: bool) -> None:
    """CI check: the committed tree equals what configure would produce, and it is valid."""
    from gitops_render.app.pipeline import run_check

    out = Output(quiet, verbose)
    outcome = run_check(_opts(root, data_files, settings_file, validate=validate,
                              schema_locations=tuple(schema_locations) or None))
    for n in outcome.notes:
        out.info(f"note: {n}")
    code = 0
    if outcome.drift:
        click.echo(f"drift: {len(outcome.drift)} file(s) differ from what configure would produce:")
        for c in outcome.drift:
            click.echo(f"  {c.kind.name.lower()}: {c.path}")
        out.error("run `gitops-render configure` (or `task configure`) and commit the result")
        code = 1
    else:
        out.info("drift: none")
    sys.exit(max(code, _print_report(out, outcome.report)))


@cli.command()
@common_options
@click.option("--color/--no-color", default=None, help="Colour the diff (default: when stdout is a terminal).")
@_handle_errors
def diff(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
         yes: bool, color: bool | None) -> None:
    """Show what configure would change, as unified diffs (secret values masked)."""
    from gitops_render.app.diff import colorize
    from gitops_render.app.pipeline import run_diff

    out = Output(quiet, verbose)
    outcome = run_diff(_opts(root, data_files, settings_file))
    use_color = sys.stdout.isatty() if color is None else color
    for fd in outcome.diffs:
        # color= keeps the codes when stdout is not a terminal (`diff --color | less -R`)
        click.echo(colorize(fd.text) if use_color else fd.text, nl=False, color=use_color)
    for n in outcome.notes:
        out.info(f"note: {n}")
    if not outcome.diffs:
        out.info("no changes")


@cli.command()
@common_options
@_handle_errors
def init(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
         yes: bool) -> None:
    """Create cluster.yaml from cluster.sample.yaml (strong generated secrets) and an age key; never overwrite."""
    from gitops_render.app.bootstrap import init_repo

    out = Output(quiet, verbose)
    for line in init_repo(root.resolve(), config_file=settings_file):
        out.info(line)


@cli.command()
@common_options
@_handle_errors
def doctor(root: Path, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
           yes: bool) -> None:
    """Check prerequisites: tools and versions, key file, settings, data, schema."""
    from gitops_render.app.bootstrap import doctor as run_doctor

    problems = 0
    for check_ in run_doctor(root.resolve(), config_file=settings_file):
        mark = "ok " if check_.ok else "MISSING" if check_.missing else "WARN"
        click.echo(f"[{mark:>7}] {check_.name}: {check_.detail}")
        if not check_.ok and check_.fix:
            click.echo(f"          fix: {check_.fix}")
        problems += 0 if check_.ok else 1
    sys.exit(1 if problems else 0)


@cli.group()
def secrets() -> None:
    """Work with the repository's SOPS secrets."""


@secrets.command("decrypt")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@_handle_errors
def secrets_decrypt(path: Path, root: Path) -> None:
    """Print the decrypted content of PATH (to your terminal only; think before piping it)."""
    from gitops_render.app.bootstrap import decrypt_for_operator

    click.echo(decrypt_for_operator(root.resolve(), path.resolve()), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="gitops-render")


if __name__ == "__main__":  # pragma: no cover
    main()
