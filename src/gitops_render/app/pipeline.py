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

A failure in steps 2-5 leaves the output tree exactly as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gitops_render import write
from gitops_render.app.outcomes import CheckOutcome, DiffOutcome, RenderOutcome, RunOptions
from gitops_render.app.stages import NullReporter, StageReporter
from gitops_render.core.errors import GitopsRenderError
from gitops_render.core.load import LoadedData, load_data
from gitops_render.core.naming import STATE_DIR, is_secret_path
from gitops_render.core.runner import ToolRunner
from gitops_render.settings import hooks, sources

if TYPE_CHECKING:  # the stage modules are imported lazily at run time (CLI start-up)
    from gitops_render.app.basediff import BaseDiff
    from gitops_render.render.engine import RenderResult
    from gitops_render.secrets.policy import SecretDecision
    from gitops_render.secrets.sops import SopsContext
    from gitops_render.settings.model import Settings
    from gitops_render.validate.model import ValidateSettings, ValidationReport
    from gitops_render.write import DesiredFile, Manifest, Plan

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
    "run_base_diff",
    "run_check",
    "run_configure",
    "run_diff",
    "run_render",
    "run_validate",
]



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


def _settings(opts: RunOptions) -> Settings:
    overrides: dict[str, Any] = {}
    if opts.data_files:
        overrides["data"] = tuple(Path(p).resolve() for p in opts.data_files)
    if opts.output is not None:
        overrides["output"] = Path(opts.output).resolve()
    return sources.load_settings(Path(opts.root).resolve(), config_file=opts.config_file, overrides=overrides)


def _runner(opts: RunOptions, settings: Settings) -> ToolRunner:
    return opts.runner if opts.runner is not None else settings.runtime.tool_runner()


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


def _age_identity(settings: Settings) -> dict[str, str]:
    """The age identities of the repository's key file: always sensitive (none when it is absent)."""
    from gitops_render.secrets.keys import read_identities

    if settings.age_key_file is None:
        return {}
    path = Path(settings.age_key_file)
    try:
        identities = read_identities(path).identities
    except (GitopsRenderError, OSError):
        return {}
    return {f"age identity ({path.name})" + (f"[{i}]" if len(identities) > 1 else ""): ident
            for i, ident in enumerate(identities)}


def prepare(opts: RunOptions, settings: Settings | None = None) -> Prepared:
    """Load, validate, derive and render in memory; run the leak guard."""
    from gitops_render.render import engine as render
    from gitops_render.secrets import leak

    settings = settings or _settings(opts)
    render.check_input_symlinks(settings.inputs)
    runner = _runner(opts, settings)
    loaded = load_data(list(settings.data), data_vars=settings.data_vars, display_root=Path(settings.root))
    data: dict[str, Any] = loaded.data
    sensitive: dict[str, str] = _age_identity(settings)
    schema_cache = Path(settings.root) / STATE_DIR / "cache"  # checked schemas, compiled templates
    if isinstance(settings.schema, Mapping):  # one schema per data file
        from gitops_render.data.schema import load_schema, validate_per_file

        parts = [(load_data([f], display_root=Path(settings.root)), load_schema(s, cache_dir=schema_cache))
                 for f, s in settings.schema.items()]
        data, per_file = validate_per_file(data, parts, cache_dir=schema_cache)
        sensitive.update(per_file)
    elif settings.schema is not None:
        from gitops_render.data.schema import (
            load_schema,
            sensitive_values,
            validate_data,
        )

        schema = load_schema(settings.schema, cache_dir=schema_cache)
        data = validate_data(loaded, schema, cache_dir=schema_cache)
        sensitive |= sensitive_values(data, schema)
    opts.stages.start("render")
    try:
        result = render.render_tree(settings, data, cache_dir=schema_cache / "jinja")
    except GitopsRenderError as exc:  # a template/plugin error may quote a value it was handed
        raise _mask_error(exc, sensitive) from None
    opts.stages.done("render", f"{len(result.files)} files")
    leak.check_leaks({p: f.content for p, f in result.files.items()}, sensitive)
    return Prepared(settings, loaded, data, result, sensitive, runner)


