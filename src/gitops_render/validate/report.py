"""A validation report for people and for machines: ``text``, ``json``, ``github``, ``junit``.

``json`` is a stable shape (``format`` 1; new keys may be added, none removed)::

    {"format": 1,
     "findings": [{"check": "schema", "file": "kubernetes/...", "line": 7,
                   "document": "HelmRelease demo/podinfo", "message": "..."}],
     "notes": ["..."],
     "drift": ["kubernetes/..."],
     "summary": {"findings": 1, "notes": 1, "drift": 0, "by_check": {"schema": 1}, "ok": false}}

``github`` prints one workflow command per finding (``::error file=…,line=…,title=…::…``)
and per note (``::notice::…``), so GitHub annotates the file in the pull request.
``junit`` is one ``<testsuite>`` per check with one failed ``<testcase>`` per finding.
Paths are relative to the output root. Messages are the findings' own: they never
hold a secret value.

>>> r = CheckResult((Finding("flux", "a.yaml", "Kustomization x/y", "bad, really: 100%", 3),), ("n",))
>>> print(render_report(r, "github"))
::error file=a.yaml,line=3,title=flux::Kustomization x/y: bad, really: 100%25
::notice::n
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Literal
from xml.etree import ElementTree

from gitops_render.validate.model import CHECKS, CheckResult, Finding

__all__ = ["OUTPUT_FORMATS", "OutputFormat", "default_format", "render_report"]

OutputFormat = Literal["text", "json", "github", "junit"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("text", "json", "github", "junit")


def default_format(environ: Mapping[str, str] | None = None) -> OutputFormat:
    """``github`` inside GitHub Actions (``GITHUB_ACTIONS=true``), else ``text``."""
    env = os.environ if environ is None else environ
    return "github" if env.get("GITHUB_ACTIONS", "").lower() == "true" else "text"


def _escape(text: str, *, prop: bool = False) -> str:
    """GitHub workflow-command escaping (data, or a property value)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _text_line(f: Finding) -> str:
    doc = f" [{f.document}]" if f.document else ""
    return f"{f.file}{doc}: {f.check}: {f.message}"


def _json(report: CheckResult, drift: Sequence[str]) -> str:
    by_check: dict[str, int] = {}
    for f in report.findings:
        by_check[f.check] = by_check.get(f.check, 0) + 1
    doc = {
        "format": 1,
        "findings": [{"check": f.check, "file": f.file, "line": f.line, "document": f.document,
                      "message": f.message} for f in report.findings],
        "notes": list(report.notes),
        "drift": list(drift),
        "summary": {"findings": len(report.findings), "notes": len(report.notes), "drift": len(drift),
                    "by_check": by_check, "ok": report.ok and not drift},
    }
    return json.dumps(doc, indent=2)


def _github(report: CheckResult, drift: Sequence[str]) -> str:
    lines: list[str] = []
    for f in report.findings:
        props = f"file={_escape(f.file, prop=True)}"
        if f.line is not None:
            props += f",line={f.line}"
        props += f",title={_escape(f.check, prop=True)}"
        text = f"{f.document}: {f.message}" if f.document else f.message
        lines.append(f"::error {props}::{_escape(text)}")
    lines += [f"::error file={_escape(path, prop=True)},title=drift::differs from what configure would produce"
              for path in drift]
    lines += [f"::notice::{_escape(note)}" for note in report.notes]
    return "\n".join(lines)


def _junit(report: CheckResult, drift: Sequence[str]) -> str:
    suites = ElementTree.Element("testsuites", name="gitops-render validate")
    groups: dict[str, list[Finding]] = {check: [] for check in CHECKS}
    for f in report.findings:
        groups.setdefault(f.check, []).append(f)
    cases: dict[str, list[tuple[str, str | None]]] = {
        check: [(f"{f.file}:{f.line}" if f.line else f.file, f"{f.document + ': ' if f.document else ''}{f.message}")
                for f in found] for check, found in groups.items()}
    cases["drift"] = [(path, "differs from what configure would produce") for path in drift]
    for check, items in cases.items():
        suite = ElementTree.SubElement(suites, "testsuite", name=check, tests=str(max(1, len(items))),
                                       failures=str(len(items)))
        if not items:
            ElementTree.SubElement(suite, "testcase", name=f"{check}: no finding", classname=check)
        for name, message in items:
            case = ElementTree.SubElement(suite, "testcase", name=name, classname=check)
            failure = ElementTree.SubElement(case, "failure", message=message or "")
            failure.text = message
    if report.notes:
        ElementTree.SubElement(suites, "properties")
        for i, note in enumerate(report.notes):
            ElementTree.SubElement(suites.find("properties"), "property",  # type: ignore[arg-type]
                                   name=f"note-{i + 1}", value=note)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True)


def render_report(report: CheckResult, fmt: OutputFormat, *, drift: Sequence[str] = ()) -> str:
    """``report`` (and ``check``'s drifted paths) in one output format (no trailing newline)."""
    if fmt == "json":
        return _json(report, drift)
    if fmt == "github":
        return _github(report, drift)
    if fmt == "junit":
        return _junit(report, drift)
    return "\n".join(_text_line(f) for f in report.findings)
