"""``gitops-render graph``: the Flux graph of a cluster repo, and what a change touches.

Stories of an operator and a reviewer: the shipped LiteLLM stack drawn whole; one value of
``cluster.yaml`` changed and the picture showing the HelmRelease it changes and the
Kustomizations that wait for it; a pull request's comment with that picture above the diff;
a broken ``dependsOn`` (a cycle, a typo) drawn in red; the upstream cluster-template drawn
at real size. Every Mermaid text is parsed by the real Mermaid (npm ``mermaid`` under
jsdom, ``tests/mermaid``), every DOT text rendered by the real Graphviz ``dot``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import PROJECT, SHARED, make_age_key
from operator_repo import cli_env, committed, gr, ok, replace_line

from gitops_render.app.graphrun import run_graph
from gitops_render.app.pipeline import RunOptions
from gitops_render.core.runner import ToolRunner
from gitops_render.draw import make_view, to_dot, to_mermaid, to_svg
from gitops_render.settings.sources import load_settings
from gitops_render.validate.graph import Changes, FluxGraph, graph_of_tree
from gitops_render.validate.model import ResourceKey, ValidateSettings

MERMAID = PROJECT / "tests" / "mermaid"
LITELLM_KS = "kubernetes/apps/ai-system/litellm/ks.yaml"


def mermaid_parse(text: str) -> str:
    """The diagram type the real Mermaid parser reads in ``text``; fails the test with Mermaid's error."""
    assert (MERMAID / "node_modules" / "mermaid").is_dir(), \
        "the Mermaid parser is not installed: run scripts/install-tools.sh --test (npm ci in tests/mermaid)"
    proc = subprocess.run(["node", str(MERMAID / "parse.mjs")], input=text, capture_output=True, text=True,
                          timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"ok": False}
    assert result.get("ok"), f"Mermaid rejects it: {result.get('error') or proc.stderr}\n{text}"
    return str(result["type"])


def svg_of(dot_text: str) -> str:
    """The real ``dot -Tsvg`` (Graphviz: apt-get install graphviz), entities unescaped (``&#45;`` is ``-``)."""
    svg = to_svg(dot_text, ToolRunner())
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    return html.unescape(svg)


def k(text: str) -> ResourceKey:
    key = ResourceKey.parse(text)
    assert key is not None
    return key


def graph_of(root: Path) -> FluxGraph:
    settings = load_settings(root)
    return graph_of_tree(Path(settings.output), ValidateSettings.from_settings(settings))


def edges(graph: FluxGraph, kind: str) -> set[tuple[str, str]]:
    return {(str(e.source), str(e.target)) for e in graph.edges if e.kind == kind}


def classes(mermaid: str, name: str) -> set[str]:
    """The node ids a ``class a,b name`` line of the Mermaid text gives ``name``."""
    found: set[str] = set()
    for line in mermaid.splitlines():
        m = re.fullmatch(rf"\s*class (\S+) {name}", line)
        if m:
            found |= set(m.group(1).split(","))
    return found


# =========================================================================== the shipped stack

SHIPPED_KS = {"flux-system/Kustomization/cluster-apps", "flux-system/Kustomization/litellm",
              "flux-system/Kustomization/envoy-gateway-httproutes"}
PROVIDED = {"kube-system/Kustomization/coredns", "cnpg-system/Kustomization/cloudnative-pg",
            "cache/Kustomization/dragonfly", "network/Kustomization/envoy-gateway",
            "flux-system/GitRepository/flux-system"}


