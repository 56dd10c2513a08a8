"""validate_tree on a small cluster-template-style tree, clean and broken one way at a time.

Every test runs the real kubeconform (offline schema mirror), kustomize and sops.
The fixture tree (tests/fixtures/validate/valid) holds plaintext *.sops-plaintext.yaml
files; the session fixture encrypts them once with a fresh age key, and each
test works on its own copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from conftest import PROJECT, make_age_key

from gitops_render.core.errors import ConfigError, GitopsRenderError
from gitops_render.core.runner import ToolResult, ToolRunner
from gitops_render.settings.config import load_settings
from gitops_render.validate import validate_tree
from gitops_render.validate.model import Finding, ResourceKey, ValidateSettings, ValidationReport

FIXTURE = Path(__file__).parent / "fixtures" / "validate" / "valid"
CHART_SCHEMAS = PROJECT / "schemas" / "charts" / "app-template-4.5.0"
APP = "kubernetes/apps/demo/podinfo/app"
KS = "kubernetes/apps/demo/podinfo/ks.yaml"
CLUSTER_KS = "kubernetes/flux/cluster/ks.yaml"
SECRET = f"{APP}/secret.sops.yaml"
SECRET_VALUE = "s3cr3t-t0ken-value"


@dataclass
class Tree:
    """A copy of the fixture tree with encrypted secrets, and how to decrypt them."""

    root: Path
    key_file: Path
    recipient: str
    runner: ToolRunner
    plaintexts: dict[PurePosixPath, bytes] = field(default_factory=dict)

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.root / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))

    def write(self, rel: str, text: str) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_text(text)

    def write_secret(self, rel: str, plaintext: str) -> None:
        """Replace a *.sops.yaml file with the encryption of ``plaintext`` (real sops)."""
        self.write(rel, plaintext)
        encrypt(self.runner, self.root / rel, self.recipient)
        self.plaintexts[PurePosixPath(rel)] = plaintext.encode()

    def decrypt(self, path: Path) -> bytes:
        result = self.runner.run("sops", ["decrypt", str(path)], env={"SOPS_AGE_KEY_FILE": str(self.key_file)},
                                 text=False)
        assert isinstance(result.stdout, bytes)
        return result.stdout


def encrypt(runner: ToolRunner, path: Path, recipient: str) -> None:
    runner.run("sops", ["encrypt", "--age", recipient, "--encrypted-regex", "^(data|stringData)$",
                        "--in-place", str(path)])


@pytest.fixture(scope="session")
def encrypted_fixture(tmp_path_factory: pytest.TempPathFactory, runner: ToolRunner
                      ) -> tuple[Path, Path, str, dict[PurePosixPath, bytes]]:
    base = tmp_path_factory.mktemp("validate-fixture")
    key_file = base / "age.key"
    recipient = make_age_key(key_file, runner)
    root = base / "repo"
    shutil.copytree(FIXTURE, root)
    plaintexts: dict[PurePosixPath, bytes] = {}
    # committed as *.sops-plaintext.yaml so that no plaintext *.sops.* file is ever tracked
    for source in sorted(root.rglob("*.sops-plaintext.yaml")):
        path = source.with_name(source.name.replace(".sops-plaintext.yaml", ".sops.yaml"))
        source.rename(path)
        plaintexts[PurePosixPath(path.relative_to(root).as_posix())] = path.read_bytes()
        encrypt(runner, path, recipient)
        assert b"ENC[AES256_GCM" in path.read_bytes()
    return root, key_file, recipient, plaintexts


@pytest.fixture
def tree(encrypted_fixture: tuple[Path, Path, str, dict[PurePosixPath, bytes]], tmp_path: Path,
         runner: ToolRunner) -> Tree:
    source, key_file, recipient, plaintexts = encrypted_fixture
    shutil.copytree(source, tmp_path / "repo")
    return Tree(tmp_path / "repo", key_file, recipient, runner, dict(plaintexts))


@pytest.fixture
def settings(offline_schema_locations: tuple[str, ...], shared_dir: Path) -> ValidateSettings:
    return ValidateSettings(
        schema_locations=tuple(offline_schema_locations),
        helm_schemas={"app-template@4.5.0": CHART_SCHEMAS},
        helm_charts={"app-template@4.5.0": shared_dir / "charts" / "app-template-4.5.0" / "chart"},
        provided_sources=frozenset({"flux-system/GitRepository/flux-system"}),
    )


def run(tree: Tree, settings: ValidateSettings, **kwargs: Any) -> ValidationReport:
    kwargs.setdefault("plaintexts", tree.plaintexts)
    return validate_tree(tree.root, settings, runner=tree.runner, **kwargs)


def only(report: ValidationReport, check: str, file: str, fragment: str, document: str | None = "any") -> Finding:
    """The one finding of ``check`` on ``file`` whose message holds ``fragment``."""
    hits = [f for f in report.findings if f.check == check and f.file == file and fragment in f.message
            and (document == "any" or f.document == document)]
    assert len(hits) == 1, "expected one finding, got:\n" + "\n".join(map(str, report.findings))
    return hits[0]


# --------------------------------------------------------------------------- clean tree


def test_valid_tree_is_clean(tree: Tree, settings: ValidateSettings) -> None:
    report = run(tree, settings)
    assert report.ok, "\n".join(map(str, report.findings))
    assert report.notes == ()


def test_valid_tree_is_clean_with_decrypt_callback(tree: Tree, settings: ValidateSettings) -> None:
    report = run(tree, settings, plaintexts=None, decrypt=tree.decrypt)
    assert report.ok, "\n".join(map(str, report.findings))
    assert report.notes == ()


def test_without_plaintext_secrets_are_checked_encrypted_and_noted(tree: Tree, settings: ValidateSettings) -> None:
    report = run(tree, settings, plaintexts=None)
    assert report.ok, "\n".join(map(str, report.findings))
    assert len(report.notes) == 2
    assert "2 Secret document(s) in 2 *.sops.* file(s)" in report.notes[0]
    assert "encrypted values" in report.notes[0]
    # the variables cluster-secrets holds cannot be substituted without its plaintext: said, not guessed
    assert "${SECRET_DOMAIN}" in report.notes[1] and "not known here" in report.notes[1]


def test_failing_decrypt_falls_back_to_ciphertext(tree: Tree, settings: ValidateSettings) -> None:
    def no_key(path: Path) -> bytes:
        return tree.runner.run("sops", ["decrypt", str(path)], text=False).stdout  # type: ignore[return-value]

    report = run(tree, settings, plaintexts=None, decrypt=no_key)
    assert report.ok, "\n".join(map(str, report.findings))
    assert "decryption failed (sops:" in report.notes[0]


@dataclass
class CountingRunner(ToolRunner):
    """The real ToolRunner, counting the processes it starts per tool."""

    calls: dict[str, int] = field(default_factory=dict)

    def run(self, tool: str, args: Any, **kwargs: Any) -> ToolResult:
        self.calls[tool] = self.calls.get(tool, 0) + 1
        return super().run(tool, args, **kwargs)


def test_few_processes(tree: Tree, settings: ValidateSettings) -> None:
    counting = CountingRunner()
    report = validate_tree(tree.root, settings, runner=counting, plaintexts=tree.plaintexts)
    assert report.ok
    # one kubeconform for every document; kustomize only for the top-level kustomizations
    # (flux/meta, apps/demo, apps/demo/podinfo/app), not for the component they pull in; one helm
    # template for the HelmRelease
    assert counting.calls == {"kubeconform": 1, "kustomize": 3, "helm": 1}


# --------------------------------------------------------------------------- schema


def test_wrong_field_in_helmrelease_spec(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/helmrelease.yaml", "  interval: 1h\n  chartRef:", "  intervall: 1h\n  chartRef:")
    report = run(tree, settings)
    finding = only(report, "schema", f"{APP}/helmrelease.yaml", "'intervall'", "HelmRelease demo/podinfo")
    assert finding.message.startswith("spec: additional properties")


def test_kind_without_schema(tree: Tree, settings: ValidateSettings) -> None:
    tree.write(f"{APP}/widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec: {}\n")
    tree.edit(f"{APP}/kustomization.yaml", "  - ./configmap.yaml\n", "  - ./configmap.yaml\n  - ./widget.yaml\n")
    report = run(tree, settings)
    only(report, "schema", f"{APP}/widget.yaml", "could not find schema for Widget", "Widget demo/w")
    assert len(report.findings) == 1


def test_secret_schema_error_found_from_plaintext(tree: Tree, settings: ValidateSettings) -> None:
    plaintext = (FIXTURE / SECRET.replace(".sops.yaml", ".sops-plaintext.yaml")).read_text().replace(
        f"PODINFO_TOKEN: {SECRET_VALUE}", f"PODINFO_TOKEN: {SECRET_VALUE}\n  PODINFO_PORT: 9898")
    tree.write_secret(SECRET, plaintext)
    assert b"9898" not in (tree.root / SECRET).read_bytes()

    for kwargs in ({}, {"plaintexts": None, "decrypt": tree.decrypt}):
        report = run(tree, settings, **kwargs)
        finding = only(report, "schema", SECRET, "stringData.PODINFO_PORT", "Secret demo/podinfo-secret")
        assert "got number, want null or string" in finding.message
        assert all(SECRET_VALUE not in str(f) for f in report.findings)

    # the ciphertext (ENC[...,type:int] is a string) cannot show it: a note says what was not checked
    report = run(tree, settings, plaintexts=None)
    assert report.ok
    assert "encrypted values" in report.notes[0]


def test_secret_schema_error_visible_even_encrypted(tree: Tree, settings: ValidateSettings) -> None:
    plaintext = (FIXTURE / SECRET.replace(".sops.yaml", ".sops-plaintext.yaml")).read_text().replace("type: Opaque\n", "type: Opaque\nimmutible: true\n")
    tree.write_secret(SECRET, plaintext)
    report = run(tree, settings, plaintexts=None)
    only(report, "schema", SECRET, "additional properties 'immutible' not allowed")


# --------------------------------------------------------------------------- kustomize / orphans


def test_orphaned_manifest(tree: Tree, settings: ValidateSettings) -> None:
    tree.write(f"{APP}/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n")
    report = run(tree, settings)
    finding = only(report, "orphan", f"{APP}/extra.yaml", "not listed in")
    assert f"{APP}/kustomization.yaml" in finding.message
    assert len(report.findings) == 1


def test_unlisted_flux_kustomization_is_orphaned(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit("kubernetes/apps/demo/kustomization.yaml", "  - ./podinfo/ks.yaml\n", "")
    report = run(tree, settings)
    only(report, "orphan", KS, "kubernetes/apps/demo/kustomization.yaml")
    assert len(report.findings) == 1  # the app folder it points at is not reported again


def test_unreached_kustomization_folder(tree: Tree, settings: ValidateSettings) -> None:
    tree.write("kubernetes/apps/demo/old/kustomization.yaml", "resources:\n  - ./cm.yaml\n")
    tree.write("kubernetes/apps/demo/old/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old\n")
    report = run(tree, settings)
    only(report, "orphan", "kubernetes/apps/demo/old/kustomization.yaml", "no Flux Kustomization spec.path")
    assert len(report.findings) == 1


def test_kustomize_build_failure(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/kustomization.yaml", "  - ./configmap.yaml\n", "  - ./configmap.yaml\n  - ./missing.yaml\n")
    report = run(tree, settings)
    finding = only(report, "kustomize", f"{APP}/kustomization.yaml", "kustomize build")
    assert "missing.yaml" in finding.message


def test_non_manifest_in_resources(tree: Tree, settings: ValidateSettings) -> None:
    tree.write(f"{APP}/values.yaml", "replicas: 2\n")
    tree.edit(f"{APP}/kustomization.yaml", "  - ./configmap.yaml\n", "  - ./configmap.yaml\n  - ./values.yaml\n")
    report = run(tree, settings)
    only(report, "yaml", f"{APP}/values.yaml", "no apiVersion/kind")


# --------------------------------------------------------------------------- flux graph


def test_depends_on_missing_kustomization(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(KS, "    - name: cluster-meta\n", "    - name: cluster-metta\n")
    report = run(tree, settings)
    only(report, "flux", KS, "dependsOn flux-system/cluster-metta", "Kustomization demo/podinfo")
    assert len(report.findings) == 1


def test_depends_on_provided_kustomization(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(KS, "    - name: cluster-meta\n", "    - name: infra\n")
    settings = ValidateSettings(**{**settings.__dict__, "provided_kustomizations": frozenset({"flux-system/infra"})})
    assert run(tree, settings).ok


def test_depends_on_cycle(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(CLUSTER_KS, "  path: ./kubernetes/flux/meta\n",
              "  path: ./kubernetes/flux/meta\n  dependsOn:\n    - name: cluster-apps\n")
    report = run(tree, settings)
    finding = only(report, "flux", CLUSTER_KS, "dependsOn cycle")
    assert "flux-system/cluster-apps -> flux-system/cluster-meta -> flux-system/cluster-apps" in finding.message


def test_missing_spec_path(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(KS, "path: ./kubernetes/apps/demo/podinfo/app\n", "path: ./kubernetes/apps/demo/podinfo/ap\n")
    report = run(tree, settings)
    only(report, "flux", KS, "spec.path ./kubernetes/apps/demo/podinfo/ap does not exist", "Kustomization demo/podinfo")


def test_missing_source(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/helmrelease.yaml", "    name: app-template\n", "    name: app-templat\n")
    report = run(tree, settings)
    only(report, "flux", f"{APP}/helmrelease.yaml", "spec.chartRef demo/OCIRepository/app-templat",
         "HelmRelease demo/podinfo")


def test_variable_without_source(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/configmap.yaml", "  PODINFO_LEVEL: info\n", "  PODINFO_LEVEL: ${LOG_LEVEL}\n")
    report = run(tree, settings)
    finding = only(report, "flux", f"{APP}/configmap.yaml", "${LOG_LEVEL} has no value",
                   "ConfigMap demo/podinfo-config")
    assert "Kustomization demo/podinfo" in finding.message
    assert len(report.findings) == 1


def test_substitute_from_missing_source(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(CLUSTER_KS, "              - name: cluster-secrets\n", "              - name: cluster-secret\n")
    report = run(tree, settings)
    only(report, "flux", KS, "postBuild.substituteFrom names Secret demo/cluster-secret", "Kustomization demo/podinfo")


def test_provided_substitution_source(tree: Tree, settings: ValidateSettings) -> None:
    """An external source: any variable passes unless its keys are listed in provided_variables."""
    tree.edit(CLUSTER_KS, "              - name: cluster-secrets\n", "              - name: external-vars\n")
    tree.edit(f"{APP}/configmap.yaml", "  PODINFO_LEVEL: info\n", "  PODINFO_LEVEL: ${LOG_LEVEL}\n")
    base = {**settings.__dict__, "provided_substitutions": frozenset({"demo/Secret/external-vars"})}
    report = run(tree, ValidateSettings(**base))
    assert report.ok, "\n".join(map(str, report.findings))
    assert any("${LOG_LEVEL}" in n and "demo/Secret/external-vars" in n for n in report.notes)

    listed = ValidateSettings(**{**base, "provided_variables": {"demo/Secret/external-vars": frozenset(
        {"SECRET_DOMAIN", "SECRET_ACME_EMAIL"})}})
    only(run(tree, listed), "flux", f"{APP}/configmap.yaml", "${LOG_LEVEL} has no value")


# --------------------------------------------------------------------------- helm values


def test_wrong_key_under_controllers(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/helmrelease.yaml", "        strategy: RollingUpdate\n", "        stratgy: RollingUpdate\n")
    report = run(tree, settings)
    finding = only(report, "helm-values", f"{APP}/helmrelease.yaml", "'stratgy' was unexpected",
                   "HelmRelease demo/podinfo")
    assert finding.message.startswith("spec.values.controllers.podinfo: ")
    assert "app-template@4.5.0" in finding.message


def test_placeholder_values_are_not_type_errors(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/helmrelease.yaml", "            port: 9898\n", "            port: ${PODINFO_PORT:=9898}\n")
    assert run(tree, settings).ok


# --------------------------------------------------------------------------- YAML hygiene


def test_leftover_template_delimiter(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/configmap.yaml", "  PODINFO_LEVEL: info\n", "  PODINFO_LEVEL: \"#{ podinfo.level }#\"\n")
    report = run(tree, settings)
    finding = only(report, "yaml", f"{APP}/configmap.yaml", "unrendered template syntax '#{'")
    assert finding.message.startswith("line 7: ")


def test_leftover_delimiter_in_secret_is_reported_without_content(tree: Tree, settings: ValidateSettings) -> None:
    plaintext = (FIXTURE / SECRET.replace(".sops.yaml", ".sops-plaintext.yaml")).read_text().replace(SECRET_VALUE, "#{ podinfo.token }#")
    tree.write_secret(SECRET, plaintext)
    report = run(tree, settings)
    finding = only(report, "yaml", SECRET, "in the decrypted content")
    assert "podinfo.token" not in finding.message


def test_template_comment_marker_only_when_it_looks_like_one(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/configmap.yaml", "  PODINFO_LEVEL: info\n", "  PODINFO_LEVEL: info  # |level| is free text\n")
    assert run(tree, settings).ok
    tree.edit(f"{APP}/configmap.yaml", "---\n", "---\n#| left-over template comment #|\n")
    only(run(tree, settings), "yaml", f"{APP}/configmap.yaml", "'#|'")


def test_duplicate_key(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/configmap.yaml", "  PODINFO_LEVEL: info\n", "  PODINFO_LEVEL: info\n  PODINFO_LEVEL: debug\n")
    report = run(tree, settings)
    finding = only(report, "yaml", f"{APP}/configmap.yaml", "duplicate key 'PODINFO_LEVEL'")
    assert finding.message.startswith("line 8: ")


def test_unparsable_yaml(tree: Tree, settings: ValidateSettings) -> None:
    tree.edit(f"{APP}/configmap.yaml", "  PODINFO_LEVEL: info\n", "  PODINFO_LEVEL: [info\n")
    report = run(tree, settings)
    only(report, "yaml", f"{APP}/configmap.yaml", "not valid YAML")


# --------------------------------------------------------------------------- settings


def test_settings_from_project_toml() -> None:
    s = ValidateSettings.from_settings(load_settings(PROJECT, environ={}))
    assert s.roots == ("kubernetes",)
    assert s.kubernetes_version == "1.35.0"
    assert s.schema_locations[0] == "default"
    assert s.helm_schemas["app-template@4.5.0"] == PROJECT / "schemas/charts/app-template-4.5.0"
    assert ResourceKey("GitRepository", "flux-system", "flux-system") in s.provided_sources
    assert ResourceKey("Secret", "flux-system", "cluster-secrets") in s.provided_substitutions
    assert set(s.template_delimiters) == {"#{", "}#", "#%", "%#", "#|"}

    env = {"GITOPS_RENDER_SCHEMA_LOCATION": "a/{{ .ResourceKind }}.json; b/x.json"}
    s = ValidateSettings.from_settings(load_settings(PROJECT, environ=env))
    assert s.schema_locations == ("a/{{ .ResourceKind }}.json", "b/x.json")
    s = ValidateSettings.from_settings(load_settings(PROJECT, environ=env), schema_location_override=["c"])
    assert s.schema_locations == ("c",)


@pytest.mark.parametrize("table, fragment", [
    ('[gitops-render.validate]\nroots = "kubernetes"', "validate.roots: expected a list of strings"),
    ('[gitops-render.validate]\nkubernetes_version = "latest"', "kubernetes_version: 'latest' is not of the form"),
    ('[gitops-render.validate.helm_schemas]\n"app-template@4.5.0" = "nowhere"', "values.schema.json"),
    ('[gitops-render.cluster]\nprovided_sources = ["flux-system/flux-system"]', "namespace/Kind/name"),
])
def test_settings_errors(tmp_path: Path, table: str, fragment: str) -> None:
    (tmp_path / "gitops-render.toml").write_text(f"[gitops-render]\n{table}\n")
    with pytest.raises(ConfigError) as err:
        ValidateSettings.from_settings(load_settings(tmp_path, environ={}))
    assert fragment in str(err.value)


def test_vendored_chart_schemas_match_shared_copy(shared_dir: Path) -> None:
    source = shared_dir / "charts" / "app-template-4.5.0"
    theirs = {p.relative_to(source): p.read_bytes() for p in source.rglob("*.json")
              if p.relative_to(source).parts[0] != "chart"}  # chart/ is the whole chart, for helm template
    ours = {p.relative_to(CHART_SCHEMAS): p.read_bytes() for p in CHART_SCHEMAS.rglob("*.json")}
    assert len(ours) == 22
    assert ours == theirs


def test_tool_errors_are_typed(tree: Tree, settings: ValidateSettings) -> None:
    broken = ToolRunner(overrides={"kubeconform": str(tree.root / "no-such-kubeconform")})
    with pytest.raises(GitopsRenderError, match="kubeconform"):
        validate_tree(tree.root, settings, runner=broken)


def test_missing_root_is_noted(tree: Tree, settings: ValidateSettings) -> None:
    settings = ValidateSettings(**{**settings.__dict__, "roots": ("kubernetes", "clusters")})
    report = run(tree, settings)
    assert report.ok
    assert any(n.startswith("clusters/ does not exist") for n in report.notes)


def test_findings_format() -> None:
    finding = Finding("flux", KS, "Kustomization demo/podinfo", "spec.path ./x does not exist")
    assert str(finding) == f"{KS}: [flux] Kustomization demo/podinfo: spec.path ./x does not exist"


# --------------------------------------------------------------------------- how Flux and kustomize really work


HTTPROUTE = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: podinfo
spec:
  hostnames: ["{host}"]
  rules:
    - backendRefs:
        - name: podinfo
          port: 9898
"""


