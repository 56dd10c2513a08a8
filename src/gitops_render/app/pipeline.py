"""Orchestration of the stages for ``render``, ``configure``, ``check`` and ``diff``.

Each public function takes a :class:`RunOptions` and returns a result
dataclass; nothing here prints. The order of a run:

1. take the repository lock and finish an interrupted apply (journal);
2. settings, data, schema (defaults applied), plugins, render — all in memory;
3. leak guard on the rendered outputs;
4. secrets: ``*.sops.*`` outputs become ciphertext in memory (unchanged secrets
   keep their exact bytes);
5. plan, then stage + journal + apply (``render``/``configure``) or compare
   (``check``/``diff``);
6. validation of the tree (``configure``, ``check``, ``validate``).

A failure in steps 2–5 leaves the output tree exactly as it was.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gitops_render import write
from gitops_render.core.errors import ConfigError, GitopsRenderError
from gitops_render.core.load import LoadedData, load_data
from gitops_render.core.naming import STATE_DIR, is_secret_path
from gitops_render.core.runner import ToolRunner
from gitops_render.settings import config as config_mod

if TYPE_CHECKING:  # the stage modules are imported lazily at run time (CLI start-up)
    from gitops_render.app.diff import FileDiff
    from gitops_render.render.engine import RenderResult
    from gitops_render.secrets.policy import SecretDecision
    from gitops_render.secrets.sops import SopsContext
    from gitops_render.settings.config import Settings
    from gitops_render.validate.model import ValidateSettings, ValidationReport
    from gitops_render.write.apply import DesiredFile, Manifest, Plan, PlannedChange

# The stage modules (render/jinja2, schema/jsonschema, secrets, sops, leak, validate and
# its checks) are imported where they are used: a command loads only what it runs.

__all__ = [
    "STATE_DIR",
    "CheckOutcome",
    "DiffOutcome",
    "Prepared",
    "RenderOutcome",
    "RunOptions",
    "decrypt_callback",
    "is_secret_path",
    "plan_changes",
    "prepare",
    "run_check",
    "run_configure",
    "run_diff",
    "run_render",
    "run_validate",
]



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
    # Asked before applying a plan that overwrites generated files edited by hand;
    # None (non-interactive, --yes) applies without asking.
    confirm: Callable[[Plan], bool] | None = None


@dataclass
class Prepared:
    """Everything computed in memory before anything is written."""

    settings: Settings
    loaded: LoadedData
    data: dict[str, Any]
    result: RenderResult
    sensitive: dict[str, str]
    runner: ToolRunner

    @property
    def output_root(self) -> Path:
        return Path(self.settings.output)

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.root) / STATE_DIR

    def secret_plaintexts(self) -> dict[PurePosixPath, bytes]:
        return {p: f.content for p, f in self.result.files.items() if is_secret_path(p)}


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


def _settings(opts: RunOptions) -> Settings:
    overrides: dict[str, Any] = {}
    if opts.data_files:
        overrides["data"] = tuple(Path(p).resolve() for p in opts.data_files)
    if opts.output is not None:
        overrides["output"] = Path(opts.output).resolve()
    return config_mod.load_settings(Path(opts.root).resolve(), config_file=opts.config_file, overrides=overrides)


def _runner(opts: RunOptions) -> ToolRunner:
    if opts.runner is not None:
        return opts.runner
    timeout = os.environ.get("GITOPS_RENDER_TIMEOUT")
    if timeout:
        try:
            t = float(timeout)
        except ValueError:
            raise ConfigError(f"GITOPS_RENDER_TIMEOUT={timeout!r} is not a number of seconds") from None
        return ToolRunner(timeouts=dict.fromkeys(("sops", "kubeconform", "kustomize", "helm", "age", "age-keygen"), t))
    return ToolRunner()


def _mask_error(exc: GitopsRenderError, sensitive: Mapping[str, str]) -> GitopsRenderError:
    """``exc`` with every sensitive value in its message and hint replaced by ``***``, naming the field."""
    from gitops_render.core.mask import mask

    hidden = []
    for name, value in sensitive.items():
        masked_message, masked_hint = mask(exc.message, [value]), mask(exc.hint or "", [value])
        if masked_message != exc.message or masked_hint != (exc.hint or ""):
            exc.message, exc.hint = masked_message, (masked_hint or None)
            hidden.append(name)
    if hidden:
        exc.message += f"\n  (the value of {', '.join(sorted(hidden))} is hidden as ***)"
        exc.args = (exc.message,)
    return exc


def prepare(opts: RunOptions, settings: Settings | None = None) -> Prepared:
    """Load, validate, derive and render in memory; run the leak guard."""
    from gitops_render.render import engine as render
    from gitops_render.secrets import leak

    settings = settings or _settings(opts)
    render.check_input_symlinks(settings.inputs)
    runner = _runner(opts)
    loaded = load_data(list(settings.data), data_vars=settings.data_vars, display_root=Path(settings.root))
    data: dict[str, Any] = loaded.data
    sensitive: dict[str, str] = {}
    if settings.schema is not None:
        from gitops_render.data.schema import (
            load_schema,
            sensitive_paths,
            validate_data,
        )

        schema = load_schema(Path(settings.schema))
        data = validate_data(loaded, schema)
        sensitive = sensitive_paths(schema, data)
    cache_dir = Path(settings.root) / STATE_DIR / "cache" / "jinja"
    try:
        result = render.render_tree(settings, data, cache_dir=cache_dir)
    except GitopsRenderError as exc:  # a template/plugin error may quote a value it was handed
        raise _mask_error(exc, sensitive) from None
    leak.check_leaks({p: f.content for p, f in result.files.items()}, sensitive)
    return Prepared(settings, loaded, data, result, sensitive, runner)


def _sops_context(settings: Settings, runner: ToolRunner, result: RenderResult | None = None) -> SopsContext:
    """The secrets stage's context, with the rendered .sops.yaml when ``result`` renders one."""
    from gitops_render.secrets import sops

    table: Mapping[str, Any] = settings.secrets or {}
    root = Path(settings.root)
    key_file = Path(os.environ.get("SOPS_AGE_KEY_FILE") or root / table.get("age_key_file", "age.key"))
    sops_config = str(table.get("sops_config", ".sops.yaml"))
    rendered = _rendered_at(settings, result, root / sops_config)
    config_text = rendered.decode() if rendered is not None else None
    if config_text is None and (root / sops_config).is_file():
        config_text = (root / sops_config).read_text()
    parallelism = int(table.get("parallelism", min(8, (os.cpu_count() or 2) * 2)))
    return sops.SopsContext(repo_root=root, age_key_file=key_file, sops_config_text=config_text,
                            runner=runner, parallelism=parallelism,
                            cache_dir=root / STATE_DIR / "cache")


