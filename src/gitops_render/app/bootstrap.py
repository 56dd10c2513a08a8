"""Repository bootstrap and health: ``init``, ``doctor``, ``secrets decrypt``."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

from gitops_render.core.errors import ConfigError, SecretsError, ToolError
from gitops_render.core.netcheck import CONNECT_TIMEOUT, KUBECONFORM_DEFAULT, check_location
from gitops_render.core.runner import MIN_VERSIONS, ToolRunner, install_hint
from gitops_render.data import samples
from gitops_render.data.schema import load_schema
from gitops_render.secrets import continuity, keys
from gitops_render.settings import RuntimeEnv, Settings, load_settings

__all__ = ["GITIGNORE_LINES", "KNOWN_BAD", "DoctorCheck", "committed_foreign", "decrypt_for_operator", "doctor",
           "ensure_gitignore", "init_repo", "parse_version", "schema_location_check"]

#: Releases known not to work, with the reason (none so far; newer releases than the minimum are fine).
KNOWN_BAD: dict[str, dict[str, str]] = {}


def _settings(root: Path, config_file: Path | None) -> Settings:
    return load_settings(root, config_file=config_file)


def _key_file(settings: Settings) -> Path:
    """The key file, resolved once by the settings (``SOPS_AGE_KEY_FILE`` > ``[secrets] age_key_file``)."""
    assert settings.age_key_file is not None
    return settings.age_key_file


@dataclass(frozen=True)
class _NewDataFile:
    target: Path
    sample: Path
    made: samples.SampleText


def _plan_data_files(settings: Settings) -> tuple[list[Path], list[_NewDataFile]]:
    """(data files kept, data files to create from their samples); nothing is written."""
    entries = [Path(p) for p in settings.data if not Path(p).is_dir()] or [Path(settings.root) / "cluster.yaml"]
    kept, new, missing = [], [], []
    merged = settings.schema is not None and not isinstance(settings.schema, Mapping)
    for index, target in enumerate(entries):
        if target.exists():
            kept.append(target)
            continue
        sample = samples.sample_for(target)
        if sample is None:
            missing.append(target)
            continue
        schema_path = settings.schema_for(target)
        schema = load_schema(schema_path) if schema_path is not None else None
        # one schema for the merged data: a field no sample names is generated into the first data file only
        new.append(_NewDataFile(target, sample, samples.from_sample(sample, schema, create=not merged or index == 0)))
    if missing:
        wanted = ", ".join(f"{_rel(settings, t)} (sample {t.stem}.sample{t.suffix})" for t in missing)
        raise ConfigError(f"init: no sample for the data file(s) {wanted} in {settings.root}; nothing was written",
                          hint="run init in the repository root (or pass --root), or create the data file(s) "
                               "by hand; init makes each data entry of the settings from X.sample.EXT beside it")
    return kept, new


def _rel(settings: Settings, path: Path) -> str:
    try:
        return path.resolve().relative_to(Path(settings.root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _write_private(target: Path, text: str) -> None:
    """Write ``target`` with mode 0600 (data files hold plaintext secrets), never over an existing file."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, target)  # fails if the file appeared meanwhile: never overwritten
    except FileExistsError:
        raise ConfigError(f"{target.name} appeared while init ran; it was kept as it is") from None
    finally:
        tmp.unlink(missing_ok=True)


def committed_foreign(settings: Settings) -> continuity.ForeignSecrets | None:
    """Committed secrets and creation rules the key file cannot open (the second-machine trap)."""
    output = Path(settings.output)
    files = continuity.secret_files_on_disk(output, skip=settings.inputs)
    return continuity.foreign_secrets(Path(settings.root), _key_file(settings), files, output_root=output,
                                      sops_config=settings.sops_config_file)


