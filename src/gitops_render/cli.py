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
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gitops_render import __version__
from gitops_render.console import Output, color_wanted, emit_report, print_plan, print_report, stage_reporter
from gitops_render.core.errors import GitopsRenderError

if TYPE_CHECKING:  # the pipeline is imported lazily (CLI start-up); these are only its types
    from gitops_render.app.pipeline import RunOptions
    from gitops_render.write import Plan

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


def _debug() -> bool:
    """``GITOPS_RENDER_DEBUG`` (through the settings' one reader of the environment)."""
    from gitops_render.settings.runtime import RuntimeEnv

    try:
        return RuntimeEnv.from_environ(os.environ).debug
    except GitopsRenderError:
        return False


def _root(root: Path | None) -> Path:
    """``--root``, else the repository the command runs in (walking up like git)."""
    from gitops_render.settings.sources import find_root

    return root.resolve() if root is not None else find_root(Path.cwd())


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
            if _debug():
                raise
            click.echo(f"internal error: {type(exc).__name__} (set GITOPS_RENDER_DEBUG=1 for the traceback; "
                       f"it may contain rendered values)", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return apply


root_option = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="Repository root (default: the nearest directory upwards holding "
                                "gitops-render.toml or makejinja.toml, like git).")
data_option = click.option("--config", "data_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                           help="Data file(s) to use instead of the settings' 'data' (e.g. cluster.yaml).")
settings_option = click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
                               help="Settings file (default: gitops-render.toml, else makejinja.toml).")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print only errors and findings.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Print every path, not only a summary.")
yes_option = click.option("-y", "--yes", is_flag=True,
                          help="Non-interactive: never prompt (hand-edited generated files, and files gitops-render "
                               "did not write at generated paths, are overwritten).")
#: What every command that loads the data takes: where the repo, its settings and its data are.
repo_options = _compose(root_option, data_option, settings_option)

EXIT_CODES = "exit codes: 0 ok, 1 findings/drift, 2 bad input or configuration (nothing written), 3 internal error"


def _epilog(example: str, codes: str = EXIT_CODES) -> str:
    """The ``--help`` footer: a one-line example and the exit codes (``\\b``: click keeps the lines)."""
    return f"\b\nexample: {example}\n{codes}"


def _opts(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, **extra: Any) -> RunOptions:
    from gitops_render.app.pipeline import RunOptions

    return RunOptions(root=_root(root), config_file=settings_file, data_files=tuple(data_files), **extra)


def _confirm_overwrite(yes: bool) -> Callable[[Plan], bool] | None:
    """Ask before overwriting hand edits, only when a person is at the terminal."""
    if yes or not sys.stdin.isatty():
        return None

    def ask(plan: Plan) -> bool:
        for w in plan.warnings:
            click.echo(f"warning: {w}", err=True)
        return click.confirm("Overwrite these files (edited by hand, or not written by gitops-render)?",
                             default=False, err=True)

    return ask


output_option = click.option(
    "--output", "output", type=click.Choice(["text", "json", "github", "junit"]), default=None,
    help="Findings as text, json, GitHub annotations or JUnit XML (default: github when GITHUB_ACTIONS=true).")


mass_prune_option = click.option(
    "--allow-mass-prune", is_flag=True,
    help="Confirm a run that prunes every generated file, more than half of them, or renders nothing.")

rotate_key_option = click.option(
    "--rotate-age-key", is_flag=True,
    help="Confirm re-encrypting committed secrets that the age key cannot decrypt for it (a new key; "
         "then update the cluster's Flux decryption Secret). --yes does not do this.")

schema_location_option = click.option(
    "--schema-location", "schema_locations", multiple=True,
    help="kubeconform -schema-location (repeatable); replaces the settings' list.")