def test_the_shipped_stack_is_drawn_whole_with_what_the_cluster_provides(sample_repo: Path) -> None:
    graph = graph_of(sample_repo)
    by_origin = {o: {str(n.key) for n in graph.nodes.values() if n.origin == o} for o in ("tree", "provided")}
    assert by_origin["tree"] == SHIPPED_KS | {"ai-system/HelmRelease/litellm", "ai-system/OCIRepository/litellm"}
    assert by_origin["provided"] == PROVIDED and graph.dangling == [] and graph.cycles == ()
    assert edges(graph, "applies") == {
        ("flux-system/Kustomization/cluster-apps", "flux-system/Kustomization/litellm"),
        ("flux-system/Kustomization/cluster-apps", "flux-system/Kustomization/envoy-gateway-httproutes"),
        ("flux-system/Kustomization/litellm", "ai-system/HelmRelease/litellm"),
        ("flux-system/Kustomization/litellm", "ai-system/OCIRepository/litellm")}
    assert edges(graph, "dependsOn") == {
        ("flux-system/Kustomization/litellm", "kube-system/Kustomization/coredns"),
        ("flux-system/Kustomization/litellm", "cnpg-system/Kustomization/cloudnative-pg"),
        ("flux-system/Kustomization/litellm", "cache/Kustomization/dragonfly"),
        ("flux-system/Kustomization/envoy-gateway-httproutes", "network/Kustomization/envoy-gateway"),
        ("flux-system/Kustomization/envoy-gateway-httproutes", "flux-system/Kustomization/litellm")}
    assert edges(graph, "sourceRef") == {(ks, "flux-system/GitRepository/flux-system") for ks in SHIPPED_KS} | {
        ("ai-system/HelmRelease/litellm", "ai-system/OCIRepository/litellm")}
    assert graph.nodes[k("ai-system/HelmRelease/litellm")].detail == "app-template 4.5.0"

    res = ok(gr(sample_repo, "graph"))
    assert mermaid_parse(res.stdout) == "flowchart-v2"
    for ns in ("ai-system", "cache", "cnpg-system", "flux-system", "kube-system", "network"):
        assert f'["{ns}"]' in res.stdout, ns  # one subgraph per namespace
    assert classes(res.stdout, "provided") == {
        "ks_kube_system_coredns", "ks_cnpg_system_cloudnative_pg", "ks_cache_dragonfly", "ks_network_envoy_gateway",
        "gitrepository_flux_system_flux_system"}
    assert "ks_flux_system_litellm ==>|dependsOn| ks_cnpg_system_cloudnative_pg" in res.stdout
    assert classes(res.stdout, "changed") == set() and classes(res.stdout, "blast") == set()

    dot = ok(gr(sample_repo, "graph", "--format", "dot")).stdout
    svg = svg_of(dot)
    for label in ("cluster-apps", "envoy-gateway-httproutes", "HelmRelease · app-template 4.5.0", "cnpg-system"):
        assert label in svg, label


def test_the_readme_shows_the_picture_of_the_shipped_stack(sample_repo: Path) -> None:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    picture = ok(gr(sample_repo, "graph")).stdout
    assert picture in blocks, "README's Mermaid picture is not `gitops-render graph` of the shipped stack: refresh it"


# =========================================================================== what a change touches


def test_one_value_changed_highlights_its_helmrelease_and_shades_what_waits_for_it(repo: Path) -> None:
    """The operator sets litellm_log_level; before configure, graph --changed shows what it will touch."""
    replace_line(repo / "cluster.yaml", r'# litellm_log_level: "INFO"', 'litellm_log_level: "DEBUG"')
    res = ok(gr(repo, "graph", "--changed"))
    text = res.stdout
    assert mermaid_parse(text) == "flowchart-v2"
    assert classes(text, "changed") == {"hr_ai_system_litellm"}
    # its Kustomization re-applies it; the HTTPRoutes wait for that Kustomization (dependsOn)
    assert classes(text, "blast") == {"ks_flux_system_litellm", "ks_flux_system_envoy_gateway_httproutes"}
    assert "note: 1 changed, 2 in the blast radius" in res.stderr, res.stderr
    assert ok(gr(repo, "graph", "--changed", "--format", "svg", "--output", "g.svg")).stdout == ""
    svg = (repo / "g.svg").read_text(encoding="utf-8")
    assert "#ffa94d" in svg and "#fff3bf" in svg  # the changed and blast-radius fills

    outcome = run_graph(RunOptions(root=repo), changed=True)
    assert outcome.view.changed == {k("ai-system/HelmRelease/litellm")}
    assert outcome.view.blast == {k("flux-system/Kustomization/litellm"),
                                  k("flux-system/Kustomization/envoy-gateway-httproutes")}


def test_a_kustomization_spec_change_reaches_everything_it_applies(sample_repo: Path) -> None:
    graph = graph_of(sample_repo)
    root = k("flux-system/Kustomization/cluster-apps")
    assert graph.touched_by("kubernetes/flux/cluster/ks.yaml") == Changes(frozenset({root}), frozenset({root}))
    blast = graph.blast_radius(graph.touched_by("kubernetes/flux/cluster/ks.yaml"))
    assert blast == {k(x) for x in SHIPPED_KS - {str(root)}} | {k("ai-system/HelmRelease/litellm"),
                                                               k("ai-system/OCIRepository/litellm")}
    # a file configure would add goes to the Kustomization whose path holds it
    new = graph.touched_by("kubernetes/apps/ai-system/litellm/app/pdb.yaml")
    assert new.nodes == {k("flux-system/Kustomization/litellm")} and not new.specs
    assert graph.touched_by("talos/talconfig.yaml").unplaced == ("talos/talconfig.yaml",)