def add_route(tree: Tree, host: str, extra_meta: str = "") -> str:
    rel = f"{APP}/httproute.yaml"
    text = HTTPROUTE.replace("{host}", host)
    if extra_meta:
        text = text.replace("  name: podinfo\n", f"  name: podinfo\n{extra_meta}", 1)
    tree.write(rel, text)
    tree.edit(f"{APP}/kustomization.yaml", "  - ./configmap.yaml\n", "  - ./configmap.yaml\n  - ./httproute.yaml\n")
    return rel


def test_a_component_secret_lands_in_every_namespace_that_includes_it(tree: Tree, settings: ValidateSettings) -> None:
    """cluster-template: components/sops adds cluster-secrets to each namespace whose kustomization includes it."""
    tree.write("kubernetes/apps/other/kustomization.yaml",
               "namespace: other\ncomponents:\n  - ../../components/sops\nresources:\n  - ./namespace.yaml\n"
               "  - ./hello/ks.yaml\n")
    tree.write("kubernetes/apps/other/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n")
    ks = (tree.root / KS).read_text().replace("name: podinfo\n  namespace: demo", "name: hello\n  namespace: other")
    tree.write("kubernetes/apps/other/hello/ks.yaml", ks.replace("apps/demo/podinfo/app", "apps/other/hello/app")
               .replace("targetNamespace: demo", "targetNamespace: other"))
    tree.write("kubernetes/apps/other/hello/app/kustomization.yaml", "resources:\n  - ./configmap.yaml\n")
    tree.write("kubernetes/apps/other/hello/app/configmap.yaml",
               "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  HOST: hello.${SECRET_DOMAIN}\n")
    report = run(tree, settings)
    assert report.ok, "\n".join(map(str, report.findings))

    # and a namespace that does not include the component has no cluster-secrets
    tree.edit("kubernetes/apps/other/kustomization.yaml", "components:\n  - ../../components/sops\n", "")
    only(run(tree, settings), "flux", "kubernetes/apps/other/hello/ks.yaml",
         "postBuild.substituteFrom names Secret other/cluster-secrets")


