"""The Jinja environment makejinja builds, and the ``undefined`` modes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, ChoiceLoader, DebugUndefined, Environment, StrictUndefined, Undefined

from gitops_render.core.errors import ConfigError
from gitops_render.render.bytecode import FingerprintedBytecodeCache
from gitops_render.render.loaders import ConfinedFileSystemLoader, FileInputLoader, RootedLoader
from gitops_render.settings.config import Settings

__all__ = ["TEMPLATE_CACHE_SIZE", "UNDEFINED_CLASSES", "build_environment"]

#: templates kept instantiated at once (includes and macro files stay hot; the rest is reloaded from bytecode)
TEMPLATE_CACHE_SIZE = 400

UNDEFINED_CLASSES: Mapping[str, type[Undefined]] = {
    "default": Undefined,
    "chainable": ChainableUndefined,
    "debug": DebugUndefined,
    "strict": StrictUndefined,
}


def _undefined_class(mode: str) -> type[Undefined]:
    try:
        return UNDEFINED_CLASSES[mode]
    except KeyError:
        raise ConfigError(f"undefined: unknown mode {mode!r}",
                          hint=f"use one of {', '.join(UNDEFINED_CLASSES)}") from None


def build_environment(settings: Settings, data: Mapping[str, Any], *,
                      cache_dir: Path | None = None) -> Environment:
    """The Jinja environment makejinja builds (``init_jinja_env``), without plugins.

    Globals are ``data`` then ``env`` (``os.environ``). ``cache_dir`` attaches a
    bytecode cache (attach it after plugins added extensions; :func:`render_tree`
    does). Templates stay cached for the environment's lifetime.
    """
    file_inputs = [p for p in settings.inputs if p.is_file()]
    dir_inputs = [p for p in settings.inputs if p.is_dir()]
    # makejinja's 0 ("no cache") means "bounded" here: evicted templates come back from the in-memory
    # bytecode, and 10 000 compiled templates are never all alive at once
    cache_size = settings.internal.cache_size if settings.internal.cache_size > 0 else TEMPLATE_CACHE_SIZE
    try:
        env = Environment(
            loader=ChoiceLoader([RootedLoader(dir_inputs), FileInputLoader(file_inputs),
                                 ConfinedFileSystemLoader(dir_inputs)]),
            extensions=list(settings.extensions),
            block_start_string=settings.delimiter.block_start,
            block_end_string=settings.delimiter.block_end,
            variable_start_string=settings.delimiter.variable_start,
            variable_end_string=settings.delimiter.variable_end,
            comment_start_string=settings.delimiter.comment_start,
            comment_end_string=settings.delimiter.comment_end,
            line_statement_prefix=settings.prefix.line_statement,
            line_comment_prefix=settings.prefix.line_comment,
            trim_blocks=settings.whitespace.trim_blocks,
            lstrip_blocks=settings.whitespace.lstrip_blocks,
            newline_sequence=settings.whitespace.newline_sequence,  # type: ignore[arg-type]
            keep_trailing_newline=settings.whitespace.keep_trailing_newline,
            optimized=settings.internal.optimized,
            undefined=_undefined_class(settings.undefined),
            finalize=None,
            autoescape=settings.internal.autoescape,
            cache_size=cache_size,
            auto_reload=settings.internal.auto_reload,
            bytecode_cache=FingerprintedBytecodeCache(cache_dir) if cache_dir is not None else None,
            enable_async=settings.internal.enable_async,
        )
    except ImportError as exc:
        raise ConfigError(f"extensions: cannot import {exc.name or exc}",
                          hint="check the 'extensions' setting (e.g. jinja2.ext.do)") from None
    except (AttributeError, ValueError, TypeError, AssertionError) as exc:
        raise ConfigError(f"invalid Jinja environment settings: {exc}",
                          hint="check the delimiter, prefix and extensions settings") from None
    env.globals.update(data)
    env.globals["env"] = os.environ
    return env


