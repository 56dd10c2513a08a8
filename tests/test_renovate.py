"""Renovate can bump every image tag and chart version the templates deploy.

The shipped preset (``renovate.json5``) reads two places: a schema default with an
``x-renovate`` annotation right before it, and a template line under a ``# renovate:``
comment. Given the rendered tree with every option on, each deployed image and chart is one
of the dependencies the preset's own regexes extract, at the version that is deployed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from combos import ALL_FEATURES
from stack_helpers import PROJECT, render_stack, schema

PRESET = PROJECT / "renovate.json5"


def _extracted() -> dict[str, set[str]]:
    """depName -> currentValues, found by running the preset's regex managers over the pack."""
    preset = json.loads(PRESET.read_text(encoding="utf-8"))
    files = [p for p in PROJECT.glob("**/*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts[-3:]
             and (p.is_relative_to(PROJECT / "templates") or p.is_relative_to(PROJECT / "schemas"))]
    found: dict[str, set[str]] = {}
    for manager in preset["customManagers"]:
        patterns = [re.compile(p.strip("/")) for p in manager["managerFilePatterns"]]
        regexes = [re.compile(m.replace("(?<", "(?P<")) for m in manager["matchStrings"]]
        for path in files:
            rel = path.relative_to(PROJECT).as_posix()
            if not any(p.search(rel) for p in patterns):
                continue
            text = path.read_text(encoding="utf-8")
            for regex in regexes:
                for m in regex.finditer(text):
                    assert m.group("datasource") == "docker", rel
                    found.setdefault(m.group("depName"), set()).add(m.group("currentValue"))
    return found


def _deployed() -> set[tuple[str, str]]:
    """(repository, tag) of every image and OCI chart in the render with every option on."""
    docs = render_stack(ALL_FEATURES)
    out: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            image = node.get("image")
            if isinstance(image, dict) and "repository" in image:
                out.add((image["repository"], str(image["tag"])))
            for key in ("imageName", "reference"):
                if isinstance(node.get(key), str) and ":" in node[key]:
                    repo, tag = node[key].rsplit(":", 1)
                    out.add((repo, tag))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for rel, items in docs.items():
        for doc in items:
            walk(doc)
            if doc.get("kind") == "OCIRepository":
                out.add((doc["spec"]["url"].removeprefix("oci://"), doc["spec"]["ref"]["tag"]))
    return out


def test_renovate_can_bump_every_image_and_chart_the_templates_deploy() -> None:
    extracted = _extracted()
    aliases = {alias: spec["x-renovate"]["depName"] for spec in schema()["properties"].values()
               if "x-renovate" in spec for alias in spec["x-renovate"].get("alsoUsedBy", [])}
    deployed = _deployed()
    assert {"ghcr.io/berriai/litellm-non_root", "mcr.microsoft.com/presidio-analyzer",
            "ghcr.io/cloudnative-pg/postgresql", "ghcr.io/cloudnative-pg/pgvector",
            "ghcr.io/bjw-s-labs/helm/app-template"} <= {repo for repo, _ in deployed}
    for repo, tag in sorted(deployed):
        dep = aliases.get(repo, repo)
        assert tag in extracted.get(dep, set()), f"{repo}:{tag} is not where Renovate's preset can bump it"


def test_versions_live_in_the_schema_or_a_template_never_in_the_sample() -> None:
    """init copies the sample into the git-ignored cluster.yaml, which Renovate never sees."""
    sample = (PROJECT / "cluster.sample.yaml").read_text(encoding="utf-8")
    for name, spec in schema()["properties"].items():
        if "x-renovate" in spec:
            line = next(ln for ln in sample.splitlines() if re.match(rf"^#? ?{name}:", ln))
            assert str(spec["default"]) not in line and spec["default"].split(":")[-1] not in line, line
