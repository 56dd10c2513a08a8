"""Where the settings of one run come from, and how they are merged.

Sources, lowest precedence first:

1. defaults (the declaration in :mod:`.model`),
2. the config file: table ``[gitops-render]`` of ``<root>/gitops-render.toml``;
   when that file does not exist, table ``[makejinja]`` of ``<root>/makejinja.toml``
   plus every file named in ``MAKEJINJA_SETTINGS`` (``:``-separated, later files win,
   a ``!`` prefix makes a file mandatory), exactly as makejinja/typed-settings read them.
   A ``gitops-render.toml`` without render keys (only ``schema``, ``secrets``,
   ``validate``, ``cluster`` …) next to a ``makejinja.toml`` adds those tables and
   leaves rendering to ``makejinja.toml`` (the zero-change drop-in);
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
>>> s = load_settings(root, environ={})
>>> (s.compat, s.undefined, s.delimiter.variable_start, s.inputs == (root.resolve() / "t",))
('gitops-render', 'strict', '#{', True)
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitops_render.core.errors import ConfigError
from gitops_render.settings.convert import Ctx, build, convert, convert_table, merge, type_hints
from gitops_render.settings.model import GITOPS_ONLY, Compat, Settings, declared_fields, option_of
from gitops_render.settings.runtime import RuntimeEnv, resolve_key_file

__all__ = ["GITOPS_RENDER_FILE", "MAKEJINJA_FILE", "find_root", "load_settings"]

GITOPS_RENDER_FILE = "gitops-render.toml"
MAKEJINJA_FILE = "makejinja.toml"

#: top-level keys that do not change how templates are rendered (allowed next to makejinja.toml)
NON_RENDER = frozenset(f.name for f in declared_fields(Settings) if (o := option_of(f)) and not o.render)


def find_root(start: Path) -> Path:
    """The repository root for a command run in ``start``: like git, walk up.

    The first directory holding ``gitops-render.toml`` or ``makejinja.toml``; the walk
    stops at the git top level (a directory with ``.git``) or the filesystem root.
    When none is found, ``start`` itself (the settings error then names it).
    """
    here = start.resolve()
    for d in (here, *here.parents):
        if (d / GITOPS_RENDER_FILE).is_file() or (d / MAKEJINJA_FILE).is_file():
            return d
        if (d / ".git").exists():
            break
    return here


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fp:
            return tomllib.load(fp)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", hint="fix the TOML syntax at that line") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def _raw_table(path: Path, doc: Mapping[str, Any], table: str, *, required: bool) -> Mapping[str, Any]:
    raw = doc.get(table)
    if raw is None:
        if required:
            raise ConfigError(f"{path}: has no [{table}] table", hint=f"put the settings under a [{table}] header")
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: {table} must be a table", hint=f"write it as a [{table}] header")
    return raw


def _file_ctx(path: Path, compat: Compat) -> Ctx:
    table = "gitops-render" if compat == "gitops-render" else "makejinja"
    return Ctx(source=f"{path.name} [{table}]" if compat == "gitops-render" else str(path),
               base=path.parent.resolve(), split_strings=compat == "makejinja", table=table)


def _read_table(path: Path, compat: Compat, *, required: bool) -> dict[str, Any]:
    table = "gitops-render" if compat == "gitops-render" else "makejinja"
    raw = _raw_table(path, _read_toml(path), table, required=required)
    exclude = GITOPS_ONLY if compat == "makejinja" else frozenset()
    return convert_table(Settings, raw, _file_ctx(path, compat), exclude=exclude)


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
    hints = type_hints(Settings)
    for f in declared_fields(Settings):
        if f.name in GITOPS_ONLY:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub_hints = type_hints(tp)  # type: ignore[arg-type]
            for sub in declared_fields(tp):  # type: ignore[arg-type]
                var = f"MAKEJINJA_{f.name.upper()}_{sub.name.upper()}"
                if var in environ:
                    ctx = Ctx(f"environment variable {var}", cwd, True, "makejinja")
                    opt = option_of(sub)
                    assert opt is not None
                    value = convert(sub_hints[sub.name], environ[var], f"{f.name}.{sub.name}", ctx, opt)
                    out.setdefault(f.name, {})[sub.name] = value
            continue
        var = f"MAKEJINJA_{f.name.upper()}"
        if var in environ:
            ctx = Ctx(f"environment variable {var}", cwd, True, "makejinja")
            if typing.get_origin(tp) is Mapping:
                raise ConfigError(f"{ctx.source}: {f.name} cannot be set from the environment "
                                  "(makejinja does not support it either)",
                                  hint=f"set {f.name} in the config file or on the command line")
            opt = option_of(f)
            assert opt is not None
            out[f.name] = convert(tp, environ[var], f.name, ctx, opt)
    return out


def _flatten_overrides(overrides: Mapping[str, Any], compat: Compat) -> dict[str, Any]:
    """Accept ``{"force": True}``, ``{"delimiter.block_start": "x"}`` or nested tables."""
    ctx = Ctx(source="command line", base=Path.cwd(), split_strings=False, table="overrides")
    nested: dict[str, Any] = {}
    for raw_key, value in overrides.items():
        key = str(raw_key).replace("-", "_")
        if "." in key:
            head, _, tail = key.partition(".")
            nested.setdefault(head, {})[tail] = value
        elif isinstance(value, Mapping) and isinstance(nested.get(key), dict):
            nested[key].update(value)
        else:
            nested[key] = dict(value) if isinstance(value, Mapping) else value
    exclude = GITOPS_ONLY if compat == "makejinja" else frozenset()
    return convert_table(Settings, nested, ctx, exclude=exclude)


def _defaults(root: Path, compat: Compat) -> dict[str, Any]:
    """The mode's defaults as a partial table (the declaration's ``gitops_default`` in gitops-render mode)."""
    values: dict[str, Any] = {"import_paths": (root,)}
    if compat == "makejinja":
        return values
    # gitops-render's own defaults for new repos: strict undefined, the cluster-template
    # delimiters and suffix, and force (re-render every run): the writer compares before it
    # writes, warns about hand edits and never touches files it did not generate, so
    # makejinja's "skip existing outputs" protection is not needed.
    values["output"] = root
    for f in declared_fields(Settings):
        opt = option_of(f)
        if opt is not None and opt.has_gitops_default:
            default = opt.gitops_default
            is_table = dataclasses.is_dataclass(default) and not isinstance(default, type)
            values[f.name] = dataclasses.asdict(default) if is_table else default
    return values


def _check_safety(root: Path, output: Path, config_file: Path | None) -> None:
    """The output is never inside ``.git`` (the state directory is checked by the write stage)."""
    if ".git" in output.parts:
        raise ConfigError(f"{config_file or root}: output = {str(output)!r} is inside a .git directory",
                          hint="set output to a directory of the work tree (e.g. \".\" or \"kubernetes\")")


def _check_schema_table(settings: Settings) -> None:
    """A schema per data file names data files of the run."""
    if not isinstance(settings.schema, Mapping):
        return
    data = [Path(d) for d in settings.data]
    for data_file in settings.schema:
        if not any(data_file == d or data_file.is_relative_to(d) for d in data):
            raise ConfigError(f"{settings.config_file}: schema names {str(data_file)!r}, which is not one of "
                              "the data files", hint="use the data file's path as written in 'data', "
                                                     "relative to the settings file")


def _finish(root: Path, config_file: Path | None, compat: Compat, values: Mapping[str, Any],
            runtime: RuntimeEnv) -> Settings:
    if "output" not in values:
        raise ConfigError(f"{config_file or root}: 'output' is not set",
                          hint="set output = \"<dir>\" or pass --output")
    settings: Settings = build(Settings, values, root=root, config_file=config_file, compat=compat,
                               runtime=runtime)
    _check_safety(root, settings.output, config_file)
    _check_schema_table(settings)
    sops_config = Path(settings.secrets.sops_config)
    return dataclasses.replace(
        settings,
        age_key_file=resolve_key_file(root, settings.secrets.age_key_file, runtime),
        sops_config_file=sops_config if sops_config.is_absolute() else root / sops_config)


def _discover(root: Path, env: Mapping[str, str]) -> tuple[Compat, list[Path], dict[str, Any]]:
    """The mode, the render settings files and the drop-in extras of a repository without ``--settings``."""
    gitops_file = root / GITOPS_RENDER_FILE
    makejinja = _makejinja_files(root, env)
    if not gitops_file.is_file():
        if not makejinja:
            raise ConfigError(f"{root}: neither {GITOPS_RENDER_FILE} nor {MAKEJINJA_FILE} found",
                              hint=f"create {GITOPS_RENDER_FILE} with a [gitops-render] table "
                                   "(or run inside the repository, or pass --root)")
        return "makejinja", makejinja, {}
    gitops_file = gitops_file.resolve()
    raw = _raw_table(gitops_file, _read_toml(gitops_file), "gitops-render", required=True)
    render_keys = sorted(str(k).replace("-", "_") for k in raw if str(k).replace("-", "_") not in NON_RENDER)
    if (root / MAKEJINJA_FILE).is_file():
        if not render_keys:  # the zero-change drop-in: rendering stays makejinja.toml's
            return "makejinja", makejinja, convert_table(Settings, raw, _file_ctx(gitops_file, "gitops-render"))
        if "inputs" not in render_keys:
            raise ConfigError(f"{gitops_file}: sets render keys ({', '.join(render_keys)}) but no inputs, "
                              f"while {MAKEJINJA_FILE} is there too",
                              hint=f"move every render key to one file: either leave rendering to {MAKEJINJA_FILE} "
                                   f"(keep only schema/secrets/validate/cluster in {GITOPS_RENDER_FILE}) "
                                   f"or set inputs in {GITOPS_RENDER_FILE}")
    return "gitops-render", [gitops_file], {}


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
    ``environ`` defaults to ``os.environ``: it gives ``settings.runtime`` and, in
    makejinja mode, the ``MAKEJINJA_*`` values. Raises :class:`ConfigError` for a
    missing file, unknown keys (with a did-you-mean) and wrongly typed values
    (naming file and key).
    """
    root = Path(root).resolve()
    env = os.environ if environ is None else environ
    runtime = RuntimeEnv.from_environ(env)
    files: list[Path]
    compat: Compat
    extras: dict[str, Any] = {}
    if config_file is not None:
        config_file = Path(config_file).resolve()
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} not found", hint="check the --settings path")
        doc = _read_toml(config_file)
        compat = "gitops-render" if "gitops-render" in doc or "makejinja" not in doc else "makejinja"
        files = [config_file]
    else:
        compat, files, extras = _discover(root, env)
    values = _defaults(root, compat)
    for path in files:
        merge(values, _read_table(path, compat, required=compat == "gitops-render"))
    merge(values, extras)
    if compat == "makejinja":
        merge(values, _env_values(env))
    if overrides:
        merge(values, _flatten_overrides(overrides, compat if not extras else "gitops-render"))
    return _finish(root, files[-1] if files else None, compat, values, runtime)
