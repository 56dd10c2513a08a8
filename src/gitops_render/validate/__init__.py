"""Validate a rendered GitOps tree: the entry point, the report types and YAML hygiene.

:func:`validate_tree` parses every YAML file under the configured roots once and
runs five checks over the result, returning every problem at once as
:class:`Finding` objects:

``yaml``         every file parses, no duplicate keys, no unrendered template delimiters
``schema``       every Kubernetes document against its JSON schema (kubeconform, see
                 :mod:`gitops_render.kubeconform`), Secrets included
``kustomize``    every kustomization builds (:mod:`gitops_render.kustomize`)
``orphan``       every manifest next to a kustomization is listed by one
``flux``         the Flux object graph is consistent (:mod:`~gitops_render.validate.flux_checks`)
``helm-values``  HelmRelease values against the chart's values schema
                 (:mod:`gitops_render.validate.helmvalues`)
``sops``         every ``*.sops.*`` file is encrypted: sops metadata, and every value
                 under the keys its creation rule encrypts is ``ENC[...]``
                 (:mod:`gitops_render.validate.hygiene`)
``chart``        every HelmRelease whose chart is available offline renders with ``helm template``
                 (:mod:`gitops_render.validate.charts`); its output is schema-checked too
``refs``         what the charts render and the tree refer to each other consistently: Services
                 and ports, Secret/ConfigMap keys, selectors (:mod:`gitops_render.validate.crossref`)

Objects are schema-checked as Flux applies them: with the ``${VAR}`` values of their
Kustomization's ``postBuild`` substituted. Plaintext of ``*.sops.*`` files is only ever
held in memory: it is passed to kubeconform on stdin, never written to disk, and no
message holds a secret value.

>>> f = Finding("flux", "kubernetes/apps/demo/app/ks.yaml", "Kustomization demo/app", "spec.path does not exist")
>>> str(f)
'kubernetes/apps/demo/app/ks.yaml: [flux] Kustomization demo/app: spec.path does not exist'
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from gitops_render.core.errors import (
    ToolError,
    ToolFailedError,
)
from gitops_render.core.runner import ToolRunner
from gitops_render.validate import charts, crossref, flux_checks, flux_tree, helmvalues, kubeconform, kustomize
from gitops_render.validate.hygiene import (
    collect_plaintexts,
    encryption_findings,
    hygiene_findings,
)
from gitops_render.validate.model import (
    CHECKS,
    CheckResult,
    Finding,
    ResourceKey,
    UnitResultCache,
    ValidateSettings,
    ValidationReport,
)
from gitops_render.validate.yamltree import (
    YamlDocument,
    YamlFile,
    is_kustomize_config,
    load_tree,
    parse_yaml,
)

__all__ = [
    "CHECKS",
    "CheckResult",
    "Finding",
    "ResourceKey",
    "UnitResultCache",
    "ValidateSettings",
    "ValidationReport",
    "YamlDocument",
    "YamlFile",
    "hygiene_findings",
    "is_kustomize_config",
    "load_tree",
    "parse_yaml",
    "preflight_tools",
    "validate_tree",
]



# --------------------------------------------------------------------------- entry point


_VERSION_ARGS = {"kubeconform": ["-v"], "kustomize": ["version"]}


def preflight_tools(runner: ToolRunner) -> None:
    """Before ``configure`` writes anything: the validation tools exist, run, and answer like themselves.

    A missing, crashing, hanging (bounded by the runner's timeout) or garbage-printing kubeconform
    or kustomize is reported here, with the tool's name and the fix, instead of after the tree
    was written.
    """
    for tool, args in _VERSION_ARGS.items():
        try:
            res = runner.run(tool, args, check=False)
        except ToolError as exc:
            raise type(exc)(tool, f"{exc.message.removeprefix(tool + ': ')} (checked before writing; "
                                  f"nothing was written)", hint=exc.hint) from None
        text = (res.stdout or "") + (res.stderr or "")
        first = text.strip().splitlines()[0][:80] if text.strip() else "nothing"
        if res.returncode != 0:
            raise ToolFailedError(tool, f"`{tool} {' '.join(args)}` exited {res.returncode} ({first}); "
                                        f"nothing was written",
                                  returncode=res.returncode, stderr=res.stderr,
                                  hint=f"reinstall {tool} with scripts/install-tools.sh, "
                                       f"or point GITOPS_RENDER_{tool.upper()} at a working {tool}")
        if not text.strip() or not all(c.isprintable() or c in "\n\r\t" for c in text):
            raise ToolFailedError(tool, f"`{tool} {' '.join(args)}` printed binary garbage instead of its version; "
                                        f"nothing was written",
                                  hint=f"reinstall {tool} with scripts/install-tools.sh, "
                                       f"or point GITOPS_RENDER_{tool.upper()} at a working {tool}")


def validate_tree(
    output_root: Path,
    settings: ValidateSettings,
    *,
    runner: ToolRunner,
    plaintexts: Mapping[PurePosixPath, bytes] | None = None,
    decrypt: Callable[[Path], bytes] | None = None,
    unit_cache: UnitResultCache | None = None,
) -> ValidationReport:
    """Validate the rendered tree under ``output_root`` and report every finding.

    ``plaintexts`` maps paths of ``*.sops.*`` files, relative to ``output_root``, to
    their decrypted content; files not in it are decrypted with ``decrypt`` (which
    raises a :class:`~gitops_render.errors.GitopsRenderError` when it cannot); when
    neither works their Secrets are schema-checked with the encrypted values and
    the ``sops:`` metadata removed, and a note says so.

    Raises :class:`~gitops_render.errors.ToolError` when kubeconform or kustomize
    cannot run at all; problems in the tree are findings, not exceptions.

    ``unit_cache`` (:class:`gitops_render.validate.cache.UnitCache`) lets unchanged
    kustomizations and documents reuse their earlier kustomize/kubeconform results; the
    in-process checks (YAML, Flux graph, Helm values, orphans) always run.
    """

    output_root = Path(output_root)
    files = load_tree(output_root, settings.roots)
    notes: list[str] = [f"{root}/ does not exist under {output_root}: nothing there was validated"
                        for root in settings.roots if not (output_root / root).exists()]
    secrets = collect_plaintexts(output_root, files, plaintexts, decrypt, settings.kustomize_parallelism)
    findings = hygiene_findings(files, settings.template_delimiters,
                                {k: v.text for k, v in secrets.plaintexts.items()})
    for rel, parsed in secrets.plaintexts.items():
        for problem in parsed.problems:  # line numbers and key names only: never a value
            text = problem.split(": not valid YAML")[0] + ": not valid YAML" if "not valid YAML" in problem else problem
            findings.append(Finding("yaml", str(rel), None, f"{text} (in the decrypted content)"))
    findings.extend(encryption_findings(files))

    kustomizations = kustomize.load_kustomizations(files, output_root)
    tree = flux_tree.build_tree(files, kustomizations, output_root)
    findings.extend(kustomize.resource_findings(files, kustomizations))
    findings.extend(kustomize.orphan_findings(files, kustomizations, tree.flux_paths, tree.reached_dirs))
    result = CheckResult(tuple(findings), tuple(notes))
    result += flux_checks.check_graph(tree, settings)
    result += helmvalues.check_helm_values(tree, settings)

    variables = flux_checks.kustomization_variables(tree, settings, secrets.plaintexts)
    collected = kubeconform.collect_documents(files, secrets.plaintexts, tree, variables)
    if secrets.missing:
        result += CheckResult(notes=(
            f"{collected.encrypted} Secret document(s) in {len(secrets.missing)} *.sops.* file(s) were "
            f"schema-checked with their encrypted values (sops metadata removed): {secrets.reason}",))
    result += collected.result
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        build_future = pool.submit(kustomize.build_findings, kustomizations, settings,
                                   runner=runner, output_root=output_root, cache=unit_cache)
        rendering = charts.render_charts(tree, files, secrets.plaintexts, variables, settings, runner=runner)
        result += rendering.result
        result += crossref.check_references(rendering, tree, files, secrets.plaintexts, variables)
        schema_future = pool.submit(kubeconform.validate_documents, [*collected.documents, *rendering.documents],
                                    settings, runner=runner, cwd=output_root, cache=unit_cache)
        result += schema_future.result()
        result += CheckResult(tuple(build_future.result()))

    unique = sorted(set(result.findings), key=lambda f: (f.file, CHECKS.index(f.check) if f.check in CHECKS else 99,
                                                          f.document or "", f.message))
    return ValidationReport(tuple(unique), tuple(dict.fromkeys(result.notes)))