def _settings_from(root: Path, text: str, *, makejinja: bool = False) -> ValidateSettings:
    """ValidateSettings as configure computes them from a settings file holding ``text``."""
    root.mkdir(parents=True, exist_ok=True)
    if makejinja:
        (root / "makejinja.toml").write_text('[makejinja]\ninputs = ["t"]\noutput = "."\n')
        (root / "t").mkdir(exist_ok=True)
    if text or not makejinja:
        (root / "gitops-render.toml").write_text(f"[gitops-render]\n{text}\n")
    return ValidateSettings.from_settings(load_settings(root, environ={}))


def test_the_bootstrap_source_exists_by_default_and_can_be_switched_off(
        tree: Tree, settings: ValidateSettings, tmp_path: Path) -> None:
    bare = ValidateSettings(**{**settings.__dict__, "provided_sources": frozenset()})
    assert run(tree, bare).ok
    strict = ValidateSettings(**{**bare.__dict__, "bootstrap_sources": frozenset()})
    only(run(tree, strict), "flux", KS, "sourceRef flux-system/GitRepository/flux-system names a source")
    table = _settings_from(tmp_path, "[gitops-render.cluster]\nbootstrap_sources = []")
    assert table.bootstrap_sources == frozenset()
    assert ResourceKey("OCIRepository", "flux-system", "flux-system") in ValidateSettings().known_sources


