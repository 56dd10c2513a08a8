"""Settings of one run, from ``gitops-render.toml`` or (fallback) ``makejinja.toml``.

Sources, lowest precedence first:

1. defaults (see below),
2. the config file: table ``[gitops-render]`` of ``<root>/gitops-render.toml``;
   when that file does not exist, table ``[makejinja]`` of ``<root>/makejinja.toml``
   plus every file named in ``MAKEJINJA_SETTINGS`` (``:``-separated, later files win,
   a ``!`` prefix makes a file mandatory), exactly as makejinja/typed-settings read them,
3. in makejinja mode only: ``MAKEJINJA_<FIELD>`` environment variables
   (``MAKEJINJA_FORCE=false``, ``MAKEJINJA_DELIMITER_VARIABLE_START=#{``; lists are
   ``:``-separated; mappings cannot be given this way, as in makejinja),
4. ``overrides`` (the CLI): a mapping of field names, dotted names
   (``"delimiter.block_start"``) or nested mappings.

Relative paths resolve against the directory of the file that set them; paths from
the environment or from ``overrides`` resolve against the current directory (what a
shell user expects). Keys may be spelled with ``-`` or ``_``.

Defaults are makejinja 2.8.1's, except in ``gitops-render.toml`` where ``undefined``
is ``"strict"``, the delimiters are the cluster-template family's
(``#% %#``, ``#{ }#``, ``#| #|``), and ``output`` defaults to the repository root.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> _ = (root / "gitops-render.toml").write_text('[gitops-render]\\ninputs = ["t"]\\n')
>>> s = load_settings(root)
>>> (s.compat, s.undefined, s.delimiter.variable_start, s.inputs == (root.resolve() / "t",))
('gitops-render', 'strict', '#{', True)
"""

from __future__ import annotations

import difflib
import math
import os
import subprocess
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from gitops_render.core.errors import ConfigError, ToolFailedError

__all__ = [
    "DEFAULT_TEMPLATE_TIMEOUT",
    "GITOPS_RENDER_FILE",
    "MAKEJINJA_FILE",
    "UNDEFINED_MODES",
    "Delimiters",
    "Internal",
    "Prefix",
    "Settings",
    "Whitespace",
    "load_settings",
    "run_exec_hooks",
]

GITOPS_RENDER_FILE = "gitops-render.toml"
#: seconds one template may take to render (an endless loop stops with exit 2 instead of hanging)
DEFAULT_TEMPLATE_TIMEOUT = 60.0
MAKEJINJA_FILE = "makejinja.toml"
UNDEFINED_MODES = ("default", "chainable", "debug", "strict")

Compat = Literal["gitops-render", "makejinja"]


@dataclass(frozen=True)
class Delimiters:
    """Jinja delimiters (makejinja's ``[makejinja.delimiter]`` table)."""

    block_start: str = "{%"
    block_end: str = "%}"
    variable_start: str = "{{"
    variable_end: str = "}}"
    comment_start: str = "{#"
    comment_end: str = "#}"


#: the delimiters of the cluster-template family, gitops-render's default
CLUSTER_TEMPLATE_DELIMITERS = Delimiters("#%", "%#", "#{", "}#", "#|", "#|")


@dataclass(frozen=True)
class Prefix:
    """Jinja line statement / line comment prefixes (``None`` = off)."""

    line_statement: str | None = None
    line_comment: str | None = None


@dataclass(frozen=True)
class Whitespace:
    """Jinja whitespace control, with makejinja's defaults (all ``True``)."""

    trim_blocks: bool = True
    lstrip_blocks: bool = True
    keep_trailing_newline: bool = True
    newline_sequence: str = "\n"


