"""Test helper: render a repository into a directory with gitops-render's render stage only.

``render_to_dir`` loads settings and data, renders in memory and writes every file with
its mode, without the schema, secrets or write stages of the pipeline: what the makejinja
differential tests compare against makejinja's own output (``trees.snapshot`` of both).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitops_render.core.load import load_data
from gitops_render.render.engine import RenderResult, render_tree
from gitops_render.settings.config import Settings, load_settings

__all__ = ["render_to_dir", "write_result"]


def write_result(result: RenderResult, outdir: Path) -> None:
    """Write ``result`` below ``outdir`` (directories first, files with their mode)."""
    outdir.mkdir(parents=True, exist_ok=True)
    for d in sorted(result.dirs):
        (outdir / d).mkdir(parents=True, exist_ok=True)
    for rel, f in result.files.items():
        target = outdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
        if f.mode is not None:
            os.chmod(target, f.mode)


def render_to_dir(root: Path, outdir: Path | None = None, *, config_file: Path | None = None,
                  overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                  cache_dir: Path | None = None) -> tuple[Settings, RenderResult]:
    """load_settings -> load_data -> render_tree -> write; returns settings and result."""
    over = dict(overrides or {})
    if outdir is not None:
        over["output"] = str(outdir)
    settings = load_settings(root, config_file=config_file, overrides=over, environ=environ)
    data = load_data(list(settings.data), data_vars=settings.data_vars).data
    result = render_tree(settings, data, cache_dir=cache_dir)
    write_result(result, settings.output)
    return settings, result