validate_option = click.option("--validate/--no-validate", default=True, show_default=True,
                               help="Validate the tree (kubeconform, kustomize, Flux graph, Helm values).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_epilog("gitops-render configure   (then: gitops-render check in CI)"))
@click.version_option(__version__, "-V", "--version", prog_name="gitops-render")
def cli() -> None:
    """Render cluster.yaml into a validated, SOPS-encrypted Flux GitOps tree."""


@cli.command(epilog=_epilog("gitops-render render -v"))
@repo_options
@quiet_option
@verbose_option
@yes_option
@mass_prune_option
@rotate_key_option
@_handle_errors
def render(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
           yes: bool, allow_mass_prune: bool, rotate_age_key: bool) -> None:
    """Load, validate, derive, render and write (secrets encrypted); no validation of the output."""
    from gitops_render.app.pipeline import run_render

    out = Output(quiet, verbose)
    with stage_reporter(quiet) as stages:
        outcome = run_render(_opts(root, data_files, settings_file, confirm=_confirm_overwrite(yes), stages=stages,
                                    overwrite_unowned=yes, allow_mass_prune=allow_mass_prune,
                                    rotate_age_key=rotate_age_key))
    if outcome.recovered:
        out.info("completed an interrupted earlier run first (journal)")
    print_plan(out, outcome.plan, outcome.decisions)
    for n in outcome.notes:
        out.info(f"note: {n}")


@cli.command(epilog=_epilog("gitops-render configure --yes"))
@repo_options
@quiet_option
@verbose_option
@yes_option
@schema_location_option
@mass_prune_option
@rotate_key_option
@validate_option
@_handle_errors
def configure(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, verbose: bool,
              yes: bool, schema_locations: tuple[str, ...], allow_mass_prune: bool, rotate_age_key: bool,
              validate: bool) -> None:
    """Render and write the tree, then validate it (what `task configure` runs)."""
    from gitops_render.app.pipeline import run_configure

    out = Output(quiet, verbose)
    with stage_reporter(quiet) as stages:
        outcome = run_configure(_opts(root, data_files, settings_file, validate=validate,
                                      schema_locations=tuple(schema_locations) or None,
                                      confirm=_confirm_overwrite(yes), stages=stages,
                                      overwrite_unowned=yes, allow_mass_prune=allow_mass_prune,
                                      rotate_age_key=rotate_age_key))
    if outcome.recovered:
        out.info("completed an interrupted earlier run first (journal)")
    print_plan(out, outcome.plan, outcome.decisions)
    for n in outcome.notes:
        out.info(f"note: {n}")
    if outcome.validation_error is not None:
        raise outcome.validation_error
    sys.exit(print_report(out, outcome.report))


@cli.command(epilog=_epilog("gitops-render validate --schema-location default"))
@repo_options
@quiet_option
@schema_location_option
@output_option
@_handle_errors
def validate(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool,
             schema_locations: tuple[str, ...], output: str | None) -> None:
    """Validate the output tree as it is (kubeconform, kustomize, Flux graph, Helm values, YAML)."""
    from gitops_render.app.pipeline import run_validate

    out = Output(quiet, verbose=False)
    with stage_reporter(quiet) as stages:
        report = run_validate(_opts(root, data_files, settings_file, schema_locations=tuple(schema_locations) or None,
                                    stages=stages))
    sys.exit(emit_report(out, report, output))


@cli.command(epilog=_epilog("gitops-render check   (in CI, on every pull request)"))
@repo_options
@quiet_option
@schema_location_option
@validate_option
@output_option
@_handle_errors
def check(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool,
          schema_locations: tuple[str, ...], validate: bool, output: str | None) -> None:
    """CI check: the committed tree equals what configure would produce, and it is valid."""
    from gitops_render.app.pipeline import run_check

    out = Output(quiet, verbose=False)
    with stage_reporter(quiet) as stages:
        outcome = run_check(_opts(root, data_files, settings_file, validate=validate,
                                  schema_locations=tuple(schema_locations) or None, stages=stages))
    from gitops_render.validate.report import default_format

    if (output or default_format()) != "text":
        from gitops_render.validate.model import CheckResult

        report = outcome.report or CheckResult()
        report = CheckResult(report.findings, tuple(outcome.notes) + report.notes)
        drifted = tuple(str(c.path) for c in outcome.drift)
        sys.exit(max(1 if drifted else 0, emit_report(out, report, output, drifted)))
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
    sys.exit(max(code, print_report(out, outcome.report)))


@cli.command(epilog=_epilog("gitops-render diff --base origin/main --format markdown --exit-code",
                            "exit codes: 0 no changes (or without --exit-code), 1 changes or secrets that could not "
                            "be compared (--exit-code), 2 bad input, 3 internal error"))
@repo_options
@quiet_option
@click.option("--base", "base", metavar="REF",
              help="Compare the built resources (kustomize build of each Flux Kustomization) of the tree at git REF "
                   "with the working tree, instead of what configure would change.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True,
              help="markdown: a pull-request comment (summary table, collapsible diffs).")
@click.option("--exit-code", is_flag=True, help="Exit 1 when there are changes (like git diff --exit-code).")
@click.option("--graph", "with_graph", is_flag=True,
              help="With --base and --format markdown: the Mermaid picture of what the change touches, above the diff.")
@click.option("--color/--no-color", default=None,
              help="Colour the diff (default: on a terminal, unless NO_COLOR is set; FORCE_COLOR forces it).")
@_handle_errors
def diff(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, base: str | None,
         fmt: str, exit_code: bool, with_graph: bool, color: bool | None) -> None:
    """Show what configure would change (or what changed since --base REF) as diffs, secret values masked."""
    from gitops_render.app.diff import colorize

    out = Output(quiet, verbose=False)
    use_color = color_wanted(sys.stdout, color) and fmt == "text"
    if base is not None:
        if data_files:
            raise click.UsageError("--config has no effect with --base (both trees are read, not rendered)")
        from gitops_render.app.basediff import to_markdown, to_text
        from gitops_render.app.pipeline import run_base_diff

        if with_graph and fmt != "markdown":
            raise click.UsageError("--graph draws into the markdown comment: add --format markdown")
        result = run_base_diff(_opts(root, data_files, settings_file), base)
        picture = None
        if with_graph:
            from gitops_render.app.graphrun import base_diff_picture

            picture = base_diff_picture(_opts(root, data_files, settings_file), result)
        text = to_markdown(result, picture) if fmt == "markdown" else to_text(result)
        click.echo(colorize(text) if use_color else text, nl=False, color=use_color)
        if fmt == "text":
            for n in result.notes:
                out.info(f"note: {n}")
            if not result.changed:
                out.info(f"no changes against {base}")
        sys.exit(1 if exit_code and result.changed else 0)
    from gitops_render.app.pipeline import run_diff

    if with_graph:
        raise click.UsageError("--graph needs --base REF and --format markdown (working tree: graph --changed)")
    outcome = run_diff(_opts(root, data_files, settings_file))
    texts = [fd.text for fd in outcome.diffs]
    if fmt == "markdown":
        body = "".join(texts).rstrip("\n")
        click.echo(f"```diff\n{body}\n```\n" if texts else "No changes.\n", nl=False)
    else:
        for text in texts:  # color= keeps the codes when stdout is not a terminal (`diff --color | less -R`)
            click.echo(colorize(text) if use_color else text, nl=False, color=use_color)
    for n in outcome.notes:
        out.info(f"note: {n}")
    if outcome.uncompared:
        out.info(f"{outcome.uncompared} secret file(s) not compared (no age key): "
                 + ("no changes in the other files" if not texts else "the diff above covers the other files"))
    elif not texts:
        out.info("no changes")
    sys.exit(1 if exit_code and (texts or outcome.uncompared) else 0)


@cli.command(epilog=_epilog("gitops-render graph --base origin/main --format svg --output graph.svg",
                            "exit codes: 0 ok, 2 bad input or no dot for svg, 3 internal error"))
@repo_options
@quiet_option
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "svg"]), default="mermaid", show_default=True,
              help="mermaid (GitHub renders it in markdown), Graphviz DOT, or SVG (needs Graphviz's dot).")