def init_repo(root: Path, *, config_file: Path | None = None, runner: ToolRunner | None = None,
              new_age_key: bool = False) -> Iterator[str]:
    """Create each data file from its sample (with generated secrets) and an age key. Never overwrites.

    Everything is checked before anything is written: a data entry without a sample, a key file
    that sops cannot use, or committed secrets encrypted for a key this machine does not have
    (unless ``new_age_key``) stop init with nothing written.
    """
    settings = _settings(root, config_file)
    runner = runner or settings.runtime.tool_runner()
    kept, new = _plan_data_files(settings)
    key_file = _key_file(settings)
    foreign = committed_foreign(settings)
    if key_file.exists():
        if new_age_key:
            raise ConfigError(f"init --new-age-key: {key_file.name} exists and is never overwritten; nothing was "
                              "written", hint=f"move {key_file} aside first (keep it until every secret is "
                                              "re-encrypted and the cluster has the new key)")
        keys.read_public_keys(key_file)  # a post-quantum or broken key is named now, not at configure
    elif foreign is not None and not new_age_key:
        raise SecretsError(f"refusing to create a new age key: {foreign.what()}, and {key_file.name} is not on "
                           f"this machine ({key_file}). A new key could not decrypt them, and the cluster "
                           f"still decrypts with the old one ({foreign.cluster_secret()}); nothing was written",
                           hint=foreign.restore_hint("gitops-render init --new-age-key"))
    for target in kept:
        yield f"kept {_rel(settings, target)}: it exists (never overwritten)"
    for item in new:
        _write_private(item.target, item.made.text)
        filled = f" ({len(item.made.generated)} generated secret(s) filled in)" if item.made.generated else ""
        yield (f"created {_rel(settings, item.target)} from {item.sample.name}{filled}, mode 0600; "
               "edit it, then run configure")
    if key_file.exists():
        yield f"kept {key_file.name}: it exists (never overwritten)"
        if foreign is not None and foreign.files:
            yield (f"warning: {foreign.what()}, which {key_file.name} cannot decrypt: "
                   + foreign.restore_hint("gitops-render init --new-age-key"))
    else:
        keys.generate_key_file(key_file, runner=runner)
        yield f"created age key {key_file.name} (public key {keys.public_key(key_file)}); back it up, never commit it"
        if foreign is not None:
            yield f"new age key: {foreign.what()} (the old key); rotate them to the new one:"
            yield from (f"  {n}. {step}" for n, step in
                        enumerate(foreign.rotation_steps("gitops-render configure --rotate-age-key"), 1))
    added = ensure_gitignore(root, [*kept, *(i.target for i in new)], key_file)
    if added:
        yield f"added to .gitignore: {', '.join(added)}"


#: What a cluster repo must never commit (plaintext data, the private key) and local state.
GITIGNORE_LINES = ("cluster.yaml", "age.key", ".gitops-render/cache/", ".gitops-render/lock",
                   ".gitops-render/journal.json")