def test_a_large_repo_collapses_what_a_change_does_not_touch(cluster_template: Path) -> None:
    graph = graph_of(cluster_template)
    view = make_view(graph, Changes(frozenset({k("kube-system/HelmRelease/cilium")})))
    shown = {str(n.key) for n in view.shown}
    assert shown == {"kube-system/HelmRelease/cilium", "kube-system/Kustomization/cilium",
                     "kube-system/OCIRepository/cilium", "flux-system/Kustomization/cluster-apps",
                     "flux-system/GitRepository/flux-system"}
    per_ns = {c.namespace: len(c.keys) for c in view.collapsed}
    assert per_ns == {"kube-system": 12, "flux-system": 6, None: 18}
    text = to_mermaid(view)
    assert mermaid_parse(text) == "flowchart-v2"
    assert "+12 more: 4 Kustomizations, 4 HelmReleases, 4 sources" in text
    assert "3 more namespaces: 6 Kustomizations, 6 HelmReleases, 6 sources (cert-manager, default, network)" in text
    svg_of(to_dot(view))


# =========================================================================== the pull-request comment


def test_the_pull_request_comment_shows_the_changed_subtree_above_the_diff(repo: Path) -> None:
    committed(repo)
    replace_line(repo / "cluster.yaml", r'# litellm_log_level: "INFO"', 'litellm_log_level: "DEBUG"')
    ok(gr(repo, "configure"))
    md = ok(gr(repo, "diff", "--base", "HEAD", "--format", "markdown", "--graph")).stdout
    assert md.startswith("<!-- gitops-render diff -->\n"), md  # the Action finds its comment by it
    picture = re.search(r"```mermaid\n(.*?)```", md, re.S)
    assert picture is not None and md.index("```mermaid") < md.index("| Flux Kustomization |"), md
    assert mermaid_parse(picture.group(1)) == "flowchart-v2"
    assert classes(picture.group(1), "changed") == {"hr_ai_system_litellm"}
    assert classes(picture.group(1), "blast") == {"ks_flux_system_litellm", "ks_flux_system_envoy_gateway_httproutes"}
    # graph --base draws the same picture
    assert ok(gr(repo, "graph", "--base", "HEAD")).stdout == picture.group(1)
    # without --graph the comment is as before
    assert "```mermaid" not in ok(gr(repo, "diff", "--base", "HEAD", "--format", "markdown")).stdout
    action = (PROJECT / "action.yml").read_text(encoding="utf-8")
    assert "--format markdown --graph" in action


# =========================================================================== broken references


def test_a_dependson_cycle_and_a_typo_are_drawn_in_red(repo: Path) -> None:
    """litellm made to wait for the routes that already wait for it, and a misspelt dependency."""
    ks = repo / LITELLM_KS
    ks.write_text(ks.read_text().replace("  dependsOn:\n", "  dependsOn:\n    - name: envoy-gateway-httproutes\n"
                                         "    - name: coredsn\n      namespace: kube-system\n", 1))
    graph = graph_of(repo)
    routes, litellm = k("flux-system/Kustomization/envoy-gateway-httproutes"), k("flux-system/Kustomization/litellm")
    assert graph.cycles in (((routes, litellm, routes),), ((litellm, routes, litellm),))
    assert [str(n.key) for n in graph.dangling] == ["kube-system/Kustomization/coredsn"]
    red = [e for e in graph.edges if e.in_cycle or e.dangling]
    assert {(str(e.source), str(e.target)) for e in red} == {
        ("flux-system/Kustomization/envoy-gateway-httproutes", "flux-system/Kustomization/litellm"),
        ("flux-system/Kustomization/litellm", "flux-system/Kustomization/envoy-gateway-httproutes"),
        ("flux-system/Kustomization/litellm", "kube-system/Kustomization/coredsn")}
    res = ok(gr(repo, "graph"))
    assert mermaid_parse(res.stdout) == "flowchart-v2"
    assert classes(res.stdout, "dangling") == {"ks_kube_system_coredsn"}
    assert classes(res.stdout, "cycle") == {"ks_flux_system_litellm", "ks_flux_system_envoy_gateway_httproutes"}
    assert re.search(r"\n  linkStyle \d+,\d+,\d+ stroke:#e03131", res.stdout), res.stdout
    assert "coredsn<br/><i>Kustomization: MISSING</i>" in res.stdout
    assert "note: 1 dangling reference(s): kube-system/Kustomization/coredsn" in res.stderr
    assert "note: dependsOn cycle: flux-system/" in res.stderr and "envoy-gateway-httproutes" in res.stderr
    svg = svg_of(ok(gr(repo, "graph", "--format", "dot")).stdout)
    assert "Kustomization: MISSING" in svg and "#e03131" in svg


# =========================================================================== bad input


def test_svg_without_graphviz_names_the_fix_and_writes_nothing(repo: Path) -> None:
    res = gr(repo, "graph", "--format", "svg", "--output", "g.svg",
             env=cli_env(GITOPS_RENDER_DOT=str(repo / "no-such-dot")))
    assert res.returncode == 2 and "apt-get install graphviz" in res.stderr, res.stderr
    assert not (repo / "g.svg").exists()