def _rendered_at(settings: Settings, result: RenderResult | None, target: Path) -> bytes | None:
    """The rendered content of ``target`` (None when the render does not produce it)."""
    if result is None:
        return None
    try:
        rel = PurePosixPath(target.resolve().relative_to(Path(settings.output).resolve()).as_posix())
    except ValueError:
        return None
    f = result.files.get(rel)
    return f.content if f is not None else None


def _root_rel(prep: Prepared, rel: PurePosixPath) -> PurePosixPath:
    """Path of an output file relative to the repo root (what .sops.yaml rules match)."""
    full = prep.output_root / rel
    try:
        return PurePosixPath(full.resolve().relative_to(Path(prep.settings.root).resolve()).as_posix())
    except ValueError:
        return rel


def _desired(prep: Prepared, *, need_key: bool) -> tuple[dict[PurePosixPath, DesiredFile], list[SecretDecision], list[str]]:
    """Rendered files as the writer wants them: secrets replaced by their ciphertext."""
    desired: dict[PurePosixPath, DesiredFile] = {}
    for rel, f in prep.result.files.items():
        if not is_secret_path(rel):
            desired[rel] = write.DesiredFile(content=f.content, mode=f.mode)
    plaintexts = prep.secret_plaintexts()
    notes: list[str] = []
    decisions: list[SecretDecision] = []
    if plaintexts:
        from gitops_render.secrets import policy as secrets
        from gitops_render.secrets import sops

        ctx = _sops_context(prep.settings, prep.runner, prep.result)
        key_ok = Path(ctx.age_key_file).is_file()
        if need_key or key_ok:
            sops.preflight(ctx)
            decisions = secrets.reconcile(ctx, plaintexts, prep.output_root,
                                          root_rel=lambda p: _root_rel(prep, p))
            for d in decisions:
                mode = prep.result.files[d.path].mode
                desired[d.path] = write.DesiredFile(content=d.ciphertext, mode=mode, secret=True)
        else:
            decisions = []
            for rel in plaintexts:
                existing = prep.output_root / rel
                if existing.is_file():
                    desired[rel] = write.DesiredFile(content=existing.read_bytes(),
                                                     mode=prep.result.files[rel].mode, secret=True)
                else:
                    desired[rel] = write.DesiredFile(content=b"", mode=None, secret=True)
            notes.append(f"no age key at {ctx.age_key_file}: secret contents were not compared "
                         f"({len(plaintexts)} secret file(s) checked for presence only)")
    return desired, decisions, notes


