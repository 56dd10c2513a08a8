"""Render the template tree in memory, with makejinja 2.8.1's semantics.

:func:`render_tree` walks the inputs exactly as makejinja does and returns every
output as bytes (:class:`RenderResult`); nothing is written to the output tree
(``write.py`` does that, atomically, and also prunes stale outputs, which replaces
makejinja's ``clean``).

Matched makejinja behaviour:

* ``ChoiceLoader(file inputs by name, FileSystemLoader(dir inputs))``, so
  ``include``/``import`` find a name in any input, first input first;
* globals = data, then ``env`` = ``os.environ``, then the plugins (see :mod:`.plugins`);
* ordered overlay: for each input in order, ``sorted(root.glob(p))`` per include
  pattern; the first input that produces an output path wins;
* ``jinja_suffix`` is compared with the last suffix only and stripped unless
  ``keep_jinja_suffix``; file inputs are always templates;
* a template rendering to whitespace only is skipped unless ``keep_empty``;
* non-template files are copied verbatim with their permission bits (makejinja uses
  ``copy2``); rendered files get the template's bits only with ``copy_metadata``;
* with ``force = false`` an output that already exists on disk is neither rendered
  nor changed (recorded in ``skipped_existing``).

Differences, on purpose:

* ``exclude_patterns`` honour ``**`` (any number of path segments; makejinja warns
  and treats it as ``*``), and an excluded *directory* excludes everything below it
  (makejinja excludes only the directory entry, then crashes writing its files).
  The same holds for a directory rejected by a plugin path filter. Patterns match
  like ``Path.match`` against the full input path, from the right.
* A file is rendered from the input it was found in. (makejinja fetches it by name
  through the loader, so when input 1's copy is excluded, input 2's output gets
  input 1's content.)
* Template errors are a :class:`~gitops_render.errors.TemplateError` naming the
  template file and line (and the undefined variable) instead of a traceback.
* Templates are compiled once per run (unbounded ``cache_size``) and, with
  ``cache_dir``, cached as bytecode across runs. The cache key includes everything
  that changes compilation (delimiters, whitespace, extensions ...); Jinja's source
  checksum invalidates it when a template changes.
* A single output *file* (makejinja's one-input/one-output-file mode) and
  ``/dev/stdin`` are not supported; output is always a directory.
"""

from __future__ import annotations

import copy
import stat
from collections.abc import Mapping, MutableMapping
from pathlib import Path, PurePosixPath
from typing import Any

from gitops_render.render.bytecode import FingerprintedBytecodeCache
from gitops_render.render.diagnostics import TemplateIndex
from gitops_render.render.environment import build_environment
from gitops_render.render.plugins import LoadedPlugins, load_plugins, plugin_import_paths
from gitops_render.render.walk import (
    ExcludeMatcher,
    RenderedFile,
    RenderResult,
    Walk,
    check_input_symlinks,
    check_inputs,
    finish,
    handle_file,
    non_empty_dirs,
    walk_dir,
)
from gitops_render.settings.config import Settings

__all__ = ["RenderResult", "RenderedFile", "check_input_symlinks", "render_tree"]


def render_tree(settings: Settings, data: Mapping[str, Any], *, cache_dir: Path | None = None) -> RenderResult:
    """Render every input into memory and return the outputs; writes nothing to ``output``.

    ``data`` is deep-copied first (plugins may mutate it, as in makejinja, without
    touching the caller's copy). Plugins are loaded with ``settings.import_paths``
    prepended to ``sys.path`` for the duration of the render. Raises
    :class:`TemplateError`, :class:`PluginError` or :class:`ConfigError`.
    """
    check_inputs(settings)
    own: MutableMapping[str, Any] = copy.deepcopy(dict(data))
    with plugin_import_paths(settings.import_paths, settings.all_plugins):
        env = build_environment(settings, own)
        loaded: LoadedPlugins = load_plugins(settings, env, own)
        env.bytecode_cache = FingerprintedBytecodeCache(Path(cache_dir) if cache_dir is not None else None)
        dir_inputs = tuple(p for p in settings.inputs if p.is_dir())
        walk = Walk(
            settings=settings, env=env, path_filters=loaded.path_filters,
            index=TemplateIndex(settings.root, tuple(settings.inputs)),
            dir_inputs=dir_inputs, file_inputs=tuple(p for p in settings.inputs if p.is_file()),
            excludes=ExcludeMatcher(settings.exclude_patterns),
        )
        walk.result.plugins.extend(loaded.plugins)
        for inp in settings.inputs:
            if inp.is_file():
                rel_out = walk.output_rel(PurePosixPath(inp.name))
                if rel_out not in walk.seen:
                    handle_file(walk, inp, inp.name, rel_out, enforce_suffix=False)
            else:
                walk_dir(walk, dir_inputs.index(inp), inp)
        bcc = env.bytecode_cache
        try:
            finish(walk)
        except BaseException:
            if isinstance(bcc, FingerprintedBytecodeCache):
                bcc.close()  # the run failed: keep the old pack as it is
            raise
        if isinstance(bcc, FingerprintedBytecodeCache):
            bcc.flush()
    walk.result.dirs.update(non_empty_dirs(walk))
    if settings.copy_metadata:
        walk.result.dir_modes.update({d: stat.S_IMODE(walk.dir_sources[d].stat().st_mode) for d in walk.result.dirs})
    return walk.result