@click.option("--changed", is_flag=True, help="Highlight what configure would change, and its blast radius.")
@click.option("--base", "base", metavar="REF", help="Highlight what changed since git REF (as diff --base does).")
@click.option("--all", "show_all", is_flag=True, help="With --changed/--base: draw every node, collapse nothing.")
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the picture to FILE instead of stdout.")
@_handle_errors
def graph(root: Path | None, data_files: tuple[Path, ...], settings_file: Path | None, quiet: bool, fmt: str,
          changed: bool, base: str | None, show_all: bool, output_file: Path | None) -> None:
    """Draw the tree's Flux graph (Kustomizations, dependsOn, HelmReleases, sources); --changed: what it touches."""
    from gitops_render.app.graphrun import run_graph, write_picture

    if changed and base is not None:
        raise click.UsageError("--changed and --base are exclusive (--changed: what configure would change)")
    if (data_files and not changed) or (show_all and not (changed or base)):
        raise click.UsageError("--config needs --changed, --all needs --changed or --base (else they do nothing)")
    outcome = run_graph(_opts(root, data_files, settings_file), fmt, changed=changed,  # type: ignore[arg-type]
                        base=base, collapse=not show_all)
    if output_file is not None:
        write_picture(output_file, outcome.text)
    else:
        click.echo(outcome.text, nl=False)
    for note in outcome.notes:
        if not quiet:
            click.echo(f"note: {note}", err=True)


