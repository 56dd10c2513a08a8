"""The settings declaration: every table of ``gitops-render.toml`` / ``makejinja.toml``, once.

Each table is a frozen dataclass; each key is a field declared with :func:`option`,
which carries the default, the help text and (when it differs) the default in
``gitops-render.toml``. The field's type annotation is the key's type: the
converters (:mod:`.convert`), the unknown-key check with its did-you-mean, the
``MAKEJINJA_*`` environment names and ``docs/configuration.md`` (:mod:`.docs`) are all
derived from it. Adding a key to a table is one line here, for example::

    missing_schemas: str = option("note", "what a kind without a schema is", choices=("note", "finding"))

Fields without :func:`option` metadata (``root``, ``compat`` …) are computed by the
loader and cannot be set in a file.

>>> [f.name for f in declared_fields(SecretsTable)]
['age_key_file', 'sops_config', 'parallelism']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from gitops_render.settings.runtime import RuntimeEnv

__all__ = [
    "CLUSTER_TEMPLATE_DELIMITERS",
    "GITOPS_ONLY",
    "UNDEFINED_MODES",
    "ClusterTable",
    "Compat",
    "Delimiters",
    "Internal",
    "Option",
    "Prefix",
    "SecretsTable",
    "Settings",
    "ValidateTable",
    "Whitespace",
    "declared_fields",
    "option",
    "option_of",
]

OPTION = "gitops_render.option"
UNDEFINED_MODES = ("default", "chainable", "debug", "strict")
Compat = Literal["gitops-render", "makejinja"]

_UNSET: Any = object()
REQUIRED: Any = dataclasses.MISSING
"""The default of a key that the loader must always set (``output``)."""


@dataclass(frozen=True)
class Option:
    """What the declaration says about one key besides its type and default.

    ``gitops_only`` keys are not makejinja's (refused in ``makejinja.toml``);
    ``render = False`` marks gitops-render keys that do not change how templates are
    rendered: a ``gitops-render.toml`` holding only those leaves rendering to
    ``makejinja.toml``. ``choices``, ``pattern`` (a full match, ``pattern_example``
    shown in the error) and ``positive`` are checked by the converter.
    """

    help: str
    gitops_default: Any = _UNSET
    gitops_only: bool = False
    render: bool = True
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    pattern_example: str = ""
    positive: bool = False
    scalars_as_strings: bool = False  # makejinja/cattrs: TOML `x = 1` becomes "1"
    doc_default: str | None = None  # shown in the docs instead of the default's repr

    @property
    def has_gitops_default(self) -> bool:
        return self.gitops_default is not _UNSET


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field declaring one settings key (see :class:`Option`)."""
    meta = {OPTION: Option(help, **kwargs)}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def option_of(f: dataclasses.Field[Any]) -> Option | None:
    """The :class:`Option` of a field (``None`` for computed fields)."""
    opt = f.metadata.get(OPTION)
    return opt if isinstance(opt, Option) else None


def declared_fields(cls: type) -> Iterator[dataclasses.Field[Any]]:
    """The settable fields of a settings table, in declaration order."""
    return (f for f in dataclasses.fields(cls) if option_of(f) is not None)


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


# --------------------------------------------------------------------------- makejinja's tables


@dataclass(frozen=True)
class Delimiters:
    """Jinja delimiters (makejinja's ``[makejinja.delimiter]`` table)."""

    block_start: str = option("{%", "start of a statement block")
    block_end: str = option("%}", "end of a statement block")
    variable_start: str = option("{{", "start of an expression")
    variable_end: str = option("}}", "end of an expression")
    comment_start: str = option("{#", "start of a comment")
    comment_end: str = option("#}", "end of a comment")


#: the delimiters of the cluster-template family, gitops-render's default
CLUSTER_TEMPLATE_DELIMITERS = Delimiters("#%", "%#", "#{", "}#", "#|", "#|")


@dataclass(frozen=True)
class Prefix:
    """Jinja line statement / line comment prefixes (``None`` = off)."""

    line_statement: str | None = option(None, "prefix that makes a whole line a statement")
    line_comment: str | None = option(None, "prefix that makes the rest of a line a comment")