def test_an_unwritable_output_is_bad_input(repo: Path) -> None:
    res = gr(repo, "graph", "--output", "no/such/dir/g.mmd")
    assert res.returncode == 2 and "--output no/such/dir/g.mmd" in res.stderr, res.stderr
    res = gr(repo, "graph", "--changed", "--base", "HEAD")
    assert res.returncode == 2 and "exclusive" in res.stderr
    for args, fragment in ((("graph", "--all"), "--all needs"),
                           (("graph", "--config", "cluster.yaml"), "--config needs"),
                           (("diff", "--graph"), "--graph needs --base"),
                           (("diff", "--base", "HEAD", "--graph"), "add --format markdown")):
        res = gr(repo, *args)
        assert res.returncode == 2 and fragment in res.stderr, (args, res.stderr)


# =========================================================================== cluster-template at real size

SNAPSHOT = SHARED / "real-repos" / "onedr0p-cluster-template-ae73246.tar.gz"
PY313 = PROJECT / ".venv-py313" / "bin" / "python"  # the plugin needs Python >= 3.12 and pydantic


@pytest.fixture(scope="module")
def cluster_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The upstream snapshot with its CI's inputs (public.toml), rendered by gitops-render under Python 3.13."""
    assert SNAPSHOT.is_file(), f"snapshot not found: {SNAPSHOT} (set GITOPS_RENDER_SHARED)"
    assert PY313.is_file(), f"{PY313} is missing: run scripts/install-tools.sh --test"
    dest = tmp_path_factory.mktemp("ct")
    with tarfile.open(SNAPSHOT) as tar:
        tar.extractall(dest, filter="data")
    repo = dest / "cluster-template"
    make_age_key(repo / "age.key")
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-f", str(repo / "deploy.key"), "-q", "-P", ""], check=True,
                   capture_output=True, timeout=60)
    (repo / "flux-webhook-token.txt").write_text("0123456789abcdef\n")
    (repo / "cloudflare-tunnel.json").write_text('{"AccountTag":"a","TunnelSecret":"b","TunnelID":"c"}\n')
    shutil.copy2(repo / ".github/template-tests/valid/public.toml", repo / "cluster.toml")
    env = cli_env(PYTHONPATH=str(PROJECT / "src"))
    proc = subprocess.run([str(PY313), "-m", "gitops_render", "render"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return repo


APPS = {"cert-manager": ("cert-manager",), "default": ("echo",), "flux-system": ("flux-instance", "flux-operator"),
        "kube-system": ("cilium", "coredns", "metrics-server", "reloader", "spegel"),
        "network": ("cloudflare-dns", "cloudflare-tunnel", "envoy-gateway", "k8s-gateway")}


def test_cluster_template_is_drawn_at_real_size(cluster_template: Path) -> None:
    graph = graph_of(cluster_template)
    apps = {(ns, name) for ns, names in APPS.items() for name in names}
    root = "flux-system/Kustomization/cluster-apps"
    assert {str(n.key) for n in graph.nodes.values() if n.key.kind == "Kustomization"} == \
        {root} | {f"{ns}/Kustomization/{name}" for ns, name in apps}
    assert {str(n.key) for n in graph.nodes.values() if n.key.kind == "HelmRelease"} == \
        {f"{ns}/HelmRelease/{name}" for ns, name in apps}
    assert [str(n.key) for n in graph.nodes.values() if n.origin != "tree"] == ["flux-system/GitRepository/flux-system"]
    assert graph.dangling == [] and graph.cycles == ()
    assert edges(graph, "dependsOn") == {("flux-system/Kustomization/flux-instance",
                                          "flux-system/Kustomization/flux-operator")}
    for ns, name in apps:  # each app: its Kustomization applies a HelmRelease and the OCIRepository of its chart
        ks, hr, oci = (f"{ns}/{kind}/{name}" for kind in ("Kustomization", "HelmRelease", "OCIRepository"))
        assert {(root, ks), (ks, hr), (ks, oci)} <= edges(graph, "applies")
        assert (hr, oci) in edges(graph, "sourceRef")
    assert graph.nodes[k("kube-system/HelmRelease/cilium")].detail.startswith("cilium ")

    text = ok(gr(cluster_template, "graph")).stdout
    assert mermaid_parse(text) == "flowchart-v2"
    assert "flux-system<br/><i>GitRepository (provided) · source of 14 Kustomizations</i>" in text
    assert "-.-> gitrepository_flux_system_flux_system" not in text  # folded, not 14 crossing edges
    svg = svg_of(to_dot(make_view(graph)))
    width, height = (float(x) for x in re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg).groups())
    assert width < 1600 and height < 1600, (width, height)  # readable on a screen at 100%