@cli.command(epilog=_epilog("gitops-render init", "exit codes: 0 ok, 2 a data file without its sample, an unusable "
                                                 "key, committed secrets for a key this machine lacks, or bad "
                                                 "settings (nothing written), 3 internal error"))
@root_option
@settings_option
@quiet_option
@click.option("--new-age-key", is_flag=True,
              help="Create a new age key although committed secrets are encrypted for another one (then rotate "
                   "it: init prints the steps).")
@_handle_errors
def init(root: Path | None, settings_file: Path | None, quiet: bool, new_age_key: bool) -> None:
    """Create each data file from its sample (X.sample.EXT; strong generated secrets) and an age key; never
    overwrite."""
    from gitops_render.app.bootstrap import init_repo

    out = Output(quiet, verbose=False)
    for line in init_repo(_root(root), config_file=settings_file, new_age_key=new_age_key):
        out.info(line)


@cli.command(epilog=_epilog("gitops-render doctor", "exit codes: 0 every check passed, 1 a problem "
                                                   "(each line says how to fix it), 3 internal error"))
@root_option
@settings_option
@_handle_errors
def doctor(root: Path | None, settings_file: Path | None) -> None:
    """Check prerequisites: tools and versions, key file, settings, data, schema."""
    from gitops_render.app.bootstrap import doctor as run_doctor

    problems = 0
    for check_ in run_doctor(_root(root), config_file=settings_file):
        mark = "ok " if check_.ok else "MISSING" if check_.missing else "WARN"
        click.echo(f"[{mark:>7}] {check_.name}: {check_.detail}")
        if not check_.ok and check_.fix:
            click.echo(f"          fix: {check_.fix}")
        problems += 0 if check_.ok else 1
    sys.exit(1 if problems else 0)


@cli.group(epilog=_epilog("gitops-render secrets decrypt kubernetes/apps/x/app/secret.sops.yaml"))
def secrets() -> None:
    """Work with the repository's SOPS secrets."""


@secrets.command("decrypt", epilog=_epilog("gitops-render secrets decrypt kubernetes/apps/x/app/secret.sops.yaml",
                                           "exit codes: 0 ok, 2 no key or the key cannot decrypt it, "
                                           "3 internal error"))
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@root_option
@_handle_errors
def secrets_decrypt(path: Path, root: Path | None) -> None:
    """Print the decrypted content of PATH (to your terminal only; think before piping it)."""
    from gitops_render.app.bootstrap import decrypt_for_operator

    click.echo(decrypt_for_operator(_root(root), path.resolve()), nl=False)


SHELLS = ("bash", "zsh", "fish")


@cli.command(epilog=_epilog("gitops-render completion bash > ~/.local/share/bash-completion/completions/gitops-render",
                            "exit codes: 0 ok, 2 unknown shell"))
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish)."""
    from click.shell_completion import get_completion_class

    comp_cls = get_completion_class(shell)
    assert comp_cls is not None  # every name in SHELLS is one of click's
    comp = comp_cls(cli, {}, "gitops-render", "_GITOPS_RENDER_COMPLETE")
    click.echo(comp.source())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="gitops-render")


if __name__ == "__main__":  # pragma: no cover
    main()