def _manifest(prep: Prepared) -> Manifest:
    return write.load_manifest(prep.state_dir)


def plan_changes(prep: Prepared, *, need_key: bool = True) -> tuple[Plan, list[SecretDecision], list[str]]:
    """The write plan for the prepared render (nothing is written)."""
    desired, decisions, notes = _desired(prep, need_key=need_key)
    keep = frozenset(getattr(prep.result, "skipped_existing", ()) or ())
    plan = write.make_plan(prep.output_root, desired, _manifest(prep), keep=keep,
                           repo_root=Path(prep.settings.root))
    return plan, decisions, notes


def _validate_settings(settings: Settings, opts: RunOptions) -> ValidateSettings:
    from gitops_render import validate

    return validate.ValidateSettings.from_settings(
        settings.validate or {}, settings.cluster or {}, Path(settings.root),
        schema_location_override=opts.schema_locations, delimiter_table=dataclasses.asdict(settings.delimiter),
        compat=settings.compat)


def decrypt_callback(settings: Settings, runner: ToolRunner,
                     result: RenderResult | None = None) -> Callable[[Path], bytes] | None:
    """``path -> plaintext`` through the real ``sops --decrypt`` with the repo's key (None without a key)."""
    try:
        ctx = _sops_context(settings, runner, result)
    except GitopsRenderError:  # validation and diff degrade gracefully without secrets support
        return None
    if not Path(ctx.age_key_file).is_file():
        return None
    from gitops_render.secrets import sops

    return lambda path: sops.decrypt_file(ctx, Path(path))


def run_render(opts: RunOptions, *, validate_after: bool = False) -> RenderOutcome:
    """``render`` (and, with ``validate_after``, ``configure``): write the rendered tree."""
    settings = _settings(opts)
    if validate_after:
        from gitops_render import validate

        validate.preflight_tools(_runner(opts))
    state_dir = Path(settings.root) / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    with write.RepoLock(state_dir, timeout=opts.lock_timeout, repo=Path(settings.root)):
        recovered = write.recover(state_dir, Path(settings.output))
        config_mod.run_exec_hooks(settings, "pre")
        prep = prepare(opts, settings)
        plan, decisions, notes = plan_changes(prep, need_key=True)
        overwritten = [w for w in plan.warnings if w.kind is write.WarningKind.EDITED_OVERWRITTEN]
        if overwritten and opts.confirm is not None and not opts.confirm(plan):
            raise GitopsRenderError(f"nothing written: {len(overwritten)} hand-edited generated file(s) would be "
                                    "overwritten", hint="move the edits into templates/ or cluster.yaml, "
                                                        "or rerun with --yes")
        write.apply_plan(plan, state_dir)
        config_mod.run_exec_hooks(settings, "post")
    outcome = RenderOutcome(plan=plan, decisions=decisions, notes=notes, recovered=recovered)
    if validate_after:
        try:
            outcome.report = _validate_cached(prep, opts, prep.secret_plaintexts())
        except GitopsRenderError as exc:
            exc.message = f"the tree was written, but validation could not run: {exc.message}"
            exc.args = (exc.message,)
            outcome.validation_error = exc
    return outcome


