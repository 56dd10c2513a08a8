"""The sops + age adapter: encrypt from memory, decrypt from disk, read rules.

Plaintext never touches the disk here. ``encrypt`` pipes it into
``sops --encrypt ... /dev/stdin`` and reads the ciphertext from stdout;
``decrypt`` reads an existing ciphertext file and returns the plaintext from
stdout. Only the rendered ``.sops.yaml`` (public keys only) is written, into
a private (0700) temporary directory that is removed afterwards, because
sops needs ``--config`` to be a file.

Creation-rule matching is identical to sops with the real ``.sops.yaml`` at
its place in the repository: sops (``config/config.go``,
``parseCreationRuleForFile``) strips ``<abs config dir>/`` from the file name
and then searches every rule's ``path_regex`` (unanchored, first match wins).
``--filename-override`` is *not* made absolute by sops, so we pass the path
relative to the real config's directory -- the string sops would have compared
-- and the temporary config's location cannot change which rule matches.

What sops prints is checked (:mod:`gitops_render.secrets.ciphertext`); what a
sops file says is read by :mod:`gitops_render.secrets.sopsfile`.

Key sources are pinned: ``SOPS_AGE_KEY_FILE`` is the repository's key file,
``SOPS_AGE_KEY`` is empty, ``HOME``/``XDG_CONFIG_HOME`` point to an empty
private directory (no ``~/.config/sops/age/keys.txt``, no ``~/.ssh/id_*``),
and recipient variables (``SOPS_AGE_RECIPIENTS`` ...) are emptied so only the
rendered creation rules decide the recipients.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_render.core.errors import (
    SecretsError,
    ToolError,
    ToolFailedError,
    ToolMissingError,
    ToolTimeoutError,
)
from gitops_render.core.mask import mask
from gitops_render.core.runner import ToolRunner, install_hint
from gitops_render.secrets.ciphertext import check_sops_output
from gitops_render.secrets.keys import NO_KEY_HINT, read_identities
from gitops_render.secrets.sopsfile import (
    CRYPT_SETTINGS,
    DEFAULT_UNENCRYPTED_SUFFIX,
    FileMetadata,
    SecretFormat,
    file_metadata,
    file_recipients,
    format_for,
    plaintext_mask_values,
)

__all__ = [
    "INSTALL_SOPS_HINT",
    "CreationRule",
    "FileMetadata",
    "SecretFormat",
    "SopsContext",
    "SopsSession",
    "config_text",
    "decrypt_file",
    "default_parallelism",
    "expected_settings",
    "file_metadata",
    "file_recipients",
    "format_for",
    "match_path",
    "parse_sops_config",
    "plaintext_mask_values",
    "preflight",
    "recipients_for",
    "rule_for",
    "rule_for_name",
    "session",
]



INSTALL_SOPS_HINT = install_hint("sops")
# environment variables that would let sops pick recipients other than the rules'
_RECIPIENT_VARS: tuple[str, ...] = (
    "SOPS_AGE_RECIPIENTS",
    "SOPS_PGP_FP",
    "SOPS_KMS_ARN",
    "SOPS_GCP_KMS_IDS",
    "SOPS_AZURE_KEYVAULT_URLS",
    "SOPS_VAULT_URIS",
    "SOPS_DECRYPTION_ORDER",
)



def default_parallelism() -> int:
    """``min(8, 2 * cpu count)``: sops calls are mostly process start-up and I/O."""
    return max(1, min(8, (os.cpu_count() or 1) * 2))


@dataclass(frozen=True)
class SopsContext:
    """Everything the secrets stage needs; no global state.

    ``sops_config_text`` is the rendered ``.sops.yaml`` (in memory, before it
    is written); ``None`` reads ``repo_root / sops_config_path`` from disk.
    ``sops_config_path`` is where that config lives relative to the repo root;
    it decides what path the creation rules see (as with sops itself).
    ``cache_dir`` ``None`` disables the fingerprint cache.
    """

    repo_root: Path
    age_key_file: Path
    sops_config_text: str | None
    runner: ToolRunner
    parallelism: int = field(default_factory=default_parallelism)
    cache_dir: Path | None = None
    sops_config_path: PurePosixPath = field(default_factory=lambda: PurePosixPath(".sops.yaml"))
    temp_root: Path | None = None  # parent of the private temp dir (default: the system's)
    # (field, value) of the run's sensitive values: none may appear in clear in a ciphertext
    sensitive: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class CreationRule:
    """One ``creation_rules`` entry, reduced to what gitops-render compares."""

    index: int
    path_regex: str
    age: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]  # expected sops metadata, e.g. ("encrypted_regex", "^(data)$")
    has_other_keys: bool = False  # pgp/kms/... also configured


# --------------------------------------------------------------------------- paths, formats




# --------------------------------------------------------------------------- creation rules


def config_text(ctx: SopsContext) -> str:
    """The rendered ``.sops.yaml`` text (from memory, or from disk if not given)."""
    if ctx.sops_config_text is not None:
        return ctx.sops_config_text
    path = ctx.repo_root / ctx.sops_config_path
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretsError(f"sops config {ctx.sops_config_path} not found",
                           hint="render it first (templates/config/.sops.yaml.j2)") from None


def _key_list(value: Any, what: str) -> list[str]:
    """sops' ``parseKeyField``: a comma-separated string or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise SecretsError(f".sops.yaml: invalid {what} key configuration (expected a string or a list of strings)")