def _sops_context(settings: Settings, runner: ToolRunner, result: RenderResult | None = None) -> SopsContext:
    """The secrets stage's context, with the rendered .sops.yaml when ``result`` renders one."""
    from gitops_render.secrets import sops

    root = Path(settings.root)
    key_file, sops_config = _resolved(settings.age_key_file), _resolved(settings.sops_config_file)
    rendered = _rendered_at(settings, result, sops_config)
    config_text = rendered.decode() if rendered is not None else None
    if config_text is None and sops_config.is_file():
        config_text = sops_config.read_text()
    parallelism = settings.secrets.parallelism or sops.default_parallelism()
    return sops.SopsContext(repo_root=root, age_key_file=key_file, sops_config_text=config_text,
                            runner=runner, parallelism=parallelism,
                            cache_dir=root / STATE_DIR / "cache")


def _resolved(path: Path | None) -> Path:
    assert path is not None, "load_settings resolves the key file and the sops config"
    return path


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


def _desired(prep: Prepared, *, need_key: bool,
             stages: StageReporter) -> tuple[dict[PurePosixPath, DesiredFile], list[SecretDecision], list[str]]:
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

        ctx = dataclasses.replace(_sops_context(prep.settings, prep.runner, prep.result),
                                  sensitive=tuple(sorted(prep.sensitive.items())))
        key_ok = Path(ctx.age_key_file).is_file()
        if need_key or key_ok:  # reconcile runs the sops preflight (once per run) before any sops call
            stages.start("encrypt", total=len(plaintexts))
            decisions = secrets.reconcile(ctx, plaintexts, prep.output_root,
                                          root_rel=lambda p: _root_rel(prep, p))
            stages.done("encrypt", f"{len(decisions)} secrets")
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


def _inputs(settings: Settings) -> write.Inputs:
    """What the run reads, which prune never deletes whatever the manifest says."""
    file_data = [p for paths in settings.file_data.values() for p in paths]
    schemas = ([*settings.schema.keys(), *settings.schema.values()] if isinstance(settings.schema, Mapping)
               else [settings.schema])
    return write.Inputs.of([*settings.inputs, *settings.data, *file_data, *schemas, settings.config_file],
                           code_dirs=settings.import_paths)


def plan_changes(prep: Prepared, *, need_key: bool = True,
                 stages: StageReporter | None = None) -> tuple[Plan, list[SecretDecision], list[str]]:
    """The write plan for the prepared render (nothing is written)."""
    desired, decisions, notes = _desired(prep, need_key=need_key, stages=stages or NullReporter())
    keep = frozenset(getattr(prep.result, "skipped_existing", ()) or ())
    plan = write.make_plan(prep.output_root, desired, _manifest(prep), keep=keep,
                           repo_root=Path(prep.settings.root), inputs=_inputs(prep.settings),
                           dir_modes=prep.result.dir_modes)
    return plan, decisions, notes


def _validate_settings(settings: Settings, opts: RunOptions) -> ValidateSettings:
    from gitops_render import validate

    return validate.ValidateSettings.from_settings(settings, schema_location_override=opts.schema_locations)


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

        validate.preflight_tools(_runner(opts, settings))
    state_dir = Path(settings.root) / STATE_DIR
    inputs = _inputs(settings)
    # a run that stops before writing leaves no new file or directory in the state dir
    with write.StateSession.begin(state_dir) as state, \
            write.RepoLock(state_dir, timeout=opts.lock_timeout, repo=Path(settings.root),
                           on_error=state.discard_holding_lock):
        recovered = write.recover(state_dir, Path(settings.output), may_remove=lambda p: not inputs.holds(p))
        hooks.run_exec_hooks(settings, "pre")
        prep = prepare(opts, settings)
        if not opts.rotate_age_key:  # a new key never silently takes over secrets encrypted for another one
            from gitops_render.secrets.continuity import refuse_foreign
            refuse_foreign(Path(settings.root), _resolved(settings.age_key_file), output_root=prep.output_root,
                           files=[prep.output_root / p for p in prep.secret_plaintexts()])
        plan, decisions, notes = plan_changes(prep, need_key=True, stages=opts.stages)
        asked = {write.WarningKind.EDITED_OVERWRITTEN, write.WarningKind.UNOWNED_OVERWRITTEN}
        overwritten = [w for w in plan.warnings if w.kind in asked]
        confirmed = opts.overwrite_unowned
        if overwritten and opts.confirm is not None:
            if not opts.confirm(plan):
                raise GitopsRenderError(f"nothing written: {len(overwritten)} file(s) edited or written by hand "
                                        "would be overwritten", hint="move the edits into templates/ or "
                                                                     "cluster.yaml, or rerun with --yes")
            confirmed = True
        write.check_plan(plan, allow_mass_prune=opts.allow_mass_prune, overwrite_unowned=confirmed)
        opts.stages.start("write")
        write.apply_plan(plan, state_dir)  # fails with the tree unchanged, or keeps its journal
        opts.stages.done("write", f"{len(plan.added) + len(plan.changed) + len(plan.removed)} files")
        state.mark_written()
        try:
            hooks.run_exec_hooks(settings, "post")
        except GitopsRenderError as exc:  # the tree IS written: say so, and do not exit 2
            exc.message = f"the tree was written ({plan.summary()}), but exec_post failed: {exc.message}"
            exc.args = (exc.message,)
            exc.exit_code = 1
            raise
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
    # GITOPS_RENDER_VALIDATE_CACHE=0: no cache directory, so nothing is read or stored
    cache_dir = prep.state_dir / "cache" if prep.settings.runtime.validate_cache else None
    key = validate_cache.validation_key(prep.output_root, vs, runner=prep.runner, cache_dir=cache_dir,
                                        plaintexts=plaintexts, secret_key=secret_key)
    report = validate_cache.cached_report(key)
    opts.stages.start("validate")
    if report is None:
        # something changed: only the kustomizations and documents it touches go to the tools again
        units = (validate_cache.UnitCache(cache_dir, vs, runner=prep.runner, output_root=prep.output_root,
                                          secret_key=secret_key)
                 if cache_dir is not None else None)
        report = validate.validate_tree(prep.output_root, vs, runner=prep.runner, plaintexts=plaintexts,
                                        unit_cache=units)
        if units is not None:
            units.save()
        validate_cache.store_report(key, report)
    opts.stages.done("validate", f"kustomize + kubeconform, {len(report.findings)} finding(s)")
    return report