def test_a_hostname_is_schema_checked_as_flux_substitutes_it(tree: Tree, settings: ValidateSettings) -> None:
    """flux-webhook.${SECRET_DOMAIN} is valid once Flux substitutes cluster-secrets' value, not before."""
    add_route(tree, "podinfo.${SECRET_DOMAIN}")
    assert run(tree, settings).ok, "\n".join(map(str, run(tree, settings).findings))

    tree.edit(f"{APP}/httproute.yaml", "podinfo.${SECRET_DOMAIN}", "podinfo_${SECRET_DOMAIN}")
    report = run(tree, settings)
    finding = only(report, "schema", f"{APP}/httproute.yaml", "spec.hostnames[0]", "HTTPRoute demo/podinfo")
    assert "'podinfo_${SECRET_DOMAIN}' does not match pattern" in finding.message
    assert finding.message.endswith("(after Flux substitution)")
    assert all("example.com" not in str(f) for f in report.findings)  # the Secret's value is never printed
    assert finding.line == 2


def test_defaults_escapes_and_disabled_substitution_follow_flux(tree: Tree, settings: ValidateSettings) -> None:
    add_route(tree, "${ROUTE_HOST:=podinfo.example.org}")
    assert run(tree, settings).ok
    # an escape is applied literally, and so is everything in an object that opts out
    tree.edit(f"{APP}/httproute.yaml", "${ROUTE_HOST:=podinfo.example.org}", "$${SECRET_DOMAIN}")
    only(run(tree, settings), "schema", f"{APP}/httproute.yaml", "'$${SECRET_DOMAIN}' does not match pattern")
    tree.edit(f"{APP}/httproute.yaml", "$${SECRET_DOMAIN}", "podinfo.${SECRET_DOMAIN}")
    tree.edit(f"{APP}/httproute.yaml", "  name: podinfo\n",
              "  name: podinfo\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\n")
    finding = only(run(tree, settings), "schema", f"{APP}/httproute.yaml", "spec.hostnames[0]")
    assert "'podinfo.${SECRET_DOMAIN}'" in finding.message and "after Flux substitution" not in finding.message


