"""Operator-facing template errors: the template file and line, the source line, a did-you-mean."""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from gitops_render.core.errors import TemplateError
from gitops_render.render.limits import TemplateTimeout
from gitops_render.render.loaders import split_rooted
from gitops_render.render.plugins import failing_frame
from gitops_render.settings.config import Settings

__all__ = ["TemplateIndex", "template_error"]

@dataclass(frozen=True)
class TemplateIndex:
    """Maps template file names to operator-friendly display paths."""

    root: Path
    inputs: tuple[Path, ...]

    def display(self, filename: str | None, name: str | None = None) -> str:
        if filename:
            path = Path(filename)
            for base in (self.root, *self.inputs):
                try:
                    return path.relative_to(base).as_posix()
                except ValueError:
                    continue
            return filename
        rooted = split_rooted(name) if name else None
        if rooted is not None:
            return rooted[1]
        return (name or "<template>").replace("\x00", "\\0")

    def is_template_file(self, filename: str) -> bool:
        path = Path(filename)
        return any(path == base or base in path.parents for base in self.inputs)


def _source_line(filename: str | None, line: int | None) -> str:
    if not filename or not line:
        return ""
    try:
        lines = Path(filename).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    if 0 < line <= len(lines):
        return f"\n    {line} | {lines[line - 1].strip()}"
    return ""


def _undefined_hint(message: str, known: Iterable[str]) -> str:
    """Did-you-mean for an undefined name, else where names come from.

    >>> _undefined_hint("'litellm_replicass' is undefined", ["litellm_replicas", "x"])
    "did you mean 'litellm_replicas'? (names come from the data file, schema defaults and plugins)"
    """
    name = message.split("'")[1] if message.count("'") >= 2 else ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75) if name else []
    if close:
        return f"did you mean {close[0]!r}? (names come from the data file, schema defaults and plugins)"
    return "add it to the data file (and the schema, with its default), or fix the name in the template"


def template_error(exc: BaseException, top: str, index: TemplateIndex,
                    settings: Settings, known: Iterable[str] = ()) -> TemplateError:
    """Turn any exception raised while compiling/rendering into a located TemplateError."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = index.display(exc.filename, exc.name)
        hint = None if where == top else f"while rendering {top}"
        return TemplateError(where, exc.lineno, f"syntax error: {exc.message}"
                             + _source_line(exc.filename, exc.lineno), hint=hint)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if index.is_template_file(f.filename)]
    frame = frames[-1] if frames else None
    where = index.display(frame.filename) if frame else top
    line = frame.lineno if frame else None
    snippet = _source_line(frame.filename, line) if frame else ""
    hint = None if where == top else f"while rendering {top}"
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateError(where, line, f"undefined: {exc.message}{snippet}",
                             hint=hint or _undefined_hint(exc.message or "", known))
    if isinstance(exc, jinja2.TemplateNotFound):
        return TemplateError(where, line, f"template not found: {index.display(None, str(exc.name))}{snippet}",
                             hint=hint or "include/import names are relative to an input directory "
                                          "and cannot leave it")
    if isinstance(exc, TemplateTimeout):
        return TemplateError(where, line, f"{exc} (template_timeout = {settings.template_timeout:g}){snippet}",
                             hint=(f"while rendering {top}; " if hint else "")
                             + "look for an endless loop; a template that really needs longer: raise "
                               "template_timeout in [gitops-render]")
    text = str(exc)
    kind = type(exc).__name__
    msg = f"{kind}: {text}" if text else kind
    if not isinstance(exc, jinja2.TemplateError):
        origin = failing_frame(exc, settings.import_paths)
        if origin and not (frame and origin == f"{frame.filename}:{frame.lineno}"):
            msg += f" (raised at {origin})"
    return TemplateError(where, line, msg + snippet, hint=hint)


