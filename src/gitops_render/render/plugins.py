"""Load makejinja-style plugins (``module:Class`` or ``module.Class``) into a Jinja environment.

Semantics follow makejinja 2.8.1 (``app.py: load_plugin``):

* the class is found with :func:`jinja2.utils.import_string`;
* constructor keyword arguments are chosen by parameter *name* among ``env``,
  ``environment``, ``data`` and ``config`` (``data`` is the very dict whose keys
  became the environment's globals, ``config`` is the :class:`~gitops_render.config.Settings`);
* each plugin is applied in the fixed order ``globals``, ``functions``, ``data``,
  ``extensions``, ``filters``, ``tests``, ``policies`` (every call gated by
  ``hasattr``); plugins are handled in order (``plugins`` then ``loaders``), so later
  ones override earlier ones;
* ``path_filters()`` are collected after all plugins have been built.

Differences, on purpose:

* Extensions returned by ``extensions()`` **are registered** (makejinja computes
  them and then drops the result, so their tags never work).
* ``import_paths`` are **prepended** to ``sys.path`` (makejinja appends them, so an
  installed module of the same name would shadow the repository's ``plugin.py``),
  only for as long as the :func:`plugin_import_paths` context lasts, and the modules
  imported from them are forgotten afterwards (so two repositories rendered in one
  process never see each other's ``plugin`` module).
* Errors while importing, constructing or calling a plugin become a
  :class:`~gitops_render.errors.PluginError` naming the plugin and the ``file:line``
  of the failing plugin frame instead of a traceback.
* Plugins importing ``makejinja`` work without makejinja installed: a small shim
  package (:mod:`gitops_render.render._makejinja_shim`) is registered as ``makejinja`` only
  when the real one cannot be imported.
* Nothing ever changes the working directory.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import platform
import re
import sys
import traceback
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment
from jinja2.environment import load_extensions
from jinja2.utils import import_string

from gitops_render.core.errors import PluginError
from gitops_render.settings.config import Settings

__all__ = [
    "LoadedPlugins",
    "PathFilter",
    "ensure_makejinja_importable",
    "failing_frame",
    "install_hint",
    "install_makejinja_shim",
    "interpreter",
    "load_plugin",
    "load_plugins",
    "plugin_import_paths",
]

PathFilter = Callable[[Path], bool]

#: the order in which makejinja applies a plugin's hooks
_HOOK_ORDER = ("globals", "functions", "data", "extensions", "filters", "tests", "policies")
_CTOR_PARAMS = ("env", "environment", "data", "config")
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the gitops_render package


@dataclass(frozen=True)
class LoadedPlugins:
    """The plugin objects (in load order) and every plugin's path filters."""

    plugins: tuple[object, ...]
    path_filters: tuple[PathFilter, ...]


# --------------------------------------------------------------------------- makejinja shim


def install_makejinja_shim() -> None:
    """Register :mod:`gitops_render._makejinja_shim` as ``makejinja`` in ``sys.modules``."""
    from gitops_render.render import _makejinja_shim as shim
    from gitops_render.render._makejinja_shim import config as shim_config
    from gitops_render.render._makejinja_shim import plugin as shim_plugin

    sys.modules["makejinja"] = shim
    sys.modules["makejinja.plugin"] = shim_plugin
    sys.modules["makejinja.loader"] = shim_plugin
    sys.modules["makejinja.config"] = shim_config


def ensure_makejinja_importable() -> str:
    """Make ``import makejinja`` work; returns ``"makejinja"`` or ``"shim"``.

    The real package is preferred; it is not imported here (that is slow), only
    looked up. :func:`load_plugin` falls back to the shim when importing it fails.
    """
    mod = sys.modules.get("makejinja")
    if mod is not None:
        return "shim" if getattr(mod, "__name__", "") == "gitops_render.render._makejinja_shim" else "makejinja"
    try:
        found = importlib.util.find_spec("makejinja") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        install_makejinja_shim()
        return "shim"
    return "makejinja"


# --------------------------------------------------------------------------- sys.path


def _is_under(file: str | None, dirs: Sequence[Path]) -> bool:
    if not file:
        return False
    try:
        path = Path(file).resolve()
    except (OSError, RuntimeError):
        return False
    return any(path == d or d in path.parents for d in dirs)


def _local_module_names(dirs: Sequence[Path]) -> set[str]:
    """Top-level module names that ``dirs`` provide (``x.py`` and packages ``x/``)."""
    names: set[str] = set()
    for d in dirs:
        try:
            for entry in d.iterdir():
                if entry.suffix == ".py":
                    names.add(entry.stem)
                elif entry.is_dir() and (entry / "__init__.py").exists():
                    names.add(entry.name)
        except OSError:
            continue
    return names


