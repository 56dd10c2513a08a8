"""Repository bootstrap and health: ``init``, ``doctor``, ``secrets decrypt``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gitops_render.core.errors import ConfigError, SecretsError, ToolError
from gitops_render.core.runner import ToolRunner
from gitops_render.data import generate
from gitops_render.data.schema import load_schema
from gitops_render.secrets import keys
from gitops_render.settings import config as config_mod

__all__ = ["GITIGNORE_LINES", "PINNED_VERSIONS", "DoctorCheck", "decrypt_for_operator", "doctor", "ensure_gitignore",
           "init_repo"]

# The versions scripts/install-tools.sh builds; doctor warns when others are found.
PINNED_VERSIONS = {"sops": "3.11.0", "age": "1.3.1", "kubeconform": "0.7.0", "kustomize": "5.8.0"}
SAMPLE = "cluster.sample.yaml"


def _settings(root: Path, config_file: Path | None):  # type: ignore[no-untyped-def]
    return config_mod.load_settings(root, config_file=config_file)


def _key_file(root: Path, settings) -> Path:  # type: ignore[no-untyped-def]
    env = os.environ.get("SOPS_AGE_KEY_FILE")
    if env:
        return Path(env)
    return root / str((settings.secrets or {}).get("age_key_file", "age.key"))


def init_repo(root: Path, *, config_file: Path | None = None, runner: ToolRunner | None = None) -> Iterator[str]:
    """Create the data file from the sample (with generated secrets) and an age key. Never overwrites."""
    settings = _settings(root, config_file)
    runner = runner or ToolRunner()
    data_files = [Path(p) for p in settings.data]
    target = data_files[0] if data_files else root / "cluster.yaml"
    sample = root / SAMPLE
    if target.exists():
        yield f"kept {target.name}: it exists (never overwritten)"
    elif not sample.is_file():
        raise ConfigError(f"{SAMPLE} not found in {root}", hint="run init in the repository root or pass --root")
    else:
        text = sample.read_text(encoding="utf-8")
        if settings.schema is not None:
            schema = load_schema(Path(settings.schema))
            # the schema is the single source of defaults: a default is never frozen into cluster.yaml
            text = generate.comment_out_defaults(generate.generate_missing(text, schema), schema)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        yield (f"created {target.name} from {SAMPLE} (generated secrets filled in, schema defaults left as comments; "
               "edit it, then run configure)")
    key_file = _key_file(root, settings)
    if key_file.exists():
        yield f"kept {key_file.name}: it exists (never overwritten)"
    else:
        keys.generate_key_file(key_file, runner=runner)
        yield f"created age key {key_file.name} (public key {keys.public_key(key_file)}); back it up, never commit it"
    added = ensure_gitignore(root, target, key_file)
    if added:
        yield f"added to .gitignore: {', '.join(added)}"


#: What a cluster repo must never commit (plaintext data, the private key) and local state.
GITIGNORE_LINES = ("cluster.yaml", "age.key", ".gitops-render/cache/", ".gitops-render/lock",
                   ".gitops-render/journal.json")


def ensure_gitignore(root: Path, data_file: Path, key_file: Path) -> list[str]:
    """Append the missing ignore lines to ``root/.gitignore`` (never removes or reorders lines)."""
    wanted = []
    for entry in GITIGNORE_LINES:
        path = {"cluster.yaml": data_file, "age.key": key_file}.get(entry)
        line = entry
        if path is not None:
            try:
                line = Path(path).resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                continue  # outside the repo: nothing to ignore here
        wanted.append(line)
    gitignore = root / ".gitignore"
    text = gitignore.read_text(encoding="utf-8") if gitignore.is_file() else ""
    present = {ln.strip().lstrip("/") for ln in text.splitlines()}
    missing = [ln for ln in wanted if ln not in present]
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


def _tool_check(runner: ToolRunner, tool: str) -> DoctorCheck:
    try:
        path = runner.which(tool)
    except ToolError as exc:
        return DoctorCheck(tool, False, "not found", fix=exc.hint or "run scripts/install-tools.sh", missing=True)
    version = runner.version(tool)
    want = PINNED_VERSIONS.get(tool)
    if want and want not in version:
        return DoctorCheck(tool, False, f"{version} at {path} (pinned: {want})", fix="run scripts/install-tools.sh")
    return DoctorCheck(tool, True, f"{version} ({path})")


def doctor(root: Path, *, config_file: Path | None = None, runner: ToolRunner | None = None) -> Iterator[DoctorCheck]:
    """Check tools, settings, data file, schema and key; every problem comes with a fix."""
    runner = runner or ToolRunner()
    for tool in ("sops", "age", "kubeconform", "kustomize"):
        yield _tool_check(runner, tool)
    try:
        settings = _settings(root, config_file)
    except ConfigError as exc:
        yield DoctorCheck("settings", False, str(exc), fix="fix gitops-render.toml", missing=True)
        return
    yield DoctorCheck("settings", True, f"{settings.config_file} ({settings.compat})")
    for data_file in settings.data:
        p = Path(data_file)
        yield (DoctorCheck("data", True, str(p)) if p.exists()
               else DoctorCheck("data", False, f"{p} not found", fix="run `gitops-render init`", missing=True))
    if settings.schema is not None:
        try:
            load_schema(Path(settings.schema))
            yield DoctorCheck("schema", True, str(settings.schema))
        except ConfigError as exc:
            yield DoctorCheck("schema", False, str(exc), fix="fix or restore the schema file", missing=True)
    key_file = _key_file(root, settings)
    if key_file.is_file():
        try:
            yield DoctorCheck("age key", True, f"{key_file} (public key {keys.public_key(key_file)})")
        except SecretsError as exc:
            yield DoctorCheck("age key", False, str(exc), fix="regenerate with age-keygen (classic X25519)")
    else:
        yield DoctorCheck("age key", False, f"{key_file} not found", fix="run `gitops-render init`", missing=True)
    home_keys = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "sops" / "age" / "keys.txt"
    if home_keys.is_file():
        yield DoctorCheck("sops default key", True, f"{home_keys} exists; gitops-render ignores it and uses "
                          f"{key_file.name} (sops run by hand may pick it up)")
    if shutil.which("git") and not (root / ".git").exists():
        yield DoctorCheck("git", True, "not a git repository (the manifest is meant to be committed)")


def decrypt_for_operator(root: Path, path: Path) -> str:
    """Decrypt one secret file with the repository's key (for the operator's terminal)."""
    from gitops_render.app.pipeline import RunOptions
    from gitops_render.app.pipeline import _settings as pipeline_settings
    from gitops_render.secrets import sops

    settings = pipeline_settings(RunOptions(root=root))
    ctx = sops.SopsContext(repo_root=root, age_key_file=_key_file(root, settings), sops_config_text=None,
                           runner=ToolRunner(), parallelism=1, cache_dir=None)
    return sops.decrypt_file(ctx, path).decode("utf-8", "replace")