def test_without_the_plaintext_a_substituted_field_is_not_guessed(tree: Tree, settings: ValidateSettings) -> None:
    add_route(tree, "podinfo.${SECRET_DOMAIN}")
    report = run(tree, settings, plaintexts=None)
    assert report.ok, "\n".join(map(str, report.findings))
    assert any("${SECRET_DOMAIN}" in n and "not known here" in n for n in report.notes)


def test_a_kind_without_schema_is_a_counted_note_in_makejinja_mode(
        tree: Tree, settings: ValidateSettings, tmp_path: Path) -> None:
    tree.write(f"{APP}/widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec: {}\n")
    tree.edit(f"{APP}/kustomization.yaml", "  - ./configmap.yaml\n", "  - ./configmap.yaml\n  - ./widget.yaml\n")
    lenient = ValidateSettings(**{**settings.__dict__, "missing_schemas": "note"})
    report = run(tree, lenient)
    assert report.ok
    assert any(n.startswith("1 document(s) of 1 kind(s) not schema-checked") and "Widget (example.com/v1)" in n
               for n in report.notes)
    assert _settings_from(tmp_path / "mj", "", makejinja=True).missing_schemas == "note"
    assert _settings_from(tmp_path / "gr", "").missing_schemas == "finding"
    assert _settings_from(tmp_path / "mj2", "[gitops-render.validate]\nmissing_schemas = \"finding\"",
                          makejinja=True).missing_schemas == "finding"
    with pytest.raises(ConfigError, match="missing_schemas"):
        _settings_from(tmp_path / "bad", "[gitops-render.validate]\nmissing_schemas = \"ignore\"")