@contextmanager
def plugin_import_paths(paths: Sequence[Path], plugins: Sequence[str] = ()) -> Iterator[None]:
    """Prepend ``paths`` to ``sys.path`` for the duration of the block.

    ``plugins`` are the run's plugin specs (``module:Class``): their top-level modules are
    set aside too when an earlier import from elsewhere would answer for them.

    Afterwards the entries added here are removed again (only those, and only if
    they are still present), and modules that were imported from ``paths`` during
    the block are dropped from ``sys.modules`` (modules imported before the block
    are left alone, so the installed gitops-render itself is never touched).
    """
    dirs = [Path(p).resolve() for p in paths]
    added = [str(d) for d in dirs]
    # A same-named module imported earlier from elsewhere (another repo's plugin.py in
    # the same process) would shadow this repo's: set it aside for the block.
    wanted = set(_local_module_names(dirs)) | {re.split(r"[:.]", spec, maxsplit=1)[0] for spec in plugins}
    shadowed = {name: sys.modules.pop(name) for name in sorted(wanted)
                if name in sys.modules and not _is_under(getattr(sys.modules[name], "__file__", None), dirs)
                and not _is_under(getattr(sys.modules[name], "__file__", None), [_PACKAGE_DIR])}
    before = set(sys.modules)
    sys.path[0:0] = added
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.modules.update(shadowed)
        for entry in added:
            try:
                sys.path.remove(entry)
            except ValueError:
                pass
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            if mod is not None and _is_under(getattr(mod, "__file__", None), dirs):
                del sys.modules[name]


# --------------------------------------------------------------------------- errors


def failing_frame(exc: BaseException, prefer: Sequence[Path] = ()) -> str | None:
    """``file:line`` of the frame that failed, preferring frames under ``prefer``.

    A :class:`SyntaxError` points at its own file and line. Otherwise the deepest
    frame under one of ``prefer`` wins, else the deepest frame outside gitops-render,
    jinja2 and importlib.

    >>> try:
    ...     raise ValueError("x")
    ... except ValueError as e:
    ...     failing_frame(e).split(":")[-1].isdigit()
    True
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}" if exc.lineno else exc.filename
    frames = traceback.extract_tb(exc.__traceback__)
    dirs = [Path(p).resolve() for p in prefer]
    for fr in reversed(frames):
        if dirs and _is_under(fr.filename, dirs):
            return f"{fr.filename}:{fr.lineno}"
    for fr in reversed(frames):
        name = fr.filename
        if name.startswith("<frozen") or _is_under(name, [_PACKAGE_DIR]) or f"{os.sep}jinja2{os.sep}" in name:
            continue
        return f"{name}:{fr.lineno}"
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, SyntaxError):
        text = exc.msg
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def interpreter() -> str:
    """The interpreter that runs gitops-render and therefore every plugin, e.g. ``/usr/bin/python3 (Python 3.11.9)``."""
    return f"{sys.executable or 'python'} (Python {platform.python_version()})"


def install_hint(package: str, prefix: str = sys.prefix) -> str:
    """How to add ``package`` to the environment gitops-render runs in; the detected installer first.

    >>> install_hint("pydantic", "/home/me/.local/share/pipx/venvs/gitops-render").split(";")[0]
    'pipx inject gitops-render pydantic'
    """
    pipx = f"pipx inject gitops-render {package}"
    uv = f"uv tool install gitops-render --with {package}"
    pip = f"{sys.executable or 'python'} -m pip install {package} (the project's own virtualenv)"
    parts = prefix.replace(os.sep, "/")
    if "/pipx/" in parts:
        fixes = [pipx, uv, pip]
    elif "/uv/tools/" in parts:
        fixes = [uv, pipx, pip]
    else:
        fixes = [pip, pipx, uv]
    return "; or ".join(fixes)


#: import names whose PyPI distribution is called differently
_DISTRIBUTIONS = {"yaml": "PyYAML", "PIL": "Pillow", "dateutil": "python-dateutil", "dotenv": "python-dotenv",
                  "jose": "python-jose", "ruamel": "ruamel.yaml", "sklearn": "scikit-learn", "bs4": "beautifulsoup4"}


def _environment_hint(exc: BaseException, plugin: str, local: Sequence[Path]) -> str | None:
    """What to do when the plugin needs something gitops-render's interpreter does not have."""
    if isinstance(exc, SyntaxError) and not isinstance(exc, IndentationError):
        return (f"plugins run in gitops-render's interpreter, {interpreter()}; if the plugin needs a newer "
                "Python (e.g. 'type X = ...' needs 3.12), reinstall gitops-render with it: "
                "pipx install --python python3.12 gitops-render, or uv tool install --python 3.12 gitops-render")
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        own = plugin.partition(":")[0] if ":" in plugin else plugin.rpartition(".")[0]
        if top == own.split(".")[0] or top in _local_module_names(local):
            return None  # the plugin itself, or a module of the repository: 'plugins' / 'import_paths' are wrong
        package = _DISTRIBUTIONS.get(top, top)
        return (f"the plugin imports {top!r}, which is not installed in gitops-render's environment "
                f"({interpreter()}); add it: {install_hint(package)}")
    return None