def ensure_gitignore(root: Path, data_files: Sequence[Path], key_file: Path) -> list[str]:
    """Append the missing ignore lines to ``root/.gitignore`` (never removes or reorders lines).

    The data files (plaintext, generated secrets) and the key file are ignored at their paths.
    """
    wanted = []
    for path in [*data_files, key_file]:
        try:
            wanted.append(Path(path).resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            continue  # outside the repo: nothing to ignore here
    wanted += GITIGNORE_LINES[2:]
    gitignore = root / ".gitignore"
    text = gitignore.read_text(encoding="utf-8") if gitignore.is_file() else ""
    present = {ln.strip().lstrip("/") for ln in text.splitlines()}
    patterns = [ln for ln in present if ln and not ln.startswith(("#", "!"))]
    missing = [ln for ln in dict.fromkeys(wanted) if ln not in present and not any(fnmatch(ln, p) for p in patterns)]
    if missing:
        block = "# gitops-render: plaintext data, the private key and local state stay out of git\n"
        block += "".join(f"{ln}\n" for ln in missing)
        gitignore.write_text(text + ("" if not text or text.endswith("\n") else "\n") + block, encoding="utf-8")
    return missing


@dataclass(frozen=True)
class DoctorCheck:
    """One line of ``doctor``'s report."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    missing: bool = False


def parse_version(text: str) -> tuple[int, ...] | None:
    """The first ``X.Y[.Z]`` in a tool's version output.

    >>> parse_version("sops 3.13.3 (latest)"), parse_version("v0.8.0"), parse_version("{Version:kustomize/v5.8.0}")
    ((3, 13, 3), (0, 8, 0), (5, 8, 0))
    >>> parse_version("development") is None
    True
    """
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in found.groups() if g is not None) if found else None


def _tool_check(runner: ToolRunner, tool: str) -> DoctorCheck:
    try:
        path = runner.which(tool)
    except ToolError as exc:
        return DoctorCheck(tool, False, "not found", fix=exc.hint or install_hint(tool), missing=True)
    version = runner.version(tool)
    found, minimum = parse_version(version), parse_version(MIN_VERSIONS.get(tool, "0"))
    bad = KNOWN_BAD.get(tool, {}).get(".".join(map(str, found or ())))
    if bad:
        return DoctorCheck(tool, False, f"{version} at {path}: known bad ({bad})", fix=install_hint(tool))
    if found is not None and minimum is not None and found < minimum:
        return DoctorCheck(tool, False, f"{version} at {path} is older than {MIN_VERSIONS[tool]}",
                           fix=install_hint(tool))
    return DoctorCheck(tool, True, f"{version} ({path})")


def schema_location_check(location: str, *, timeout: float = CONNECT_TIMEOUT) -> DoctorCheck:
    """Whether a kubeconform ``-schema-location`` can be read: a local directory exists, a host answers."""
    checked = check_location(location, timeout=timeout)
    if checked.ok:
        return DoctorCheck("schemas", True, f"{location} ({checked.detail})")
    if not checked.remote:
        return DoctorCheck("schemas", False, f"{location}: {checked.detail}",
                           fix="fix [gitops-render.validate] schema_locations or GITOPS_RENDER_SCHEMA_LOCATION",
                           missing=True)
    return DoctorCheck("schemas", False, f"{location}: {checked.detail}",
                       fix="offline? point GITOPS_RENDER_SCHEMA_LOCATION at a local schema mirror "
                           "(see docs/troubleshooting.md)")


def doctor(root: Path, *, config_file: Path | None = None, runner: ToolRunner | None = None) -> Iterator[DoctorCheck]:
    """Check tools, settings, data file, schema and key; every problem comes with a fix."""
    runner = runner or RuntimeEnv.from_environ(os.environ).tool_runner()  # before the settings: they may be broken
    for tool in ("sops", "age", "kubeconform", "kustomize"):
        yield _tool_check(runner, tool)
    try:
        settings = _settings(root, config_file)
    except ConfigError as exc:
        yield DoctorCheck("settings", False, str(exc), fix="fix gitops-render.toml", missing=True)
        return
    yield DoctorCheck("settings", True, f"{settings.config_file} ({settings.compat})")
    yield from _schema_checks(settings)
    for data_path in settings.data:
        p = Path(data_path)
        yield (DoctorCheck("data", True, str(p)) if p.exists()
               else DoctorCheck("data", False, f"{p} not found", fix="run `gitops-render init`", missing=True))
    for schema in settings.schema_files:
        try:
            load_schema(schema)
            yield DoctorCheck("schema", True, str(schema))
        except ConfigError as exc:
            yield DoctorCheck("schema", False, str(exc), fix="fix or restore the schema file", missing=True)
    key_file = _key_file(settings)
    yield from _reference_checks(settings, exclude=[*settings.data, key_file])
    yield from _key_checks(settings, key_file)
    home_keys = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "sops" / "age" / "keys.txt"
    if home_keys.is_file():
        yield DoctorCheck("sops default key", True, f"{home_keys} exists; gitops-render ignores it and uses "
                          f"{key_file.name} (sops run by hand may pick it up)")
    if shutil.which("git") and not (root / ".git").exists():
        yield DoctorCheck("git", True, "not a git repository (the manifest is meant to be committed)")


def _reference_checks(settings: Settings, exclude: Sequence[Path]) -> Iterator[DoctorCheck]:
    """Every file the settings, data, templates and plugins read exists (without rendering)."""
    from gitops_render.app.references import referenced_files

    refs = referenced_files(settings, exclude=exclude)
    missing = [r for r in refs if not r.path.exists()]
    for ref in missing:
        yield DoctorCheck("file", False, f"{_rel(settings, ref.path)} not found (read by {ref.where})", fix=ref.fix,
                          missing=True)
    if not missing:
        yield DoctorCheck("files", True, f"the {len(refs)} file(s) the settings, data, templates and plugins read "
                                         "are present")


def _key_checks(settings: Settings, key_file: Path) -> Iterator[DoctorCheck]:
    """The key file is a classic age key and it opens the committed secrets."""
    foreign = committed_foreign(settings)
    if not key_file.is_file():
        fix = (foreign.restore_hint("gitops-render init --new-age-key") if foreign is not None
               else "run `gitops-render init`")
        yield DoctorCheck("age key", False, f"{key_file} not found", fix=fix, missing=True)
        return
    try:
        detail = f"{key_file} (public key {keys.public_key(key_file)})"
    except SecretsError as exc:
        yield DoctorCheck("age key", False, exc.message, fix=exc.hint or "recreate it with age-keygen (classic X25519)")
        return
    if foreign is not None and foreign.files:
        yield DoctorCheck("age key", False, f"{foreign.what()}, which {key_file.name} cannot decrypt",
                          fix=foreign.restore_hint("gitops-render configure --rotate-age-key"))
        return
    yield DoctorCheck("age key", True, detail)


def _schema_checks(settings: Settings) -> Iterator[DoctorCheck]:
    from gitops_render.validate import ValidateSettings

    try:
        vs = ValidateSettings.from_settings(settings)
    except ConfigError as exc:
        yield DoctorCheck("schemas", False, str(exc), fix="fix [gitops-render.validate]", missing=True)
        return
    hosts: set[str] = set()
    for location in vs.schema_locations:
        host = urlsplit(KUBECONFORM_DEFAULT if location == "default" else location).hostname
        if host and host in hosts:
            continue  # one connection per host is enough
        hosts.add(host or "")
        yield schema_location_check(location)


def decrypt_for_operator(root: Path, path: Path) -> str:
    """Decrypt one secret file with the repository's key (for the operator's terminal)."""
    from gitops_render.app.pipeline import RunOptions
    from gitops_render.app.pipeline import _settings as pipeline_settings
    from gitops_render.secrets import sops

    settings = pipeline_settings(RunOptions(root=root))
    ctx = sops.SopsContext(repo_root=root, age_key_file=_key_file(settings), sops_config_text=None,
                           runner=settings.runtime.tool_runner(), parallelism=1, cache_dir=None)
    return sops.decrypt_file(ctx, path).decode("utf-8", "replace")