@dataclass(frozen=True)
class Whitespace:
    """Jinja whitespace control, with makejinja's defaults (all ``True``)."""

    trim_blocks: bool = option(True, "remove the first newline after a block")
    lstrip_blocks: bool = option(True, "strip spaces and tabs before a block on its line")
    keep_trailing_newline: bool = option(True, "keep the final newline of a template")
    newline_sequence: str = option("\n", "line ending of rendered text", choices=("\n", "\r\n", "\r"),
                                   doc_default='"\\n"')


@dataclass(frozen=True)
class Internal:
    """Rarely changed Jinja environment switches (makejinja's hidden options).

    ``cache_size`` only affects speed: the renderer treats ``0`` (makejinja's
    default, "recompile every time") as unbounded, because templates cannot change
    during one run.
    """

    optimized: bool = option(True, "let Jinja optimise compiled templates")
    autoescape: bool = option(False, "HTML-escape expressions (wrong for YAML; makejinja's switch)")
    cache_size: int = option(0, "Jinja template cache size (0 = unbounded here)")
    auto_reload: bool = option(False, "check templates for changes (irrelevant within one run)")
    enable_async: bool = option(False, "Jinja async mode")


# --------------------------------------------------------------------------- gitops-render's tables

_NS_NAME = r"[^/\s]+/[^/\s]+"
_NS_KIND_NAME = r"[^/\s]+/[^/\s]+/[^/\s]+"


@dataclass(frozen=True)
class SecretsTable:
    """``[gitops-render.secrets]``: the age key and sops."""

    age_key_file: str = option("age.key", "the age identity file, relative to the repository root "
                                          "(`SOPS_AGE_KEY_FILE` wins); classic X25519 keys")
    sops_config: str = option(".sops.yaml", "the sops config, relative to the repository root; when the "
                                            "templates render it, the rendered one is used in the same run")
    parallelism: int | None = option(None, "concurrent sops processes", positive=True,
                                     doc_default="min(8, 2 * cores)")


@dataclass(frozen=True)
class ValidateTable:
    """``[gitops-render.validate]``: what validation checks and against what."""

    roots: tuple[str, ...] = option(("kubernetes",), "output directories to validate")
    kubernetes_version: str = option("1.35.0", "Kubernetes version passed to kubeconform",
                                     pattern=r"v?\d+\.\d+\.\d+|master", pattern_example="1.35.0")
    schema_locations: tuple[str, ...] = option(
        ("default",), "kubeconform `-schema-location`s in order; `--schema-location` or "
                      "`GITOPS_RENDER_SCHEMA_LOCATION` replace them")
    helm_schemas: Mapping[str, str] = option(
        {}, '`"chart@version" = "folder"` (relative to the repository root) holding the chart\'s '
            "`values.schema.json`; HelmRelease values are checked against it",
        pattern=r"[^@\s]+@[^@\s]+", pattern_example="app-template@4.5.0")
    timeout: float | None = option(None, "seconds before a validation tool is stopped", positive=True,
                                   doc_default="the tool's default")
    helm_charts: Mapping[str, str] = option(
        {}, '`"chart@version" = "folder or .tgz"` (relative to the repository root): the chart that validation '
            "renders with `helm template` for a HelmRelease; a path that does not exist is a note",
        pattern=r"[^@\s]+@[^@\s]+", pattern_example="app-template@4.5.0")
    chart_cache: str = option(".gitops-render/cache/charts",
                              "folder of charts not listed in `helm_charts`, as `<chart>-<version>.tgz` (what "
                              "`helm pull -d` writes) or `<chart>-<version>/`")
    helm_api_versions: tuple[str, ...] = option(
        tuple(f"gateway.networking.k8s.io/{v}" for v in ("v1", "v1/GatewayClass", "v1/Gateway", "v1/HTTPRoute",
                                                          "v1/GRPCRoute", "v1beta1", "v1beta1/ReferenceGrant")),
        "API versions `helm template` is told the cluster serves besides those the tree uses (the Gateway API: "
        "a chart's routes render as `v1`, not as the `v1alpha2` fallback no schema location has)")
    stale_values_schema: str = option(
        "finding", 'a HelmRelease whose chart has a values schema only for other versions (a version bump): '
                   '`"finding"`, or `"note"` (values not checked)', choices=("finding", "note"))
    missing_schemas: str | None = option(
        None, 'a kind without a schema in the schema locations: `"finding"`, or `"note"` (one counted note, '
              "as kubeconform `-ignore-missing-schemas`)", choices=("finding", "note"),
        doc_default='`"note"` in a makejinja repository, `"finding"` in a gitops-render one')


