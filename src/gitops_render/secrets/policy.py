"""Reconcile rendered ``*.sops.*`` outputs with the encrypted files on disk.

The rule (pain point 1 of the research notes: every run used to rewrite every
secret): an existing ciphertext is kept **byte for byte** when its decrypted
*data* equals the rendered plaintext (parsed YAML/JSON/dotenv/ini, so
formatting noise does not count) **and** it is encrypted to exactly the age
recipients, with the same encryption settings, of the creation rule that
matches it. Otherwise the rendered plaintext -- the source of truth -- is
encrypted afresh:

* ``added``    no file yet;
* ``changed``  the data differs (or the old file is not a sops file, or could
  not be decrypted while its recipients are still the expected ones);
* ``rekeyed``  same data but other recipients / encryption settings (key
  rotation, added recipient). Like ``sops updatekeys``, but with a fresh data
  key, so a removed recipient cannot read future versions. If the old file
  cannot be decrypted any more (the old identity was removed from the key
  file), it is re-encrypted from the rendered plaintext and the decision says
  that its contents were not compared.

A keyed fingerprint cache (``<cache_dir>/secrets.json``) skips sops entirely
when the file, the rule and the plaintext are what they were last time. Its
plaintext fingerprint is HMAC-SHA256 under a key derived from the age identity
(:func:`gitops_render.keys.derive_fingerprint_key`), so the cache reveals
nothing without the private key. When the file on disk is exactly the one
recorded but the rendered data's fingerprint differs, the data changed for sure:
the secret is encrypted without decrypting the old file first (one sops call).
sops calls run in a bounded thread pool.

Nothing here writes a secret file: the decisions' ciphertexts go to the write
plan. Only the cache is written, and only when every secret succeeded.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from gitops_render.core.errors import SecretsError
from gitops_render.core.fsio import write_cache_json
from gitops_render.core.naming import is_secret_path
from gitops_render.secrets.ciphertext import check_encrypted
from gitops_render.secrets.keys import derive_fingerprint_key, read_identities
from gitops_render.secrets.sops import (
    CreationRule,
    SopsContext,
    SopsSession,
    match_path,
    preflight,
    rule_for_name,
)
from gitops_render.secrets.sopsfile import (
    FileMetadata,
    SecretFormat,
    file_metadata,
    format_for,
    plaintext_mask_values,
)

__all__ = [
    "CACHE_FILE",
    "Action",
    "KeylessComparison",
    "SecretDecision",
    "canonical_data",
    "compare_without_key",
    "find_secret_files",
    "reconcile",
]

Action = Literal["unchanged", "added", "changed", "rekeyed"]
CACHE_FILE = "secrets.json"
_CACHE_VERSION = 1
_NOT_DECRYPTED = ("the existing file could not be decrypted with the age key file, so its contents were "
                  "not compared; re-encrypted from the rendered plaintext, which is the source of truth")


@dataclass(frozen=True)
class SecretDecision:
    """What happens to one ``*.sops.*`` output and the ciphertext to write."""

    path: PurePosixPath
    action: Action
    ciphertext: bytes = field(repr=False)
    reason: str = ""
    # decrypted content of the file on disk when it was decrypted (None when the fingerprint
    # cache proved a change without decrypting); never shown
    previous_plaintext: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class KeylessComparison:
    """Degraded comparison without the private key: which secret files come and go."""

    added: tuple[PurePosixPath, ...]
    removed: tuple[PurePosixPath, ...]
    present: tuple[PurePosixPath, ...]
    note: str = ("no age key available: only the set of secret files was compared; "
                 "their contents were not compared")


@dataclass(frozen=True)
class _Job:
    """Everything needed to decide one secret, prepared before any sops call."""

    relpath: PurePosixPath
    fmt: SecretFormat
    plaintext: bytes = field(repr=False)
    canonical: bytes | None = field(repr=False)  # None: not parsed (bytes as recorded); see canonical_of
    fingerprint: str
    raw: str  # keyed HMAC of the plaintext bytes themselves (lets the next run skip parsing)
    rule_digest: str
    recipients: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]
    target: Path
    existing: bytes | None = field(repr=False)
    meta: FileMetadata | None
    match_name: str  # the name sops' creation rules see (--filename-override)


# --------------------------------------------------------------------------- canonical data


def _json_default(obj: Any) -> Any:
    """JSON fallback for YAML scalars JSON lacks (timestamps, binary)."""
    if isinstance(obj, (bytes, bytearray)):
        return {"$binary": bytes(obj).hex()}
    return {"$" + type(obj).__name__: str(obj)}


def _plain(node: Any) -> Any:
    """Plain dicts/lists of a YAML load (ruamel's types have extra attributes)."""
    if isinstance(node, Mapping):
        return {str(k) if not isinstance(k, (int, float, bool)) else json.dumps(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def canonical_data(plaintext: bytes, fmt: SecretFormat) -> bytes:
    """A canonical encoding of the *data* of a plaintext (formatting ignored).

    YAML (1.2, like sops' parser; all documents) and JSON become sorted
    compact JSON; dotenv and ini their key/value pairs; binary stays as is.
    Raises ``ValueError`` when the text does not parse.
    """
    if fmt == "binary":
        return plaintext
    text = plaintext.decode("utf-8")
    if fmt == "yaml":
        from ruamel.yaml import YAML  # imported here: only secrets in YAML need it
        from ruamel.yaml.error import YAMLError

        try:
            data: Any = [_plain(d) for d in YAML(typ="safe", pure=True).load_all(text)]
        except YAMLError as exc:
            raise ValueError("not valid YAML") from exc
    elif fmt == "json":
        data = json.loads(text)
    elif fmt == "dotenv":
        data = {}
        for raw in text.splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                if "=" not in line:
                    raise ValueError("not a KEY=VALUE line")
                key, _, value = line.partition("=")
                data[key] = value
    else:
        parser = configparser.RawConfigParser(interpolation=None)
        try:
            parser.read_string(text)
        except configparser.Error as exc:
            raise ValueError("not valid INI") from exc
        data = {s: dict(parser.items(s)) for s in parser.sections()}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default,
                      ensure_ascii=False).encode()


def _fingerprint(key: bytes, relpath: PurePosixPath, fmt: str, canonical: bytes) -> str:
    """HMAC-SHA256 of the canonical data, bound to the path and format."""
    msg = b"\0".join([b"v1", relpath.as_posix().encode(), fmt.encode(), canonical])
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def _raw_fingerprint(key: bytes, relpath: PurePosixPath, fmt: str, plaintext: bytes) -> str:
    """HMAC-SHA256 of the plaintext bytes, bound to the path and format (no parsing).

    The same bytes have the same canonical data, so when they match the cache entry
    of the last run the recorded data fingerprint holds and the plaintext is not
    parsed again (parsing YAML 1.2 is most of a warm run's secrets stage).
    """
    msg = b"\0".join([b"raw-v1", relpath.as_posix().encode(), fmt.encode(), plaintext])
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def _rule_digest(recipients: tuple[str, ...], settings: tuple[tuple[str, str], ...]) -> str:
    """sha256 of what the creation rule asks for (public information)."""
    blob = json.dumps({"age": list(recipients), "settings": [list(p) for p in settings]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- cache


def _cache_path(ctx: SopsContext) -> Path | None:
    return ctx.cache_dir / CACHE_FILE if ctx.cache_dir is not None else None


def _key_id(key: bytes) -> str:
    """A public identifier of the fingerprint key (tells a stale cache apart)."""
    return hmac.new(key, b"key-id", hashlib.sha256).hexdigest()[:16]


def _load_cache(ctx: SopsContext, key: bytes) -> dict[str, dict[str, str]]:
    """Cache entries for this key; an unreadable/foreign cache is simply empty."""
    path = _cache_path(ctx)
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != _CACHE_VERSION or doc.get("key_id") != _key_id(key):
        return {}
    entries = doc.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_cache(ctx: SopsContext, key: bytes, entries: Mapping[str, Mapping[str, str]]) -> None:
    """Write the cache atomically, mode 0600 (best effort: a cache is never essential)."""
    path = _cache_path(ctx)
    if path is None:
        return
    doc = {"version": _CACHE_VERSION, "key_id": _key_id(key),
           "entries": {k: dict(v) for k, v in sorted(entries.items())}}
    write_cache_json(path, doc)


def _known_file_new_data(job: _Job, entry: Mapping[str, str] | None) -> bool:
    """The file on disk is exactly the one recorded (same bytes, rule and recipients), and the
    rendered data is not what was recorded for it: the data changed for sure (no decrypt needed).

    The recorded HMAC is that of the data the recorded file holds, so a different HMAC
    (same key, same path and format) means different canonical data.
    """
    if not entry or not entry.get("hmac") or job.existing is None or job.meta is None:
        return False
    return (
        hmac.compare_digest(entry.get("sha256", ""), hashlib.sha256(job.existing).hexdigest())
        and entry.get("rule") == job.rule_digest
        and job.meta.recipients == job.recipients
        and job.meta.settings == job.settings
        and not hmac.compare_digest(entry.get("hmac", ""), job.fingerprint)
    )


def _cache_hit(job: _Job, entry: Mapping[str, str] | None) -> bool:
    """The file, the rule and the plaintext are exactly as recorded last time."""
    if not entry or job.existing is None or job.meta is None:
        return False
    return (
        hmac.compare_digest(entry.get("sha256", ""), hashlib.sha256(job.existing).hexdigest())
        and entry.get("rule") == job.rule_digest
        and hmac.compare_digest(entry.get("hmac", ""), job.fingerprint)
        and job.meta.recipients == job.recipients
    )


# --------------------------------------------------------------------------- deciding


def _prepare(ctx: SopsContext, relpath: PurePosixPath, plaintext: bytes, output_root: Path,
             rules: tuple[CreationRule, ...], key: bytes,
             root_rel: Callable[[PurePosixPath], PurePosixPath] | None,
             entry: Mapping[str, str] | None = None) -> _Job:
    """Parse, fingerprint and look up one secret (no sops call).

    ``entry`` is the fingerprint-cache entry of the last run: when its plaintext bytes were
    exactly these, its data fingerprint is reused and the plaintext is not parsed again (the
    last run parsed these very bytes, or it would not have recorded them).
    """
    fmt = format_for(relpath)
    raw = _raw_fingerprint(key, relpath, fmt, plaintext)
    canonical: bytes | None = None
    if entry and entry.get("hmac") and hmac.compare_digest(entry.get("raw", ""), raw):
        fingerprint = entry["hmac"]
    else:
        try:
            canonical = canonical_data(plaintext, fmt)
        except (ValueError, UnicodeDecodeError):
            raise SecretsError(f"rendered secret {relpath} is not valid {fmt}",
                               hint="fix its template; the content is not shown because it is secret") from None
        fingerprint = _fingerprint(key, relpath, fmt, canonical)
    if root_rel is not None:
        match_name = match_path(ctx, PurePosixPath(root_rel(relpath)), ctx.repo_root)
    else:
        match_name = match_path(ctx, relpath, output_root)
    rule = rule_for_name(rules, match_name, relpath)
    if not rule.age:
        raise SecretsError(f".sops.yaml: the creation rule for {relpath} has no age recipient",
                           hint="every creation rule used by gitops-render needs an `age:` recipient")
    recipients = tuple(sorted(rule.age))
    settings = () if fmt == "binary" else rule.settings
    target = output_root / Path(*relpath.parts)
    existing = target.read_bytes() if target.is_file() else None
    meta = file_metadata(existing, fmt) if existing is not None else None
    return _Job(relpath=relpath, fmt=fmt, plaintext=plaintext, canonical=canonical, fingerprint=fingerprint,
                raw=raw, rule_digest=_rule_digest(recipients, settings), recipients=recipients,
                settings=settings, target=target, existing=existing, meta=meta, match_name=match_name)


def _canonical_of(job: _Job) -> bytes:
    """The job's canonical data (parsed now when :func:`_prepare` could skip it)."""
    return job.canonical if job.canonical is not None else canonical_data(job.plaintext, job.fmt)


def _why_rekey(job: _Job) -> str:
    """Operator-readable reason for re-encrypting unchanged data (public keys only)."""
    assert job.meta is not None
    parts = []
    if job.meta.recipients != job.recipients:
        gone = sorted(set(job.meta.recipients) - set(job.recipients))
        new = sorted(set(job.recipients) - set(job.meta.recipients))
        parts.append("recipients changed" + (f"; added {', '.join(new)}" if new else "")
                     + (f"; removed {', '.join(gone)}" if gone else ""))
    if job.meta.settings != job.settings:
        parts.append("encryption settings of the creation rule changed")
    return "; ".join(parts)


def _decide(sess: SopsSession, job: _Job, known_changed: bool = False) -> SecretDecision:
    """Decide one secret; runs in a worker thread (sops calls only, no shared state).

    ``known_changed``: the fingerprint cache proves the data changed (see
    :func:`_known_file_new_data`): one sops call (encrypt), no decrypt, and no
    ``previous_plaintext``.
    """
    if known_changed:
        return SecretDecision(job.relpath, "changed", sess.encrypt(job.relpath, job.plaintext, job.match_name),
                              "data changed (fingerprint cache)")
    if job.existing is None:
        return SecretDecision(job.relpath, "added", sess.encrypt(job.relpath, job.plaintext, job.match_name),
                              "new secret")
    if job.meta is None:
        return SecretDecision(job.relpath, "changed", sess.encrypt(job.relpath, job.plaintext, job.match_name),
                              "the existing file is not sops-encrypted; encrypted the rendered plaintext")
    keys_ok = job.meta.recipients == job.recipients and job.meta.settings == job.settings
    hide = plaintext_mask_values(job.plaintext, job.fmt)
    try:
        old = sess.decrypt(job.relpath, job.target, hide)
    except SecretsError:
        action: Action = "changed" if keys_ok else "rekeyed"
        reason = _NOT_DECRYPTED if keys_ok else f"{_why_rekey(job)}; {_NOT_DECRYPTED}"
        return SecretDecision(job.relpath, action, sess.encrypt(job.relpath, job.plaintext, job.match_name), reason)
    try:
        same = canonical_data(old, job.fmt) == _canonical_of(job)
    except (ValueError, UnicodeDecodeError):
        same = False
    if same and keys_ok:
        return SecretDecision(job.relpath, "unchanged", job.existing, "decrypted data is equal", old)
    ciphertext = sess.encrypt(job.relpath, job.plaintext, job.match_name)
    if same:
        return SecretDecision(job.relpath, "rekeyed", ciphertext, _why_rekey(job), old)
    reason = "data changed" + (f"; {_why_rekey(job)}" if not keys_ok else "")
    return SecretDecision(job.relpath, "changed", ciphertext, reason, old)


def _run_parallel(sess: SopsSession, jobs: list[_Job], parallelism: int,
                  known_changed: frozenset[PurePosixPath] = frozenset()) -> list[SecretDecision]:
    """Decide ``jobs`` in a bounded pool; on the first failure cancel the rest and raise."""
    if not jobs:
        return []
    workers = max(1, min(parallelism, len(jobs)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sops")
    futures: list[tuple[_Job, Future[SecretDecision]]] = []
    errors: list[tuple[str, BaseException]] = []
    results: list[SecretDecision] = []
    try:
        futures = [(job, pool.submit(_decide, sess, job, job.relpath in known_changed)) for job in jobs]
        for job, fut in futures:
            try:
                results.append(fut.result())
            except BaseException as exc:
                errors.append((job.relpath.as_posix(), exc))
                for _, other in futures:
                    other.cancel()
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return results


def reconcile(
    ctx: SopsContext,
    plaintexts: Mapping[PurePosixPath, bytes],
    output_root: Path,
    *,
    parallelism: int | None = None,
    root_rel: Callable[[PurePosixPath], PurePosixPath] | None = None,
) -> list[SecretDecision]:
    """Decide every rendered ``*.sops.*`` output; return decisions sorted by path.

    Runs :func:`gitops_render.sops.preflight` first, so a missing key file,
    missing sops or unusable ``.sops.yaml`` stops the run before anything is
    written. A failing sops call raises :class:`SecretsError` (message masked,
    no plaintext anywhere on disk) and leaves the cache untouched, and so does
    a ciphertext that leaves a value unencrypted or shows a sensitive value in
    clear (:func:`gitops_render.secrets.ciphertext.check_encrypted`).
    ``parallelism`` overrides ``ctx.parallelism`` (1 = serial). ``root_rel``
    maps an output path to its path relative to the repo root; by default
    that is derived from ``output_root`` (both give the name the creation
    rules see, relative to the ``.sops.yaml``'s directory).
    """
    rules = preflight(ctx)
    key = derive_fingerprint_key(read_identities(ctx.age_key_file))
    for relpath in plaintexts:
        if not is_secret_path(relpath):
            raise SecretsError(f"{relpath} is not a *.sops.* output and must not be encrypted")
    cache = _load_cache(ctx, key)
    jobs = [_prepare(ctx, PurePosixPath(p), plaintexts[p], output_root, rules, key, root_rel,
                     cache.get(PurePosixPath(p).as_posix()))
            for p in sorted(plaintexts, key=lambda p: PurePosixPath(p).as_posix())]
    decisions: dict[PurePosixPath, SecretDecision] = {}
    pending: list[_Job] = []
    known_changed: set[PurePosixPath] = set()
    for job in jobs:
        entry = cache.get(job.relpath.as_posix())
        if _cache_hit(job, entry):
            assert job.existing is not None
            decisions[job.relpath] = SecretDecision(job.relpath, "unchanged", job.existing,
                                                    "fingerprint cache: file, rule and data unchanged")
        else:
            pending.append(job)
            if _known_file_new_data(job, entry):
                known_changed.add(job.relpath)
    if pending:
        with SopsSession(ctx, output_root) as sess:
            for decision in _run_parallel(sess, pending, parallelism or ctx.parallelism, frozenset(known_changed)):
                decisions[decision.path] = decision
    by_path = {job.relpath: job for job in jobs}
    for job in jobs:  # new and kept ciphertexts alike: every value encrypted, none in clear
        check_encrypted(job.relpath, decisions[job.relpath].ciphertext, job.plaintext, job.fmt,
                        job.settings, ctx.sensitive)
    _save_cache(ctx, key, {
        p.as_posix(): {"sha256": hashlib.sha256(d.ciphertext).hexdigest(),
                       "rule": by_path[p].rule_digest, "hmac": by_path[p].fingerprint, "raw": by_path[p].raw}
        for p, d in decisions.items()
    })
    return [decisions[job.relpath] for job in jobs]


# --------------------------------------------------------------------------- without the key


def find_secret_files(output_root: Path, roots: Iterable[str] = ("bootstrap", "kubernetes", "talos"),
                      template_suffix: str = ".j2") -> list[PurePosixPath]:
    """Existing ``*.sops.*`` files below ``roots`` of the output (templates excluded)."""
    found: list[PurePosixPath] = []
    for root in roots:
        base = output_root / root
        if not base.is_dir():
            continue
        for path in base.rglob("*.sops.*"):
            if path.is_file() and not path.name.endswith(template_suffix):
                found.append(PurePosixPath(path.relative_to(output_root).as_posix()))
    return sorted(found)


def compare_without_key(rendered: Iterable[PurePosixPath], existing: Iterable[PurePosixPath]) -> KeylessComparison:
    """CI mode without the private key: set comparison of secret paths only.

    ``rendered`` are the ``*.sops.*`` outputs of this run, ``existing`` the
    secret files on disk (e.g. from the manifest or :func:`find_secret_files`).
    No sops call and no content comparison is made; the result says so.
    """
    new = {PurePosixPath(p) for p in rendered if is_secret_path(p)}
    old = {PurePosixPath(p) for p in existing if is_secret_path(p)}
    return KeylessComparison(added=tuple(sorted(new - old)), removed=tuple(sorted(old - new)),
                             present=tuple(sorted(new & old)))
