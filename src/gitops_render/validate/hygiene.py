"""YAML hygiene findings, the encryption check of ``*.sops.*`` files, and their in-memory plaintext.

:func:`encryption_findings` needs no key: every ``*.sops.*`` document must carry sops
metadata (a ``sops:`` block with a MAC), and every value under the keys that must be
encrypted must be an ``ENC[...]`` string. Which keys: a Secret's ``data`` and
``stringData``, always (whatever the creation rule said), plus every key the file's
own ``sops:`` block selects (``encrypted_regex``, ``unencrypted_regex``,
``encrypted_suffix``, ``unencrypted_suffix``; everything when none is set). Empty and
null values are left as they are by sops and pass. Findings name the file and the
key path, never the value.

>>> from gitops_render.validate.yamltree import parse_yaml
>>> f = parse_yaml(PurePosixPath("s.sops.yaml"), "apiVersion: v1\\nkind: Secret\\nmetadata: {name: s}\\n"
...                "stringData: {token: hunter2}\\nsops: {mac: 'ENC[x]', version: 3.9.0, encrypted_regex: ^(data)$}\\n")
>>> [x.message.split(" (")[0] for x in encryption_findings({f.relpath: f})]
['stringData.token is not encrypted: its value is in plaintext in a *.sops.* file']
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gitops_render.core.errors import GitopsRenderError
from gitops_render.core.mask import is_encrypted_value
from gitops_render.core.naming import is_secret_path
from gitops_render.core.sopsrule import EncryptionRule, dotted
from gitops_render.validate.model import Finding
from gitops_render.validate.yamltree import YamlDocument, YamlFile, parse_yaml

# --------------------------------------------------------------------------- hygiene


def _delimiter_patterns(delimiters: Sequence[str]) -> list[tuple[re.Pattern[str], str]]:
    """Regexes for leftover template syntax.

    A delimiter that is a YAML comment marker followed by an ordinary character
    (the default comment delimiter ``#|``) is only flagged at the start of a line
    or when it appears twice on a line, so that a YAML comment which happens to
    contain it is not mistaken for template syntax.

    >>> [bool(p.search("x: 1 #| note #| y")) for p, _ in _delimiter_patterns(("#{", "#|"))]
    [False, True]
    """
    patterns: list[tuple[re.Pattern[str], str]] = []
    for d in dict.fromkeys(delimiters):
        esc = re.escape(d)
        if len(d) == 2 and d[0] == "#" and d[1] not in "{%":
            patterns.append((re.compile(rf"(?m)^\s*{esc}|{esc}.*{esc}"), d))
        else:
            patterns.append((re.compile(esc), d))
    return patterns


def delimiter_problems(text: str, delimiters: Sequence[str], *, show_text: bool = True) -> list[str]:
    """Lines of ``text`` that still hold template delimiters.

    ``show_text`` False keeps the line's content out of the message (secrets).

    >>> delimiter_problems("a: 1\\nb: #{ name }#\\n", ("#{", "}#", "#|"))
    ["line 2: unrendered template syntax '#{' left in output: b: #{ name }#"]
    >>> delimiter_problems("# | a comment\\nc: d  #|x\\n", ("#|",))
    []
    """
    problems: list[str] = []
    patterns = _delimiter_patterns(delimiters)
    for number, line in enumerate(text.splitlines(), start=1):
        hits = [d for pattern, d in patterns if pattern.search(line)]
        if not hits:
            continue
        message = f"line {number}: unrendered template syntax {hits[0]!r} left in output"
        if show_text:
            snippet = line.strip()
            message += f": {snippet[:80]}{'...' if len(snippet) > 80 else ''}"
        problems.append(message)
    return problems


def hygiene_findings(
    files: Mapping[PurePosixPath, YamlFile],
    delimiters: Sequence[str],
    plaintexts: Mapping[PurePosixPath, str] | None = None,
) -> list[Finding]:
    """``yaml`` findings: parse errors, duplicate keys, unrendered template syntax.

    For ``*.sops.*`` files the plaintext (when known) is searched too, and the
    offending line is never quoted.
    """
    findings: list[Finding] = []
    for rel, parsed in files.items():
        secret = is_secret_path(rel)
        for problem in parsed.problems:
            findings.append(Finding("yaml", str(rel), None, problem, _line_of(problem)))
        for problem in delimiter_problems(parsed.text, delimiters, show_text=not secret):
            findings.append(Finding("yaml", str(rel), None, problem, _line_of(problem)))
        if plaintexts and rel in plaintexts:
            for problem in delimiter_problems(plaintexts[rel], delimiters, show_text=False):
                findings.append(Finding("yaml", str(rel), None, problem + " (in the decrypted content)",
                                        _line_of(problem)))
    return findings


def _line_of(problem: str) -> int | None:
    """The line number a ``"line N: ..."`` problem starts with."""
    match = re.match(r"line (\d+):", problem)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- encryption










def _document_problems(doc: YamlDocument) -> list[str]:
    data = doc.data
    meta = data.get("sops") if isinstance(data, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("mac"), str) or "version" not in meta:
        return ["has no sops metadata (no sops: block with a MAC): the file is not encrypted; decrypted and "
                "committed by mistake? Encrypt it again (gitops-render configure, or sops encrypt --in-place)"]
    rule = EncryptionRule.of(meta)
    problems: list[str] = []
    for path, leaf, encrypted, forced in rule.leaves(data, secret=doc.kind == "Secret"):
        if (encrypted or forced) and not (leaf is None or leaf == "" or is_encrypted_value(leaf)):
            why = (f"the file's {rule.describe()} does not select it; a creation rule for Secrets needs "
                   f"encrypted_regex: ^(data|stringData)$" if forced and not encrypted
                   else f"the file's sops metadata says it is encrypted ({rule.describe()})")
            problems.append(f"{dotted(path)} is not encrypted: its value is in plaintext in a *.sops.* file ({why})")
    return problems


def encryption_findings(files: Mapping[PurePosixPath, YamlFile]) -> list[Finding]:
    """``sops`` findings: a ``*.sops.*`` document without sops metadata, or with a plaintext value (module doc)."""
    findings: list[Finding] = []
    for rel, parsed in files.items():
        if not is_secret_path(rel) or (parsed.problems and not parsed.documents):
            continue
        for doc in parsed.documents:
            label = doc.label()
            for problem in _document_problems(doc):
                findings.append(Finding("sops", str(rel), label, problem, doc.line))
    return findings


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class _SecretTexts:
    """Plaintext of ``*.sops.*`` files (in memory) and what could not be decrypted."""

    plaintexts: Mapping[PurePosixPath, YamlFile]
    missing: tuple[PurePosixPath, ...]
    reason: str | None


def collect_plaintexts(
    output_root: Path,
    files: Mapping[PurePosixPath, YamlFile],
    plaintexts: Mapping[PurePosixPath, bytes] | None,
    decrypt: Callable[[Path], bytes] | None,
    parallelism: int,
) -> _SecretTexts:
    """Plaintext for every ``*.sops.*`` YAML file: given, else decrypted, else missing."""
    given = {PurePosixPath(str(k)): v for k, v in (plaintexts or {}).items()}
    result: dict[PurePosixPath, YamlFile] = {}
    todo: list[PurePosixPath] = []
    for rel in files:
        if not is_secret_path(rel):
            continue
        if rel in given:
            result[rel] = parse_yaml(rel, given[rel].decode("utf-8", "replace"))
        else:
            todo.append(rel)
    missing: list[PurePosixPath] = []
    reason: str | None = None
    if todo and decrypt is None:
        missing, reason = todo, "no plaintext given and no way to decrypt"
    elif todo and decrypt is not None:
        def attempt(rel: PurePosixPath) -> bytes | str:
            try:
                return decrypt(output_root / rel)
            except (GitopsRenderError, OSError) as exc:  # message never holds secret values
                return str(exc).splitlines()[0]

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
            for rel, out in zip(todo, pool.map(attempt, todo), strict=True):
                if isinstance(out, bytes):
                    result[rel] = parse_yaml(rel, out.decode("utf-8", "replace"))
                else:
                    missing.append(rel)
                    reason = reason or f"decryption failed ({out})"
    return _SecretTexts(result, tuple(missing), reason)