def _plugin_error(name: str, what: str, exc: BaseException, prefer: Sequence[Path],
                  hint: str | None = None) -> PluginError:
    where = failing_frame(exc, prefer)
    at = f" (at {where})" if where else ""
    hint = _environment_hint(exc, name, prefer) or hint
    return PluginError(f"plugin {name!r}: {what}: {_describe(exc)}{at}", hint=hint)


# --------------------------------------------------------------------------- loading


def _import_class(name: str, prefer: Sequence[Path]) -> type:
    for attempt in range(2):
        try:
            return import_string(name)  # type: ignore[no-any-return]
        except ImportError as exc:
            missing = exc.name or ""
            if attempt == 0 and missing.split(".")[0] == "makejinja":
                install_makejinja_shim()  # the real makejinja is absent or broken
                continue
            raise _plugin_error(name, "cannot be imported", exc, prefer,
                                hint="check 'plugins' (module:Class) and 'import_paths' "
                                     f"(searched first: {', '.join(str(p) for p in prefer) or 'none'})") from None
        except AttributeError as exc:
            raise _plugin_error(name, "class not found in its module", exc, prefer,
                                hint="check the class name after ':' in 'plugins'") from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # error while executing the plugin module (SystemExit included)
            raise _plugin_error(name, "its module failed while being imported", exc, prefer) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _ctor_kwargs(cls: type, env: Environment, data: MutableMapping[str, Any], config: Settings,
                 name: str) -> dict[str, Any]:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError) as exc:
        raise PluginError(f"plugin {name!r}: cannot inspect its constructor: {exc}") from None
    offered = {"env": env, "environment": env, "data": data, "config": config}
    return {key: offered[key] for key in _CTOR_PARAMS if params.get(key)}


def _register(env: Environment, hook: str, result: Any) -> None:
    """Apply one hook's result to ``env`` the way makejinja does (extensions: registered)."""
    if hook in ("globals", "functions"):
        env.globals.update({f.__name__: f for f in result})
    elif hook == "data":
        env.globals.update(result)
    elif hook == "extensions":
        env.extensions.update(load_extensions(env, result))
    elif hook == "filters":
        env.filters.update({f.__name__: f for f in result})
    elif hook == "tests":
        env.tests.update({f.__name__: f for f in result})
    elif hook == "policies":
        env.policies.update(result)


def load_plugin(name: str, env: Environment, data: MutableMapping[str, Any], config: Settings,
                *, prefer: Sequence[Path] = ()) -> object:
    """Import, construct and apply one plugin to ``env``; returns the plugin object.

    ``prefer`` (usually ``config.import_paths``) only steers which traceback frame
    an error message points at; put the paths on ``sys.path`` with
    :func:`plugin_import_paths` first.
    """
    cls = _import_class(name, prefer)
    kwargs = _ctor_kwargs(cls, env, data, config, name)
    try:
        plugin = cls(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise _plugin_error(name, "constructor failed", exc, prefer,
                            hint="plugins receive only the keyword arguments env, environment, data and "
                                 "config (chosen by parameter name)" if isinstance(exc, TypeError) else None
                            ) from None
    for hook in _HOOK_ORDER:
        if not hasattr(plugin, hook):
            continue
        try:
            result = getattr(plugin, hook)()
            _register(env, hook, result)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            raise _plugin_error(name, f"{hook}() failed", exc, prefer) from None
    return plugin


def load_plugins(settings: Settings, env: Environment, data: MutableMapping[str, Any]) -> LoadedPlugins:
    """Load ``settings.plugins`` then ``settings.loaders`` into ``env`` and collect path filters.

    Call inside :func:`plugin_import_paths` (``settings.import_paths``) so the
    plugin modules can be imported (and can import their siblings while rendering).
    """
    names = settings.all_plugins
    if not names:
        return LoadedPlugins((), ())
    ensure_makejinja_importable()
    plugins = [load_plugin(n, env, data, settings, prefer=settings.import_paths) for n in names]
    filters: list[PathFilter] = []
    for n, plugin in zip(names, plugins, strict=True):
        if hasattr(plugin, "path_filters"):
            try:
                filters.extend(plugin.path_filters())
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                raise _plugin_error(n, "path_filters() failed", exc, settings.import_paths) from None
    return LoadedPlugins(tuple(plugins), tuple(filters))

