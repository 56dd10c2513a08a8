"""Repository bootstrap and health: ``init``, ``doctor``, ``secrets decrypt``."""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gitops_render.core.errors import ConfigError, SecretsError, ToolError
from gitops_render.core.runner import MIN_VERSIONS, ToolRunner, install_hint
from gitops_render.data import generate
from gitops_render.data.schema import load_schema
from gitops_render.secrets import keys
from gitops_render.settings import RuntimeEnv, Settings, load_settings

__all__ = ["GITIGNORE_LINES", "KNOWN_BAD", "DoctorCheck", "decrypt_for_operator", "doctor", "ensure_gitignore",
           "init_repo", "parse_version", "schema_location_check"]

#: Releases known not to work, with the reason (none so far; newer releases than the minimum are fine).
KNOWN_BAD: dict[str, dict[str, str]] = {}
#: How long doctor waits for a schema host before calling it unreachable (offline: fail in seconds).
CONNECT_TIMEOUT = 3.0
SAMPLE = "cluster.sample.yaml"
#: kubeconform's "default" schema location (the one it downloads from)
KUBECONFORM_DEFAULT = "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/"


def _settings(root: Path, config_file: Path | None) -> Settings:
    return load_settings(root, config_file=config_file)


def _key_file(settings: Settings) -> Path:
    """The key file, resolved once by the settings (``SOPS_AGE_KEY_FILE`` > ``[secrets] age_key_file``)."""
    assert settings.age_key_file is not None
    return settings.age_key_file


def init_repo(root: Path, *, config_file: Path | None = None, runner: ToolRunner | None = None) -> Iterator[str]:
    """Create the data file from the sample (with generated secrets) and an age key. Never overwrites."""
    settings = _settings(root, config_file)
    runner = runner or settings.runtime.tool_runner()
    data_files = [Path(p) for p in settings.data]
    target = data_files[0] if data_files else root / "cluster.yaml"
    sample = root / SAMPLE
    if target.exists():
        yield f"kept {target.name}: it exists (never overwritten)"
    elif not sample.is_file():
        raise ConfigError(f"{SAMPLE} not found in {root}", hint="run init in the repository root or pass --root")
    else:
        text = sample.read_text(encoding="utf-8")
        schema_path = settings.schema_for(target)
        if schema_path is not None:
            schema = load_schema(schema_path)
            # the schema is the single source of defaults: a default is never frozen into cluster.yaml
            text = generate.comment_out_defaults(generate.generate_missing(text, schema), schema)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        yield (f"created {target.name} from {SAMPLE} (generated secrets filled in, schema defaults left as comments; "
               "edit it, then run configure)")
    key_file = _key_file(settings)
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
    for pattern in GITIGNORE_LINES:
        path = {"cluster.yaml": data_file, "age.key": key_file}.get(pattern)
        line = pattern
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
    url = KUBECONFORM_DEFAULT if location == "default" else location
    if "://" not in url:
        prefix = url.split("{{", 1)[0]  # the fixed part before kubeconform's first template variable
        folder = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
        if folder.is_dir():
            return DoctorCheck("schemas", True, f"{location} (local)")
        return DoctorCheck("schemas", False, f"{location}: {folder} does not exist",
                           fix="fix [gitops-render.validate] schema_locations or GITOPS_RENDER_SCHEMA_LOCATION",
                           missing=True)
    parsed = urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return DoctorCheck("schemas", True, f"{location} ({host} reachable)")
    except OSError as exc:
        return DoctorCheck("schemas", False, f"{location}: {host} unreachable ({exc.strerror or type(exc).__name__})",
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