def _fingerprint_key(prep: Prepared) -> bytes | None:
    """The keyed-fingerprint key (from the age identity) that keys secret plaintexts in caches."""
    from gitops_render.secrets.keys import derive_fingerprint_key, read_identities

    try:
        return derive_fingerprint_key(read_identities(Path(_sops_context(prep.settings, prep.runner).age_key_file)))
    except Exception:
        return None


def _validate_cached(prep: Prepared, opts: RunOptions, plaintexts: dict[PurePosixPath, bytes]) -> ValidationReport:
    """validate.validate_tree, skipped when the result cache holds a report for exactly these inputs."""
    from gitops_render import validate
    from gitops_render.validate import cache as validate_cache

    vs = _validate_settings(prep.settings, opts)
    secret_key = _fingerprint_key(prep) if plaintexts else None
    cache_dir = prep.state_dir / "cache"
    key = validate_cache.validation_key(prep.output_root, vs, runner=prep.runner, cache_dir=cache_dir,
                                        plaintexts=plaintexts, secret_key=secret_key)
    report = validate_cache.cached_report(key)
    if report is None:
        # something changed: only the kustomizations and documents it touches go to the tools again
        units = (validate_cache.UnitCache(cache_dir, vs, runner=prep.runner, output_root=prep.output_root,
                                          secret_key=secret_key)
                 if validate_cache.caching_enabled() else None)
        report = validate.validate_tree(prep.output_root, vs, runner=prep.runner, plaintexts=plaintexts,
                                        unit_cache=units)
        if units is not None:
            units.save()
        validate_cache.store_report(key, report)
    return report


def run_configure(opts: RunOptions) -> RenderOutcome:
    """What ``task configure`` runs: render, then validate (unless ``opts.validate`` is off)."""
    return run_render(opts, validate_after=opts.validate)


def run_check(opts: RunOptions) -> CheckOutcome:
    """CI: would configure change anything? Is the committed tree valid? Nothing is written."""
    settings = _settings(opts)
    prep = prepare(opts, settings)
    plan, _decisions, notes = plan_changes(prep, need_key=False)
    report = None
    if opts.validate:
        from gitops_render import validate

        plaintexts = prep.secret_plaintexts() if not notes else None
        report = validate.validate_tree(prep.output_root, _validate_settings(prep.settings, opts), runner=prep.runner,
                                        plaintexts=plaintexts)
    return CheckOutcome(plan=plan, report=report, notes=notes)


def run_validate(opts: RunOptions) -> ValidationReport:
    """Validate the output tree as it is on disk (no rendering)."""
    from gitops_render import validate

    settings = _settings(opts)
    runner = _runner(opts)
    vs = _validate_settings(settings, opts)
    return validate.validate_tree(Path(settings.output), vs, runner=runner,
                                  decrypt=decrypt_callback(settings, runner))


@dataclass
class DiffOutcome:
    """What ``diff`` shows: one masked unified diff per file that configure would change."""

    diffs: list[FileDiff]
    notes: list[str] = field(default_factory=list)


def run_diff(opts: RunOptions) -> DiffOutcome:
    """What configure would change, as unified diffs; secrets decrypted and masked. Nothing is written."""
    from gitops_render.app.diff import plan_diffs

    prep = prepare(opts)
    plan, _decisions, notes = plan_changes(prep, need_key=False)
    diffs = list(plan_diffs(plan, prep.output_root, secret_plaintexts=prep.secret_plaintexts(),
                            decrypt=decrypt_callback(prep.settings, prep.runner, prep.result),
                            sensitive_values=prep.sensitive.values()))
    return DiffOutcome(diffs, notes)
