"""Render the LiteLLM template set for tests: ``render_stack(overrides) -> {relpath: [docs]}``.

Data = ``cluster.sample.yaml`` + ``overrides``, generatable secrets filled
deterministically, schema defaults applied (``schema.apply_defaults``, as configure does), then the
templates are rendered with gitops-render's own stages (schema validation, plugin,
render; no sops). ``render_raw_makejinja`` renders the same with makejinja 2.8.1. Outputs are parsed YAML
documents keyed by their path relative to the output root.
"""

from __future__ import annotations

import copy
import json
import os
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT, SHARED

from gitops_render.data.schema import apply_defaults

TEMPLATES = PROJECT / "templates" / "config"
SCRIPTS = PROJECT / "templates" / "scripts"
SCHEMA_FILE = PROJECT / "schemas" / "cluster.schema.json"
SAMPLE_FILE = PROJECT / "cluster.sample.yaml"
SHARED_CHARTS = SHARED / "charts" / "app-template-4.5.0"
FAKE_AGE_PUBLIC = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

__all__ = [
    "cluster_data",
    "filled_sample",
    "parse_texts",
    "render_raw",
    "render_raw_makejinja",
    "render_stack",
    "sample",
    "schema",
]


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def sample() -> dict[str, Any]:
    return yaml.load(SAMPLE_FILE.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _generated(name: str, spec: Mapping[str, Any]) -> str:
    """A deterministic value in the x-generate format (tests only)."""
    alphabet = {"hex": "0123456789abcdef", "alnum": string.ascii_letters + string.digits,
                "base64url": string.ascii_letters + string.digits + "-_"}[spec.get("alphabet", "alnum")]
    seed = sum(map(ord, name))
    body = "".join(alphabet[(seed + i * 7) % len(alphabet)] for i in range(int(spec.get("length", 32))))
    return spec.get("prefix", "") + body


def filled_sample(data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``data`` (default: the sample) with every empty x-generate field filled, as ``init`` does."""
    out = copy.deepcopy(dict(sample() if data is None else data))
    for name, spec in schema()["properties"].items():
        if "x-generate" in spec and not out.get(name):
            out[name] = _generated(name, spec["x-generate"])
    return out


def cluster_data(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sample + overrides, generatables filled, schema defaults applied."""
    data = sample()
    data.update(overrides or {})
    return apply_defaults(filled_sample(data), schema())


def _fake_key_file(path: Path) -> Path:
    path.write_text(f"# created: 2026-01-01T00:00:00Z\n# public key: {FAKE_AGE_PUBLIC}\n"
                    "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n", encoding="utf-8")
    return path


def render_raw(data: Mapping[str, Any], outdir: Path, *, schema_doc: Mapping[str, Any] | None = None,
               cache_dir: Path | None = None) -> dict[str, str]:
    """Render the shipped templates with gitops-render's own stages, in memory.

    ``data`` goes through the schema (validation + defaults) and the plugin exactly
    as in ``configure``; returns ``{relpath: text}`` (secrets in plaintext). A caller
    rendering many combinations passes the loaded schema (``load_schema``) and a
    compiled-template ``cache_dir`` to pay for them once.
    """
    from gitops_render.core.load import LoadedData, Locations
    from gitops_render.data.schema import load_schema, validate_data
    from gitops_render.render.engine import render_tree
    from gitops_render.settings.config import load_settings

    outdir.mkdir(parents=True, exist_ok=True)
    key_file = _fake_key_file(outdir.parent / f"{outdir.name}.age.key")
    settings = load_settings(PROJECT, environ={**os.environ, "SOPS_AGE_KEY_FILE": str(key_file)})
    checked = load_schema(SCHEMA_FILE) if schema_doc is None else schema_doc
    validated = validate_data(LoadedData(dict(data), Locations(), (Path("cluster.yaml"),)), checked)
    result = render_tree(settings, validated, cache_dir=cache_dir)
    return {str(rel): f.content.decode("utf-8") for rel, f in sorted(result.files.items())}


def render_raw_makejinja(data: Mapping[str, Any], outdir: Path) -> dict[str, str]:
    """The same render done by makejinja 2.8.1 (the tool the templates must stay compatible with)."""
    from makejinja.app import makejinja
    from makejinja.config import Config, Delimiter, Undefined

    outdir.mkdir(parents=True, exist_ok=True)
    data_file = outdir.parent / f"{outdir.name}.data.json"
    data_file.write_text(json.dumps(data), encoding="utf-8")
    key_file = _fake_key_file(outdir.parent / f"{outdir.name}.age.key")
    config = Config(
        inputs=(TEMPLATES,), output=outdir, data=(data_file,), plugins=("plugin:Plugin",),
        import_paths=(SCRIPTS,), jinja_suffix=".j2", exclude_patterns=("*.partial.yaml.j2",),
        undefined=Undefined.strict, force=True, quiet=True,
        delimiter=Delimiter(block_start="#%", block_end="%#", variable_start="#{", variable_end="}#",
                            comment_start="#|", comment_end="#|"),
    )
    with pytest.MonkeyPatch.context() as mp:  # makejinja's plugin reads the process environment
        mp.setenv("SOPS_AGE_KEY_FILE", str(key_file))
        makejinja(config)
    return {p.relative_to(outdir).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(outdir.rglob("*")) if p.is_file()}


def parse_texts(texts: Mapping[str, str]) -> dict[str, list[Any]]:
    """``{relpath: [parsed YAML documents]}`` of rendered texts (empty documents left out)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return {rel: [d for d in yaml.load_all(text, Loader=loader) if d is not None] for rel, text in texts.items()}


def render_stack(cluster_overrides: Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
    """``{relpath: [parsed YAML documents]}`` of everything rendered for sample + overrides."""
    with tempfile.TemporaryDirectory(prefix="litellm-stack-") as tmp:
        return parse_texts(render_raw(cluster_data(cluster_overrides), Path(tmp) / "out"))