# --------------------------------------------------------------------------- attacks on *.sops.* files (12.3, 12.6)


def test_a_decrypted_secret_committed_by_mistake_is_a_finding_with_and_without_the_key(
        tree: Tree, settings: ValidateSettings) -> None:
    plaintext = (FIXTURE / SECRET.replace(".sops.yaml", ".sops-plaintext.yaml")).read_text()
    tree.write(SECRET, plaintext)  # `sops decrypt --in-place` and commit
    for kwargs in ({"plaintexts": None}, {"plaintexts": None, "decrypt": tree.decrypt}):
        report = run(tree, settings, **kwargs)
        finding = only(report, "sops", SECRET, "has no sops metadata", "Secret podinfo-secret")
        assert finding.line == 2
        assert all(SECRET_VALUE not in str(f) for f in report.findings)


def test_a_secret_encrypted_with_too_narrow_an_encrypted_regex_is_a_finding(
        tree: Tree, settings: ValidateSettings) -> None:
    """The creation rule says ^(data)$: sops leaves stringData in plaintext and adds a valid MAC."""
    plaintext = (FIXTURE / SECRET.replace(".sops.yaml", ".sops-plaintext.yaml")).read_text()
    tree.write(SECRET, plaintext)
    tree.runner.run("sops", ["encrypt", "--age", tree.recipient, "--encrypted-regex", "^(data)$", "--in-place",
                             str(tree.root / SECRET)])
    assert SECRET_VALUE in (tree.root / SECRET).read_text()
    for kwargs in ({}, {"plaintexts": None}, {"plaintexts": None, "decrypt": tree.decrypt}):
        report = run(tree, settings, **kwargs)
        finding = only(report, "sops", SECRET, "stringData.PODINFO_TOKEN is not encrypted")
        assert "encrypted_regex: ^(data|stringData)$" in finding.message
        assert all(SECRET_VALUE not in str(f) for f in report.findings)