def _group_age(group: Mapping[str, Any]) -> list[str]:
    """Age recipients of a ``key_groups`` entry, ``merge`` included."""
    out: list[str] = []
    for sub in group.get("merge") or []:
        if isinstance(sub, Mapping):
            out.extend(_group_age(sub))
    for entry in group.get("age") or []:
        out.extend(_key_list(entry, "age"))
    return out


def expected_settings(rule: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The sops metadata a file encrypted under ``rule`` carries (crypt rule + MAC mode)."""
    pairs = [(k, str(rule[k])) for k in CRYPT_SETTINGS if rule.get(k)]
    if not pairs:
        pairs = [("unencrypted_suffix", DEFAULT_UNENCRYPTED_SUFFIX)]
    if rule.get("mac_only_encrypted"):
        pairs.append(("mac_only_encrypted", "true"))
    return tuple(sorted(pairs))


def parse_sops_config(text: str) -> tuple[CreationRule, ...]:
    """The creation rules of a ``.sops.yaml``, in order."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SecretsError(f".sops.yaml is not valid YAML: {exc}") from None
    rules = doc.get("creation_rules") if isinstance(doc, Mapping) else None
    if not isinstance(rules, list) or not rules:
        raise SecretsError(".sops.yaml has no creation_rules",
                           hint="the template set must render at least one creation rule with an age recipient")
    parsed: list[CreationRule] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise SecretsError(f".sops.yaml: creation_rules[{i}] is not a mapping")
        groups = rule.get("key_groups") or []
        if groups:
            age = [r for g in groups if isinstance(g, Mapping) for r in _group_age(g)]
        else:
            age = _key_list(rule.get("age"), "age")
        other = any(rule.get(k) for k in ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "hckms"))
        parsed.append(CreationRule(
            index=i,
            path_regex=str(rule.get("path_regex") or ""),
            age=tuple(dict.fromkeys(age)),
            settings=expected_settings(rule),
            has_other_keys=bool(other),
        ))
    return tuple(parsed)


def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go RE2 ``path_regex`` with Python's ``re`` (same syntax for the common subset)."""
    try:
        return re.compile(pattern.replace(r"\z", r"\Z"))
    except re.error as exc:
        raise SecretsError(f".sops.yaml: path_regex {pattern!r} does not compile: {exc}") from None


def match_path(ctx: SopsContext, relpath: PurePosixPath, output_root: Path | None = None) -> str:
    """The file name sops compares against ``path_regex`` for this output.

    sops strips ``<abs dir of .sops.yaml>/`` from the (absolute) file path, so
    a file below the config's directory is matched by its path relative to
    that directory and any other file by its absolute path.
    """
    root = (output_root or ctx.repo_root).resolve()
    target = root / Path(*PurePosixPath(relpath).parts)
    config_dir = (ctx.repo_root.resolve() / Path(*ctx.sops_config_path.parts)).parent
    try:
        return target.relative_to(config_dir).as_posix()
    except ValueError:
        return target.as_posix()


def rule_for(ctx: SopsContext, relpath: PurePosixPath, output_root: Path | None = None,
             rules: tuple[CreationRule, ...] | None = None) -> CreationRule:
    """The creation rule sops would use: the first with an empty or matching ``path_regex``."""
    rules = rules if rules is not None else parse_sops_config(config_text(ctx))
    return rule_for_name(rules, match_path(ctx, relpath, output_root), relpath)