@dataclass(frozen=True)
class Internal:
    """Rarely changed Jinja environment switches (makejinja's hidden options).

    ``cache_size`` only affects speed: the renderer treats ``0`` (makejinja's
    default, "recompile every time") as unbounded, because templates cannot change
    during one run.
    """

    optimized: bool = True
    autoescape: bool = False
    cache_size: int = 0
    auto_reload: bool = False
    enable_async: bool = False


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Settings:
    """Everything one render needs; every path is absolute.

    Field names and meaning are makejinja's ``Config`` (plugins receive this object
    as ``config``), plus ``root``, ``config_file``, ``compat``, ``schema`` and the raw
    ``secrets`` / ``validate`` / ``cluster`` tables that other modules interpret.
    """

    root: Path
    output: Path
    config_file: Path | None = None
    compat: Compat = "gitops-render"
    inputs: tuple[Path, ...] = ()
    include_patterns: tuple[str, ...] = ("**/*",)
    exclude_patterns: tuple[str, ...] = ()
    jinja_suffix: str | None = ".jinja"
    keep_jinja_suffix: bool = False
    keep_empty: bool = False
    copy_metadata: bool = False
    data: tuple[Path, ...] = ()
    data_vars: Mapping[str, str] = field(default_factory=_empty)
    file_data: Mapping[str, tuple[Path, ...]] = field(default_factory=_empty)
    plugins: tuple[str, ...] = ()
    loaders: tuple[str, ...] = ()
    import_paths: tuple[Path, ...] = ()
    extensions: tuple[str, ...] = ()
    undefined: str = "default"
    exec_pre: tuple[str, ...] = ()
    exec_post: tuple[str, ...] = ()
    clean: bool = False
    force: bool = False
    quiet: bool = False
    delimiter: Delimiters = Delimiters()
    prefix: Prefix = Prefix()
    whitespace: Whitespace = Whitespace()
    internal: Internal = Internal()
    schema: Path | None = None
    secrets: Mapping[str, Any] = field(default_factory=_empty)
    validate: Mapping[str, Any] = field(default_factory=_empty)
    cluster: Mapping[str, Any] = field(default_factory=_empty)
    template_timeout: float = DEFAULT_TEMPLATE_TIMEOUT

    @property
    def all_plugins(self) -> tuple[str, ...]:
        """``plugins`` then the deprecated ``loaders``, in makejinja's order."""
        return self.plugins + self.loaders

    @property
    def delimiters(self) -> Delimiters:
        """Alias of :attr:`delimiter`."""
        return self.delimiter


# --------------------------------------------------------------------------- field kinds


@dataclass(frozen=True)
class _Ctx:
    """Where a value came from: for messages and for resolving relative paths."""

    source: str  # "gitops-render.toml", "environment variable MAKEJINJA_X", "override"
    base: Path  # directory relative paths resolve against
    split_strings: bool  # a string given for a list is ":"-separated (typed-settings)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def _fail(ctx: _Ctx, key: str, expected: str, value: Any) -> ConfigError:
    shown = repr(value) if not isinstance(value, (dict, list)) else _type_name(value)
    return ConfigError(f"{ctx.source}: {key}: expected {expected}, got {_type_name(value)} {shown}".rstrip())


def _as_bool(value: Any, key: str, ctx: _Ctx) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and ctx.split_strings:  # env vars, typed-settings' to_bool
        low = value.lower()
        if low in ("true", "t", "yes", "y", "on", "1"):
            return True
        if low in ("false", "f", "no", "n", "off", "0"):
            return False
    raise _fail(ctx, key, "a boolean (true/false)", value)


def _as_int(value: Any, key: str, ctx: _Ctx) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and ctx.split_strings:
        try:
            return int(value)
        except ValueError:
            pass
    raise _fail(ctx, key, "an integer", value)


def _as_str(value: Any, key: str, ctx: _Ctx) -> str:
    if isinstance(value, str):
        return value
    raise _fail(ctx, key, "a string", value)


def _as_opt_str(value: Any, key: str, ctx: _Ctx) -> str | None:
    return None if value is None else _as_str(value, key, ctx)


def _as_path(value: Any, key: str, ctx: _Ctx) -> Path:
    if isinstance(value, (str, os.PathLike)):
        p = Path(value)
        return (p if p.is_absolute() else ctx.base / p).resolve()
    raise _fail(ctx, key, "a path string", value)


def _as_strs(value: Any, key: str, ctx: _Ctx) -> tuple[str, ...]:
    if isinstance(value, str) and ctx.split_strings:
        return tuple(value.split(":"))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _fail(ctx, key, "a list of strings", value)