def test_a_fake_sops_block_over_plaintext_values_is_a_finding(tree: Tree, settings: ValidateSettings) -> None:
    """A sops that echoes its input and appends a plausible sops: block."""
    encrypted = (tree.root / SECRET).read_text()
    plaintext = (FIXTURE / SECRET.replace(".sops.yaml", ".sops-plaintext.yaml")).read_text()
    tree.write(SECRET, plaintext + encrypted[encrypted.index("sops:"):])
    report = run(tree, settings, plaintexts=None)
    only(report, "sops", SECRET, "stringData.PODINFO_TOKEN is not encrypted")
    assert all(SECRET_VALUE not in str(f) for f in report.findings)


# --------------------------------------------------------------------------- findings for machines (issue 15.4)


def cli_validate(tree: Tree, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    from click.testing import CliRunner

    from gitops_render.cli import cli

    (tree.root / "gitops-render.toml").write_text(
        f'[gitops-render]\noutput = "."\n[gitops-render.validate.helm_schemas]\n"app-template@4.5.0" = "{CHART_SCHEMAS}"\n')
    result = CliRunner().invoke(cli, ["validate", "--root", str(tree.root), *args],
                                env={"SOPS_AGE_KEY_FILE": str(tree.key_file), **(env or {})})
    return result.exit_code, result.stdout


def test_validate_prints_json_github_annotations_and_junit(tree: Tree) -> None:
    import json
    from xml.etree import ElementTree

    tree.edit(f"{APP}/helmrelease.yaml", "  interval: 1h\n  chartRef:", "  intervall: 1h\n  chartRef:")
    code, out = cli_validate(tree, "--output", "json")
    doc = json.loads(out)
    assert code == 1
    assert doc["summary"] == {"findings": 2, "notes": 0, "drift": 0, "by_check": {"schema": 2}, "ok": False}, out
    assert [(f["check"], f["file"], f["line"], f["document"], f["message"]) for f in doc["findings"]] == [
        ("schema", f"{APP}/helmrelease.yaml", 2, "HelmRelease demo/podinfo", message)
        for message in ("spec: additional properties 'intervall' not allowed", "spec: missing property 'interval'")]

    code, out = cli_validate(tree, env={"GITHUB_ACTIONS": "true"})  # picked automatically in Actions
    assert code == 1
    assert out.splitlines() == [f"::error file={APP}/helmrelease.yaml,line=2,title=schema::HelmRelease demo/podinfo: "
                                f"spec: additional properties 'intervall' not allowed",
                                f"::error file={APP}/helmrelease.yaml,line=2,title=schema::HelmRelease demo/podinfo: "
                                f"spec: missing property 'interval'"]
    code, out = cli_validate(tree, "--output", "text", env={"GITHUB_ACTIONS": "true"})
    assert "::error" not in out and "'intervall'" in out

    code, out = cli_validate(tree, "--output", "junit")
    suites = ElementTree.fromstring(out.encode())
    failures = [(s.get("name"), c.get("name")) for s in suites.iter("testsuite") for c in s.iter("testcase")
                if c.find("failure") is not None]
    assert code == 1 and failures == [("schema", f"{APP}/helmrelease.yaml:2")] * 2