def rule_for_name(rules: tuple[CreationRule, ...], name: str, relpath: PurePosixPath | str) -> CreationRule:
    """The first rule whose ``path_regex`` is empty or found in ``name`` (sops' match name)."""
    for rule in rules:
        if not rule.path_regex or _go_regex(rule.path_regex).search(name):
            return rule
    raise SecretsError(f"no creation rule in .sops.yaml matches {relpath}",
                       hint="add a path_regex for it to templates/config/.sops.yaml.j2 or rename the output")


def recipients_for(ctx: SopsContext, relpath: PurePosixPath, output_root: Path | None = None,
                   rules: tuple[CreationRule, ...] | None = None) -> tuple[str, ...]:
    """The age recipients the matching creation rule encrypts ``relpath`` to (sorted)."""
    rule = rule_for(ctx, relpath, output_root, rules)
    if not rule.age:
        raise SecretsError(f".sops.yaml: the creation rule for {relpath} has no age recipient",
                           hint="gitops-render (and Flux's sops decryption here) uses age keys")
    return tuple(sorted(rule.age))


# --------------------------------------------------------------------------- errors / masking


def _tool_failure(op: str, relpath: PurePosixPath, exc: ToolError, hide: Iterable[str]) -> SecretsError:
    """A :class:`SecretsError` for a failed sops call, with every plaintext value masked."""
    hide = list(hide)
    detail = ""
    if isinstance(exc, ToolFailedError) and exc.stderr.strip():
        lines = [ln.strip(" |") for ln in exc.stderr.strip().splitlines() if ln.strip(" |")]
        detail = lines[0] if lines else ""
        detail = mask(detail, hide)
    elif not isinstance(exc, ToolFailedError):
        detail = exc.message
    hint = {
        "encrypt": "check the creation rule and its age recipients in templates/config/.sops.yaml.j2",
        "decrypt": "check that the age key file holds an identity the file is encrypted to",
    }[op]
    if isinstance(exc, ToolTimeoutError):
        hint = ("check that `sops --version` answers on its own (reinstall it with scripts/install-tools.sh, "
                "or fix GITOPS_RENDER_SOPS); raise the limit with GITOPS_RENDER_TIMEOUT")
    elif isinstance(exc, ToolFailedError) and exc.returncode is not None and exc.returncode < 0:
        detail = f"sops crashed (signal {-exc.returncode}){': ' + detail if detail else ''}"
        hint = "sops itself is broken: reinstall it with scripts/install-tools.sh (or fix GITOPS_RENDER_SOPS / PATH)"
    return SecretsError(f"sops could not {op} {relpath}: {detail or 'failed'}", hint=hint)


# --------------------------------------------------------------------------- running sops


def _sops_env(key_file: Path, home: Path) -> dict[str, str]:
    """The pinned environment of every sops call (see the module docstring)."""
    env = {
        "SOPS_AGE_KEY_FILE": str(key_file),
        "SOPS_AGE_KEY": "",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
    }
    for var in _RECIPIENT_VARS:
        env[var] = ""
    # These are used whenever set, even empty; the runner cannot unset variables,
    # so neutralise them: /dev/null holds no SSH key, `true` prints no identity.
    if "SOPS_AGE_SSH_PRIVATE_KEY_FILE" in os.environ:
        env["SOPS_AGE_SSH_PRIVATE_KEY_FILE"] = os.devnull
    if "SOPS_AGE_KEY_CMD" in os.environ:
        env["SOPS_AGE_KEY_CMD"] = "true"
    return env