def _as_paths(value: Any, key: str, ctx: _Ctx) -> tuple[Path, ...]:
    if isinstance(value, str) and ctx.split_strings:
        value = value.split(":")
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value):
        return tuple(_as_path(v, key, ctx) for v in value)
    raise _fail(ctx, key, "a list of path strings", value)


def _as_undefined(value: Any, key: str, ctx: _Ctx) -> str:
    if isinstance(value, str) and value in UNDEFINED_MODES:
        return value
    if isinstance(value, str):
        close = difflib.get_close_matches(value, UNDEFINED_MODES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(UNDEFINED_MODES)}"
        raise ConfigError(f"{ctx.source}: {key}: unknown mode {value!r}", hint=hint)
    raise _fail(ctx, key, "one of " + ", ".join(UNDEFINED_MODES), value)


def _as_str_map(value: Any, key: str, ctx: _Ctx) -> Mapping[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, (dict, list)) or v is None:
                raise _fail(ctx, f"{key}.{k}", "a scalar (it is used as a string)", v)
            # makejinja/cattrs structure every value with str(): TOML `x = 1` -> "1"
            out[str(k)] = v if isinstance(v, str) else (str(v).lower() if isinstance(v, bool) else str(v))
        return MappingProxyType(out)
    raise _fail(ctx, key, "a table of KEY = \"value\"", value)


def _as_paths_map(value: Any, key: str, ctx: _Ctx) -> Mapping[str, tuple[Path, ...]]:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _as_paths(v, f"{key}.{k}", ctx) for k, v in value.items()})
    raise _fail(ctx, key, "a table of TEMPLATE = [data files]", value)


def _as_seconds(value: Any, key: str, ctx: _Ctx) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise _fail(ctx, key, "a positive number of seconds", value)


def _as_raw_table(value: Any, key: str, ctx: _Ctx) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    raise _fail(ctx, key, "a table", value)


_Conv = Callable[[Any, str, _Ctx], Any]

_TOP: dict[str, _Conv] = {
    "inputs": _as_paths,
    "output": _as_path,
    "include_patterns": _as_strs,
    "exclude_patterns": _as_strs,
    "jinja_suffix": _as_opt_str,
    "keep_jinja_suffix": _as_bool,
    "keep_empty": _as_bool,
    "copy_metadata": _as_bool,
    "data": _as_paths,
    "data_vars": _as_str_map,
    "file_data": _as_paths_map,
    "plugins": _as_strs,
    "loaders": _as_strs,
    "import_paths": _as_paths,
    "extensions": _as_strs,
    "undefined": _as_undefined,
    "exec_pre": _as_strs,
    "exec_post": _as_strs,
    "clean": _as_bool,
    "force": _as_bool,
    "quiet": _as_bool,
}
_GITOPS_ONLY: dict[str, _Conv] = {
    "schema": _as_path,
    "secrets": _as_raw_table,
    "validate": _as_raw_table,
    "cluster": _as_raw_table,
    "template_timeout": _as_seconds,
}
_NESTED: dict[str, tuple[type, dict[str, _Conv]]] = {
    "delimiter": (Delimiters, {f.name: _as_str for f in fields(Delimiters)}),
    "prefix": (Prefix, {f.name: _as_opt_str for f in fields(Prefix)}),
    "whitespace": (Whitespace, {"trim_blocks": _as_bool, "lstrip_blocks": _as_bool,
                                "keep_trailing_newline": _as_bool, "newline_sequence": _as_str}),
    "internal": (Internal, {"optimized": _as_bool, "autoescape": _as_bool, "cache_size": _as_int,
                            "auto_reload": _as_bool, "enable_async": _as_bool}),
}
_NEWLINES = ("\n", "\r\n", "\r")


def _known_keys(compat: Compat) -> list[str]:
    keys = list(_TOP) + list(_NESTED)
    if compat == "gitops-render":
        keys += list(_GITOPS_ONLY)
    return keys