@dataclass(frozen=True)
class ClusterTable:
    """``[gitops-render.cluster]``: objects that exist in the cluster but are not rendered here."""

    provided_kustomizations: tuple[str, ...] = option(
        (), "Flux Kustomizations (`namespace/name`) that exist in the cluster but are not rendered here",
        pattern=_NS_NAME, pattern_example="namespace/name")
    provided_sources: tuple[str, ...] = option(
        (), "Flux sources (`namespace/Kind/name`) provided by the cluster",
        pattern=_NS_KIND_NAME, pattern_example="namespace/Kind/name")
    provided_substitutions: tuple[str, ...] = option(
        (), "substitution Secrets/ConfigMaps (`namespace/Kind/name`) provided by the cluster",
        pattern=_NS_KIND_NAME, pattern_example="namespace/Kind/name")
    provided_variables: Mapping[str, tuple[str, ...]] = option(
        {}, '`"namespace/Kind/name" = ["VAR", …]`: the keys a provided substitution source holds',
        pattern=_NS_KIND_NAME, pattern_example="namespace/Kind/name")
    bootstrap_sources: tuple[str, ...] = option(
        ("flux-system/GitRepository/flux-system", "flux-system/OCIRepository/flux-system"),
        "the Flux sources bootstrap creates in the cluster (`namespace/Kind/name`); `[]`: the tree defines them",
        pattern=_NS_KIND_NAME, pattern_example="namespace/Kind/name")


# --------------------------------------------------------------------------- the top-level table

_R = "render"  # doc group of makejinja's keys