class SopsSession:
    """A private temp dir with the rendered ``.sops.yaml`` and pinned sops calls.

    Use as a context manager; the directory is removed on exit. Thread-safe:
    calls share only read-only state.
    """

    def __init__(self, ctx: SopsContext, output_root: Path | None = None, *, require_config: bool = True) -> None:
        self.ctx = ctx
        self.output_root = output_root or ctx.repo_root
        self.require_config = require_config
        self._dir: Path | None = None
        self._env: dict[str, str] = {}
        self._config: Path | None = None

    def __enter__(self) -> SopsSession:
        try:
            text = config_text(self.ctx)
        except SecretsError:
            if self.require_config:
                raise
            text = "{}\n"  # decrypting needs no creation rule
        self._dir = Path(tempfile.mkdtemp(prefix="gitops-render-sops-", dir=self.ctx.temp_root))
        os.chmod(self._dir, stat.S_IRWXU)
        home = self._dir / "home"
        home.mkdir(mode=0o700)
        self._config = self._dir / ".sops.yaml"
        self._config.write_text(text, encoding="utf-8")
        self._env = _sops_env(self.ctx.age_key_file.resolve(), home)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def temp_dir(self) -> Path:
        """The private directory (for tests that check nothing else is left there)."""
        assert self._dir is not None, "SopsSession used outside its with-block"
        return self._dir

    def encrypt(self, relpath: PurePosixPath, plaintext: bytes, match_name: str | None = None) -> bytes:
        """Ciphertext of ``plaintext`` for output ``relpath``, via stdin/stdout only.

        ``match_name`` overrides the name the creation rules see
        (default: :func:`match_path` of ``relpath``).
        """
        fmt = format_for(relpath)
        name = match_name if match_name is not None else match_path(self.ctx, relpath, self.output_root)
        args = ["--config", str(self._config), "--encrypt",
                "--filename-override", name,
                "--input-type", fmt, "--output-type", fmt, "/dev/stdin"]
        try:
            res = self.ctx.runner.run("sops", args, input=plaintext, env=self._env, cwd=self.temp_dir, text=False)
        except ToolError as exc:
            raise _tool_failure("encrypt", relpath, exc, plaintext_mask_values(plaintext, fmt)) from None
        out: object = res.stdout  # bytes: text=False (ToolResult types it as str)
        assert isinstance(out, bytes)
        check_sops_output(relpath, out, plaintext)
        return out

    def decrypt(self, relpath: PurePosixPath, path: Path, hide: Iterable[str] = ()) -> bytes:
        """Plaintext of the ciphertext file ``path`` (output ``relpath``), from sops' stdout."""
        fmt = format_for(relpath)
        args = ["--config", str(self._config), "--decrypt",
                "--input-type", fmt, "--output-type", fmt, str(path)]
        try:
            res = self.ctx.runner.run("sops", args, env=self._env, cwd=self.temp_dir, text=False)
        except ToolError as exc:
            raise _tool_failure("decrypt", relpath, exc, hide) from None
        out: object = res.stdout  # bytes: text=False (ToolResult types it as str)
        assert isinstance(out, bytes)
        return out


@contextmanager
def session(ctx: SopsContext, output_root: Path | None = None) -> Iterator[SopsSession]:
    """``with session(ctx) as s: s.encrypt(...)`` -- shorthand for :class:`SopsSession`."""
    with SopsSession(ctx, output_root) as s:
        yield s


def decrypt_file(ctx: SopsContext, path: Path) -> bytes:
    """Plaintext of one encrypted file on disk (format from its name), in memory only.

    Works without a rendered ``.sops.yaml`` (decryption needs no creation rule).
    """
    if not ctx.age_key_file.is_file():
        raise SecretsError(f"age key file {ctx.age_key_file.name} not found: {NO_KEY_HINT}",
                           hint=f"looked for {ctx.age_key_file}")
    full = path if path.is_absolute() else ctx.repo_root / path
    try:
        rel = PurePosixPath(full.resolve().relative_to(ctx.repo_root.resolve()).as_posix())
    except ValueError:
        rel = PurePosixPath(full.name)
    with SopsSession(ctx, require_config=False) as sess:
        return sess.decrypt(rel, full)


# --------------------------------------------------------------------------- preflight


def preflight(ctx: SopsContext) -> tuple[CreationRule, ...]:
    """Check, before any rendering or writing, that secrets can be handled.

    The age key file exists and holds a classic identity, sops is installed,
    and the sops config parses with at least one creation rule. Returns the
    parsed rules.
    """
    if not ctx.age_key_file.is_file():
        raise SecretsError(f"age key file {ctx.age_key_file.name} not found: {NO_KEY_HINT}",
                           hint=f"looked for {ctx.age_key_file}")
    read_identities(ctx.age_key_file)
    try:
        ctx.runner.which("sops")
    except ToolMissingError as exc:
        raise SecretsError(f"sops not installed: {INSTALL_SOPS_HINT}", hint=exc.hint) from None
    return parse_sops_config(config_text(ctx))