def _unknown(key: str, known: Sequence[str], ctx: _Ctx, table: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return ConfigError(f"{ctx.source}: unknown key {key!r} in [{table}]", hint=hint)


# --------------------------------------------------------------------------- reading


def _convert_table(raw: Mapping[str, Any], ctx: _Ctx, compat: Compat, table: str) -> dict[str, Any]:
    """Check and convert one settings table; returns ``{field or "nested.field": value}``."""
    out: dict[str, Any] = {}
    top = dict(_TOP, **(_GITOPS_ONLY if compat == "gitops-render" else {}))
    for raw_key, value in raw.items():
        key = str(raw_key).replace("-", "_")
        if key in top:
            out[key] = top[key](value, key, ctx)
        elif key in _NESTED:
            if not isinstance(value, Mapping):
                raise _fail(ctx, key, "a table", value)
            sub = _NESTED[key][1]
            for raw_sub, sub_value in value.items():
                sub_key = str(raw_sub).replace("-", "_")
                if sub_key not in sub:
                    raise _unknown(sub_key, list(sub), ctx, f"{table}.{key}")
                out[f"{key}.{sub_key}"] = sub[sub_key](sub_value, f"{key}.{sub_key}", ctx)
        else:
            raise _unknown(key, _known_keys(compat), ctx, table)
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fp:
            return tomllib.load(fp)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def _read_table(path: Path, table: str, compat: Compat, *, required: bool) -> dict[str, Any]:
    doc = _read_toml(path)
    raw = doc.get(table)
    if raw is None:
        if required:
            raise ConfigError(f"{path}: has no [{table}] table",
                              hint=f"put the settings under a [{table}] header")
        return {}
    ctx = _Ctx(source=f"{path.name} [{table}]" if compat == "gitops-render" else str(path),
               base=path.parent.resolve(), split_strings=compat == "makejinja")
    if not isinstance(raw, Mapping):
        raise _fail(ctx, table, "a table", raw)
    return _convert_table(raw, ctx, compat, table)


def _makejinja_files(root: Path, environ: Mapping[str, str]) -> list[Path]:
    """``<root>/makejinja.toml`` then the files of ``MAKEJINJA_SETTINGS`` (typed-settings rules)."""
    files: list[Path] = []
    default = root / MAKEJINJA_FILE
    if default.is_file():
        files.append(default.resolve())
    for entry in environ.get("MAKEJINJA_SETTINGS", "").split(":"):
        _, flag, name = entry.rpartition("!")
        if not name:
            continue
        path = Path(name)
        if path.is_file():
            files.append(path.resolve())
        elif flag == "!":
            raise ConfigError(f"MAKEJINJA_SETTINGS: mandatory config file {name!r} not found")
    return files


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """``MAKEJINJA_<FIELD>`` variables, converted with typed-settings' string rules."""
    out: dict[str, Any] = {}
    cwd = Path.cwd()
    for key, conv in _TOP.items():
        var = f"MAKEJINJA_{key.upper()}"
        if var in environ:
            ctx = _Ctx(source=f"environment variable {var}", base=cwd, split_strings=True)
            if conv in (_as_str_map, _as_paths_map):
                raise ConfigError(f"{ctx.source}: {key} cannot be set from the environment "
                                  "(makejinja does not support it either)",
                                  hint=f"set {key} in the config file or on the command line")
            out[key] = conv(environ[var], key, ctx)
    for table, (_cls, sub) in _NESTED.items():
        for key, conv in sub.items():
            var = f"MAKEJINJA_{table.upper()}_{key.upper()}"
            if var in environ:
                ctx = _Ctx(source=f"environment variable {var}", base=cwd, split_strings=True)
                out[f"{table}.{key}"] = conv(environ[var], f"{table}.{key}", ctx)
    return out


def _flatten_overrides(overrides: Mapping[str, Any], compat: Compat) -> dict[str, Any]:
    """Accept ``{"force": True}``, ``{"delimiter.block_start": "x"}`` or nested tables."""
    ctx = _Ctx(source="command line", base=Path.cwd(), split_strings=False)
    nested: dict[str, Any] = {}
    for raw_key, value in overrides.items():
        key = str(raw_key).replace("-", "_")
        if "." in key:
            head, _, tail = key.partition(".")
            nested.setdefault(head, {})[tail] = value
        elif key in _NESTED and isinstance(value, Mapping):
            nested.setdefault(key, {}).update(value)
        else:
            nested[key] = value
    return _convert_table(nested, ctx, compat, "overrides")


def _defaults(root: Path, compat: Compat) -> dict[str, Any]:
    if compat == "makejinja":
        return {"import_paths": (root,)}
    # gitops-render's own defaults for new repos: strict undefined, the cluster-template
    # delimiters and suffix, and force (re-render every run): the writer compares before it
    # writes, warns about hand edits and never touches files it did not generate, so
    # makejinja's "skip existing outputs" protection is not needed.
    return {
        "import_paths": (root,),
        "output": root,
        "undefined": "strict",
        "force": True,
        "jinja_suffix": ".j2",
        **{f"delimiter.{f.name}": getattr(CLUSTER_TEMPLATE_DELIMITERS, f.name) for f in fields(Delimiters)},
    }


def _build(root: Path, config_file: Path | None, compat: Compat, values: Mapping[str, Any]) -> Settings:
    flat = dict(values)
    nested: dict[str, Any] = {}
    for table, (cls, _sub) in _NESTED.items():
        kwargs = {k.split(".", 1)[1]: flat.pop(k) for k in list(flat) if k.startswith(table + ".")}
        nested[table] = cls(**kwargs)
    if "output" not in flat:
        where = config_file or root
        raise ConfigError(f"{where}: 'output' is not set", hint="set output = \"<dir>\" or pass --output")
    if nested["whitespace"].newline_sequence not in _NEWLINES:
        raise ConfigError(f"{config_file or 'settings'}: whitespace.newline_sequence must be one of "
                          f"{', '.join(repr(n) for n in _NEWLINES)}")
    return Settings(root=root, config_file=config_file, compat=compat, **flat, **nested)


def load_settings(
    root: Path,
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the settings of the repository at ``root``.

    ``config_file`` names the file explicitly: it is read in gitops-render mode when
    it has a ``[gitops-render]`` table, else in makejinja mode from ``[makejinja]``.
    ``environ`` defaults to ``os.environ`` (only consulted in makejinja mode).
    Raises :class:`ConfigError` for a missing file, unknown keys (with a
    did-you-mean) and wrongly typed values (naming file and key).
    """
    root = Path(root).resolve()
    env = os.environ if environ is None else environ
    files: list[Path]
    compat: Compat
    if config_file is not None:
        config_file = Path(config_file).resolve()
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} not found")
        doc = _read_toml(config_file)
        compat = "gitops-render" if "gitops-render" in doc or "makejinja" not in doc else "makejinja"
        files = [config_file]
    elif (root / GITOPS_RENDER_FILE).is_file():
        compat, files = "gitops-render", [(root / GITOPS_RENDER_FILE).resolve()]
    else:
        compat, files = "makejinja", _makejinja_files(root, env)
        if not files:
            raise ConfigError(f"{root}: neither {GITOPS_RENDER_FILE} nor {MAKEJINJA_FILE} found",
                              hint=f"create {GITOPS_RENDER_FILE} with a [gitops-render] table "
                                   "(or run from the repository root)")
    values = _defaults(root, compat)
    table = "gitops-render" if compat == "gitops-render" else "makejinja"
    for path in files:
        values.update(_read_table(path, table, compat, required=compat == "gitops-render"))
    if compat == "makejinja":
        values.update(_env_values(env))
    if overrides:
        values.update(_flatten_overrides(overrides, compat))
    return _build(root, files[-1] if files else None, compat, values)


# --------------------------------------------------------------------------- hooks


def run_exec_hooks(settings: Settings, stage: Literal["pre", "post"]) -> None:
    """Run ``exec_pre`` or ``exec_post`` like makejinja: ``subprocess.run(cmd, shell=True)``.

    Commands run in ``settings.root`` (makejinja uses the caller's directory, which
    is the repository root in practice) with the inherited environment. A failing
    command raises :class:`ToolFailedError` and stops the run.
    """
    commands = settings.exec_pre if stage == "pre" else settings.exec_post
    for cmd in commands:
        proc = subprocess.run(cmd, shell=True, cwd=settings.root, check=False)  # noqa: S602 (user's hook)
        if proc.returncode != 0:
            raise ToolFailedError(f"exec_{stage}", f"command {cmd!r} failed with exit code {proc.returncode}",
                                  returncode=proc.returncode,
                                  hint=f"fix the command or remove it from exec_{stage}")