@dataclass(frozen=True)
class Settings:
    """Everything one run needs; every path is absolute.

    Field names and meaning are makejinja's ``Config`` (plugins receive this object
    as ``config``), plus gitops-render's own keys and the computed ``root``,
    ``config_file``, ``compat``, ``runtime`` (the environment, read once),
    ``age_key_file`` and ``sops_config_file`` (resolved, see
    :func:`gitops_render.settings.runtime.resolve_key_file`).
    """

    root: Path
    output: Path = option(REQUIRED, "where outputs go (`kubernetes/`, `.sops.yaml` … below it); never `.git`",
                          doc_default="repo root / required")
    inputs: tuple[Path, ...] = option((), "template directories and files, in order: the first input "
                                          "providing an output path wins (overlay)")
    include_patterns: tuple[str, ...] = option(("**/*",), "glob patterns of input paths to consider")
    exclude_patterns: tuple[str, ...] = option((), "`Path.match` patterns; an excluded directory excludes "
                                                   "its contents, `**` works")
    jinja_suffix: str | None = option(".jinja", "files with this (last) suffix are templates; others are "
                                                "copied verbatim", gitops_default=".j2")
    keep_jinja_suffix: bool = option(False, "keep the suffix on output names")
    keep_empty: bool = option(False, "write templates that render to whitespace only (otherwise skipped, "
                                     "and pruned if generated before)")
    copy_metadata: bool = option(False, "give rendered files the template's permission bits")
    data: tuple[Path, ...] = option((), "data files (YAML, TOML, JSON) or directories, merged shallowly in order")
    data_vars: Mapping[str, str] = option({}, "`KEY = \"VALUE\"` strings applied after the files; dotted keys "
                                              "nest", scalars_as_strings=True)
    file_data: Mapping[str, tuple[Path, ...]] = option({}, "data for one template only "
                                                           '(`"path/of/template.j2" = ["a.yaml"]`)')
    plugins: tuple[str, ...] = option((), "`module:Class` plugins (makejinja API)")
    loaders: tuple[str, ...] = option((), "deprecated alias of `plugins`, loaded after them")
    import_paths: tuple[Path, ...] = option((), "directories put on `sys.path` (first, not last) while "
                                                "plugins are imported", doc_default='["."]')
    extensions: tuple[str, ...] = option((), "Jinja extensions (`jinja2.ext.do` …); a plugin's "
                                             "`extensions()` are registered too")
    undefined: str = option("default", "what an undefined name does", choices=UNDEFINED_MODES,
                            gitops_default="strict")
    exec_pre: tuple[str, ...] = option((), "shell commands run before loading data")
    exec_post: tuple[str, ...] = option((), "shell commands run after writing")
    clean: bool = option(False, "accepted; gitops-render prunes what it generated instead of wiping the output")
    force: bool = option(False, "re-render outputs that exist (without it existing outputs are left alone, "
                                "as makejinja does)", gitops_default=True)
    quiet: bool = option(False, "accepted (makejinja's log switch)")
    delimiter: Delimiters = option(Delimiters(), "Jinja delimiters", gitops_default=CLUSTER_TEMPLATE_DELIMITERS,
                                   doc_default="`#% %#`, `#{ }#`, `#| #|` / Jinja's")
    prefix: Prefix = option(Prefix(), "line statement / line comment prefixes")
    whitespace: Whitespace = option(Whitespace(), "Jinja whitespace control")
    internal: Internal = option(Internal(), "rarely changed Jinja switches")
    # gitops-render's own keys
    schema: Path | Mapping[Path, Path] | None = option(
        None, "JSON Schema (2020-12) of the merged data, or a table `\"data file\" = \"schema file\"` "
              "(one schema per data file): validated before rendering, defaults applied, `x-sensitive` "
              "fields masked and leak-guarded, `x-generate` fields filled by `init`",
        gitops_only=True, render=False)
    exec_timeout: float = option(600.0, "seconds an `exec_pre`/`exec_post` command may run", positive=True,
                                 gitops_only=True, render=False)
    template_timeout: float = option(60.0, "seconds one template may take to render (an endless loop stops "
                                           "with exit 2 instead of hanging)", positive=True,
                                     gitops_only=True, render=False)
    secrets: SecretsTable = option(SecretsTable(), "the age key and sops", gitops_only=True, render=False)
    validate: ValidateTable = option(ValidateTable(), "validation", gitops_only=True, render=False)
    cluster: ClusterTable = option(ClusterTable(), "objects provided by the cluster", gitops_only=True,
                                   render=False)
    # computed by the loader
    config_file: Path | None = None
    compat: Compat = "gitops-render"
    runtime: RuntimeEnv = field(default_factory=RuntimeEnv)
    age_key_file: Path | None = None
    sops_config_file: Path | None = None

    @property
    def all_plugins(self) -> tuple[str, ...]:
        """``plugins`` then the deprecated ``loaders``, in makejinja's order."""
        return self.plugins + self.loaders

    @property
    def delimiters(self) -> Delimiters:
        """Alias of :attr:`delimiter`."""
        return self.delimiter

    @property
    def schema_files(self) -> tuple[Path, ...]:
        """Every schema file the settings name (one, or one per data file)."""
        if self.schema is None:
            return ()
        return tuple(self.schema.values()) if isinstance(self.schema, Mapping) else (self.schema,)

    def schema_for(self, data_file: Path) -> Path | None:
        """The schema that validates ``data_file`` (the merged-data schema when there is one)."""
        if isinstance(self.schema, Mapping):
            return self.schema.get(data_file.resolve())
        return self.schema


#: the keys of the top-level table that are gitops-render's own
GITOPS_ONLY = frozenset(f.name for f in declared_fields(Settings) if (o := option_of(f)) and o.gitops_only)