def run_configure(opts: RunOptions) -> RenderOutcome:
    """What ``task configure`` runs: render, then validate (unless ``opts.validate`` is off)."""
    return run_render(opts, validate_after=opts.validate)


def run_check(opts: RunOptions) -> CheckOutcome:
    """CI: would configure change anything? Is the committed tree valid? Nothing is written."""
    settings = _settings(opts)
    with write.StateSession.begin(Path(settings.root) / STATE_DIR):  # caches only; tidy on an early exit
        prep = prepare(opts, settings)
        plan, _decisions, notes = plan_changes(prep, need_key=False, stages=opts.stages)
    report = None
    if opts.validate:
        from gitops_render import validate

        plaintexts = prep.secret_plaintexts() if not notes else None
        opts.stages.start("validate")
        report = validate.validate_tree(prep.output_root, _validate_settings(prep.settings, opts), runner=prep.runner,
                                        plaintexts=plaintexts)
        opts.stages.done("validate", f"kustomize + kubeconform, {len(report.findings)} finding(s)")
    return CheckOutcome(plan=plan, report=report, notes=notes)


def run_validate(opts: RunOptions) -> ValidationReport:
    """Validate the output tree as it is on disk (no rendering)."""
    from gitops_render import validate

    settings = _settings(opts)
    runner = _runner(opts, settings)
    vs = _validate_settings(settings, opts)
    opts.stages.start("validate")
    report = validate.validate_tree(Path(settings.output), vs, runner=runner,
                                    decrypt=decrypt_callback(settings, runner))
    opts.stages.done("validate", f"kustomize + kubeconform, {len(report.findings)} finding(s)")
    return report


def run_diff(opts: RunOptions) -> DiffOutcome:
    """What configure would change, as unified diffs; secrets decrypted and masked. Nothing is written."""
    from gitops_render.app.diff import plan_diffs

    prep = prepare(opts)
    plan, _decisions, notes = plan_changes(prep, need_key=False)
    diffs = list(plan_diffs(plan, prep.output_root, secret_plaintexts=prep.secret_plaintexts(),
                            decrypt=decrypt_callback(prep.settings, prep.runner, prep.result),
                            sensitive_values=prep.sensitive.values()))
    uncompared = len(prep.secret_plaintexts()) if notes else 0  # the only note: no key, presence only
    return DiffOutcome(diffs, notes, uncompared)


def run_base_diff(opts: RunOptions, base: str) -> BaseDiff:
    """``diff --base REF``: the built resources at ``base`` against the working tree (nothing rendered)."""
    from gitops_render.app.basediff import base_diff

    settings = _settings(opts)
    runner = _runner(opts, settings)
    return base_diff(base, Path(settings.root), Path(settings.output), runner=runner,
                     decrypt=decrypt_callback(settings, runner))
