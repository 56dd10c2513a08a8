"""Cross-references between what the charts render and the rest of the tree (``refs`` findings).

Over the objects :mod:`gitops_render.validate.charts` rendered plus the tree's own objects
(as Flux applies them), in each namespace:

* the Secret/ConfigMap keys a rendered pod uses (``env[].valueFrom.secretKeyRef`` /
  ``configMapKeyRef``, ``envFrom``, ``secret``/``configMap``/``projected`` volume ``items``)
  exist in the Secret (keys of the decrypted content) or ConfigMap, unless ``optional``;
  a non-optional one that is neither in the tree nor rendered is a note (made in the cluster?);
* a Service that HTTPRoute/GRPCRoute ``backendRefs`` or a ReferenceGrant names exists, and
  a route's ``port`` is one of its ports; a Service's ``targetPort`` is a port of its pods;
* a selector over pods (NetworkPolicy ``podSelector`` and its peers, CiliumNetworkPolicy
  ``endpointSelector``, PodDisruptionBudget, Service, PodMonitor) or over Services
  (ServiceMonitor, with its ``endpoints[].port`` names) matches; an HPA's
  ``scaleTargetRef`` exists; a NetworkPolicy's ports are ports of the pods they lead to.

Only references into what a chart renders are judged — objects an operator makes in the
cluster (CNPG's pods, KServe's Services) are not known here. A selector is about a rendered
release when it shares a label (``key=value``) with a rendered pod/Service of that namespace
or names the release in ``app.kubernetes.io/instance``; a name is when it is the release's
name or starts with ``<release>-``. Messages name objects, keys and ports, never a value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from gitops_render.validate.charts import ChartRendering, RenderedRelease
from gitops_render.validate.flux_checks import Variables
from gitops_render.validate.flux_models import DEFAULT_NAMESPACE, get_path
from gitops_render.validate.flux_tree import FluxTree
from gitops_render.validate.kubeconform import applied_data
from gitops_render.validate.model import CheckResult, Finding, ResourceKey
from gitops_render.validate.yamltree import YamlFile

__all__ = ["check_references", "selector_matches"]

_INSTANCE = "app.kubernetes.io/instance"
_KINDS = frozenset({"Service", "Secret", "ConfigMap", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                    "CronJob", "Pod", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "ServiceMonitor", "PodMonitor",
                    "NetworkPolicy", "CiliumNetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"})
_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"})


@dataclass(frozen=True)
class _Obj:
    """One object, rendered by a chart (``release``) or in the tree, and where findings about it go."""

    data: Mapping[str, Any]
    namespace: str
    file: str
    label: str | None
    line: int | None
    release: RenderedRelease | None = None

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def name(self) -> str:
        return str(get_path(self.data, "metadata", "name") or "")

    @property
    def labels(self) -> Mapping[str, Any]:
        labels = get_path(self.data, "metadata", "labels")
        return labels if isinstance(labels, Mapping) else {}


@dataclass(frozen=True)
class _Pod:
    """A pod template: its labels and containers, and the workload that owns it."""

    owner: _Obj
    labels: Mapping[str, Any]
    spec: Mapping[str, Any]

    def containers(self) -> Iterator[Mapping[str, Any]]:
        for section in ("initContainers", "containers"):
            for container in self.spec.get(section) or []:
                if isinstance(container, Mapping):
                    yield container

    def ports(self) -> list[tuple[int | None, str | None]]:
        return [(p.get("containerPort") if isinstance(p.get("containerPort"), int) else None,
                 p.get("name") if isinstance(p.get("name"), str) else None)
                for c in self.containers() for p in c.get("ports") or [] if isinstance(p, Mapping)]


def selector_matches(selector: Any, labels: Mapping[str, Any]) -> bool:
    """A label selector (``matchLabels`` / ``matchExpressions``, or a plain map) against labels.

    >>> selector_matches({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
    ...                  {"a": "1", "b": "x"}), selector_matches({"a": "2"}, {"a": "1"})
    (True, False)
    """
    if not isinstance(selector, Mapping):
        return True
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    required = {**plain, **(selector.get("matchLabels") or {})}
    if any(str(labels.get(k)) != str(v) or k not in labels for k, v in required.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), [str(v) for v in expr.get("values") or []]
        has = key in labels
        if (op == "In" and (not has or str(labels[key]) not in values)) or (op == "NotIn" and has and str(
                labels[key]) in values) or (op == "Exists" and not has) or (op == "DoesNotExist" and has):
            return False
    return True


def _pairs(selector: Any) -> dict[str, str]:
    if not isinstance(selector, Mapping):
        return {}
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    return {str(k): str(v) for k, v in {**plain, **(selector.get("matchLabels") or {})}.items()}


class _Index:
    """The objects and pods of every namespace, rendered and in the tree."""

    def __init__(self, rendering: ChartRendering, tree: FluxTree, files: Mapping[PurePosixPath, YamlFile],
                 plaintexts: Mapping[PurePosixPath, YamlFile], variables: Mapping[ResourceKey, Variables]) -> None:
        self.objects: list[_Obj] = []
        self.releases: dict[str, list[RenderedRelease]] = {}
        for rel in rendering.releases:
            self.releases.setdefault(rel.namespace, []).append(rel)
            for data, ns in rel.objects:
                if data.get("kind") in _KINDS:
                    self.objects.append(_Obj(data, ns or rel.namespace, str(rel.hr.file), rel.label(data, ns),
                                             rel.hr.doc.line, rel))
        for obj in tree.objects:
            if obj.doc.kind in _KINDS:
                data, _, _ = applied_data(obj, files, plaintexts, variables)
                self.objects.append(_Obj(data, obj.namespace or DEFAULT_NAMESPACE, str(obj.file), obj.label,
                                         obj.doc.line))
        self.generated = {ResourceKey(g.obj.kind, g.namespace or DEFAULT_NAMESPACE, g.obj.name): g.obj.keys
                          for g in tree.generated}
        self.pods: list[_Pod] = []
        for item in self.objects:
            if item.kind in _WORKLOADS:
                template = item.data if item.kind == "Pod" else get_path(
                    item.data, "spec", *(("jobTemplate", "spec") if item.kind == "CronJob" else ()), "template")
                spec = get_path(template, "spec")
                if isinstance(spec, Mapping):
                    labels = get_path(template, "metadata", "labels")
                    self.pods.append(_Pod(item, labels if isinstance(labels, Mapping) else {}, spec))

    def find(self, kind: str, ns: str, name: str) -> _Obj | None:
        return next((o for o in self.objects if o.kind == kind and o.namespace == ns and o.name == name), None)

    def of(self, kind: str, ns: str | None) -> list[_Obj]:
        return [o for o in self.objects if o.kind == kind and (ns is None or o.namespace == ns)]

    def belongs(self, name: str, ns: str) -> RenderedRelease | None:
        """The rendered release a name belongs to (``<release>`` or ``<release>-...``)."""
        return next((r for r in self.releases.get(ns, []) if name == r.name or name.startswith(r.name + "-")), None)

    def about(self, selector: Any, ns: str | None,
              candidates: Sequence[tuple[Mapping[str, Any], RenderedRelease | None]]) -> RenderedRelease | None:
        """The rendered release a selector is about: it shares a label with one of ``candidates``
        (labels of rendered pods/Services) or names the release in ``app.kubernetes.io/instance``."""
        pairs = _pairs(selector)
        spaces = [ns] if ns is not None else list(self.releases)
        for space in spaces:
            for release in self.releases.get(space, []):
                if pairs.get(_INSTANCE) == release.name:
                    return release
        for labels, rel in candidates:
            if rel is not None and any(str(labels.get(k)) == v for k, v in pairs.items() if k in labels):
                return rel
        return None

    def rendered_pod_labels(self, ns: str) -> list[tuple[Mapping[str, Any], RenderedRelease | None]]:
        return [(p.labels, p.owner.release) for p in self.pods if p.owner.release and p.owner.namespace == ns]

    def pods_matching(self, selector: Any, ns: str) -> list[_Pod]:
        return [p for p in self.pods if p.owner.namespace == ns and selector_matches(selector, p.labels)]


def _f(obj: _Obj, message: str) -> Finding:
    return Finding("refs", obj.file, obj.label, message, obj.line)


def _keys(idx: _Index, kind: str, ns: str, name: str) -> frozenset[str] | bool | None:
    """Keys of a Secret/ConfigMap; ``None`` unknown (generated); ``False`` not there."""
    obj = idx.find(kind, ns, name)
    if obj is not None:
        return frozenset(str(k) for section in ("data", "stringData", "binaryData")
                         for k in (obj.data.get(section) or {}))
    key = ResourceKey(kind, ns, name)
    return idx.generated.get(key, False)


def _pod_refs(idx: _Index, pod: _Pod, absent: set[str]) -> Iterator[Finding]:
    """Every Secret/ConfigMap key a rendered pod uses exists."""
    ns = pod.owner.namespace

    def check(where: str, kind: str, name: Any, key: Any, optional: Any) -> Iterator[Finding]:
        if not isinstance(name, str) or optional is True:
            return
        keys = _keys(idx, kind, ns, name)
        if keys is False:
            absent.add(f"{kind} {ns}/{name}")
        elif isinstance(keys, frozenset) and isinstance(key, str) and key not in keys:
            yield _f(pod.owner, f"{where}: {kind} {ns}/{name} has no key {key!r} "
                                f"(it has: {', '.join(sorted(keys)) or 'none'})")

    for c in pod.containers():
        cname = c.get("name", "?")
        for env in c.get("env") or []:
            for ref, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                r = get_path(env, "valueFrom", ref)
                if isinstance(r, Mapping):
                    yield from check(f"container {cname} env {env.get('name')}", kind, r.get("name"), r.get("key"),
                                     r.get("optional"))
        for env in c.get("envFrom") or []:
            for ref, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                r = get_path(env, ref)
                if isinstance(r, Mapping):
                    yield from check(f"container {cname} envFrom", kind, r.get("name"), None, r.get("optional"))
    for vol in pod.spec.get("volumes") or []:
        sources = [("Secret", get_path(vol, "secret"), "secretName"),
                   ("ConfigMap", get_path(vol, "configMap"), "name")]
        for proj in get_path(vol, "projected", "sources") or []:
            sources += [("Secret", get_path(proj, "secret"), "name"),
                        ("ConfigMap", get_path(proj, "configMap"), "name")]
        for kind, src, field_name in sources:
            if isinstance(src, Mapping):
                items = [i.get("key") for i in src.get("items") or [] if isinstance(i, Mapping)] or [None]
                for key in items:
                    yield from check(f"volume {vol.get('name')}", kind, src.get(field_name), key, src.get("optional"))


def _port_ok(port: Any, end: Any, pods: Sequence[_Pod]) -> bool | None:
    """Whether a (pod-side) port is a port of ``pods``; ``None`` when the pods declare none."""
    declared = [p for pod in pods for p in pod.ports()]
    if not declared:
        return None
    numbers = {n for n, _ in declared if n is not None}
    if isinstance(port, str) and not port.isdigit():
        return port in {n for _, n in declared if n}
    if port is None:
        return True
    low = int(port)
    high = int(end) if isinstance(end, int) else low
    return any(low <= n <= high for n in numbers)


def _listening(pods: Sequence[_Pod]) -> str:
    numbers = sorted({n for pod in pods for n, _ in pod.ports() if n is not None})
    return ", ".join(map(str, numbers)) or "none"


def _selects(idx: _Index, obj: _Obj, where: str, selector: Any, ns: str) -> tuple[list[_Pod] | None, list[Finding]]:
    """The pods a selector about a rendered release matches (a finding when none); ``None`` when not about one."""
    rel = idx.about(selector, ns, idx.rendered_pod_labels(ns))
    if rel is None or not isinstance(selector, Mapping):
        return None, []
    pods = idx.pods_matching(selector, ns)
    if pods:
        return pods, []
    labels = ", ".join(f"{k}={v}" for k, v in sorted(_pairs(selector).items()))
    return None, [_f(obj, f"{where} ({labels or 'expressions only'}) matches no pod in {ns}: not the pods of "
                          f"HelmRelease {rel.key.namespaced_name} (chart {rel.chart}) nor any in the tree")]


def _peer_namespace(peer: Any, ns: str) -> str | None:
    sel = get_path(peer, "namespaceSelector")
    if sel is None:
        return ns
    name = get_path(sel, "matchLabels", "kubernetes.io/metadata.name")
    return name if isinstance(name, str) else None


def _network_policy(idx: _Index, obj: _Obj) -> Iterator[Finding]:
    """Its selectors match rendered pods, and its ports are ports of the pods the traffic reaches."""
    ns = obj.namespace
    spec = obj.data.get("spec") or {}
    own, found = _selects(idx, obj, "spec.podSelector", spec.get("podSelector"), ns)
    yield from found
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            resolved: list[list[_Pod] | None] = []
            for j, peer in enumerate(rule.get(peers_key) or []):
                space = _peer_namespace(peer, ns)
                if space is None or not isinstance(peer, Mapping) or "podSelector" not in peer:
                    resolved.append(None)
                    continue
                pods, found = _selects(idx, obj, f"spec.{direction}[{i}].{peers_key}[{j}].podSelector",
                                       peer["podSelector"], space)
                yield from found
                resolved.append(pods)
            complete = bool(resolved) and all(r is not None for r in resolved)
            targets = own if direction == "ingress" else [p for r in resolved for p in r or []] if complete else None
            if not targets:
                continue
            for k, port in enumerate(rule.get("ports") or []):
                if _port_ok(port.get("port"), port.get("endPort"), targets) is False:
                    yield _f(obj, f"spec.{direction}[{i}].ports[{k}]: port {port.get('port')} is not a port of the "
                                  f"pods it {'admits traffic to' if direction == 'ingress' else 'leads to'} "
                                  f"(they listen on {_listening(targets)})")


def _service_refs(idx: _Index, obj: _Obj) -> Iterator[Finding]:
    """HTTPRoute/GRPCRoute backendRefs and ReferenceGrant ``to`` Services."""
    refs: list[tuple[str, str, str, Any]] = []
    if obj.kind == "ReferenceGrant":
        for i, to in enumerate(get_path(obj.data, "spec", "to") or []):
            if to.get("kind") == "Service" and not to.get("group") and isinstance(to.get("name"), str):
                refs.append((f"spec.to[{i}]", obj.namespace, to["name"], None))
    else:
        for i, rule in enumerate(get_path(obj.data, "spec", "rules") or []):
            for j, ref in enumerate(rule.get("backendRefs") or []):
                if ref.get("kind", "Service") == "Service" and not ref.get("group") and isinstance(
                        ref.get("name"), str):
                    refs.append((f"spec.rules[{i}].backendRefs[{j}]", ref.get("namespace") or obj.namespace,
                                 ref["name"], ref.get("port")))
    for where, ns, name, port in refs:
        service = idx.find("Service", ns, name)
        if service is None:
            rel = idx.belongs(name, ns)
            if rel is not None:
                names = ", ".join(sorted(o.name for o in idx.of("Service", ns) if o.release is rel)) or "none"
                yield _f(obj, f"{where}: no Service {ns}/{name}: HelmRelease {rel.key.namespaced_name} (chart "
                              f"{rel.chart}) renders the Service(s) {names}")
            continue
        ports = [p for p in get_path(service.data, "spec", "ports") or [] if isinstance(p, Mapping)]
        if port is not None and ports and port not in {p.get("port") for p in ports}:
            yield _f(obj, f"{where}: Service {ns}/{name} has no port {port} (its ports: "
                          f"{', '.join(str(p.get('port')) for p in ports)})")


def _service(idx: _Index, obj: _Obj) -> Iterator[Finding]:
    """A Service's selector matches pods, and its targetPorts are ports of them."""
    selector = get_path(obj.data, "spec", "selector")
    if not isinstance(selector, Mapping) or not selector:
        return
    pods, found = _selects(idx, obj, "spec.selector", selector, obj.namespace)
    yield from found
    for i, port in enumerate(get_path(obj.data, "spec", "ports") or []):
        target = port.get("targetPort", port.get("port"))
        if pods and _port_ok(target, None, pods) is False:
            yield _f(obj, f"spec.ports[{i}].targetPort {target} is not a port of the pods it selects "
                          f"(they listen on {_listening(pods)})")


def _monitor(idx: _Index, obj: _Obj) -> Iterator[Finding]:
    spec = obj.data.get("spec") or {}
    selector = spec.get("selector")
    names = get_path(spec, "namespaceSelector", "matchNames")
    anyns = get_path(spec, "namespaceSelector", "any") is True
    spaces: list[str | None] = [None] if anyns else list(names) if isinstance(names, list) else [obj.namespace]
    if obj.kind == "PodMonitor":
        for ns in (s for s in spaces if s is not None):
            pods, found = _selects(idx, obj, "spec.selector", selector, ns)
            yield from found
            for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
                if pods and isinstance(ep.get("port"), str) and _port_ok(ep["port"], None, pods) is False:
                    yield _f(obj, f"spec.podMetricsEndpoints[{i}].port {ep['port']!r} is not a port name of its pods")
        return
    services = [o for ns in spaces for o in idx.of("Service", ns)]
    rel = idx.about(selector, None, [(o.labels, o.release) for o in services if o.release])
    if rel is None:
        return
    matched = [o for o in services if selector_matches(selector, o.labels)]
    if not matched:
        yield _f(obj, f"spec.selector matches no Service: not those of HelmRelease {rel.key.namespaced_name} "
                      f"(chart {rel.chart}) nor any in the tree")
        return
    port_names = {p.get("name") for o in matched for p in get_path(o.data, "spec", "ports") or []}
    for i, ep in enumerate(spec.get("endpoints") or []):
        if isinstance(ep.get("port"), str) and ep["port"] not in port_names:
            yield _f(obj, f"spec.endpoints[{i}].port {ep['port']!r} is not a port name of the Service(s) it selects "
                          f"({', '.join(sorted(str(n) for n in port_names if n))})")


def _other(idx: _Index, obj: _Obj) -> Iterator[Finding]:
    spec = obj.data.get("spec") or {}
    if obj.kind == "HorizontalPodAutoscaler":
        ref = spec.get("scaleTargetRef") or {}
        kind, name = ref.get("kind"), ref.get("name")
        if isinstance(kind, str) and isinstance(name, str) and idx.find(kind, obj.namespace, name) is None:
            rel = idx.belongs(name, obj.namespace)
            if rel is not None:
                yield _f(obj, f"spec.scaleTargetRef: no {kind} {obj.namespace}/{name}: not rendered by HelmRelease "
                              f"{rel.key.namespaced_name} (chart {rel.chart}) nor in the tree")
        return
    where, selector = (("spec.endpointSelector", spec.get("endpointSelector")) if obj.kind == "CiliumNetworkPolicy"
                       else ("spec.selector", spec.get("selector")))
    yield from _selects(idx, obj, where, selector, obj.namespace)[1]


def check_references(rendering: ChartRendering, tree: FluxTree, files: Mapping[PurePosixPath, YamlFile],
                     plaintexts: Mapping[PurePosixPath, YamlFile], variables: Mapping[ResourceKey, Variables],
                     ) -> CheckResult:
    """``refs`` findings between the rendered charts and the tree (nothing without a rendered release)."""
    if not rendering.releases:
        return CheckResult()
    idx = _Index(rendering, tree, files, plaintexts, variables)
    findings: list[Finding] = []
    absent: set[str] = set()
    for pod in idx.pods:
        if pod.owner.release is not None:
            findings.extend(_pod_refs(idx, pod, absent))
    handlers = {"NetworkPolicy": _network_policy, "HTTPRoute": _service_refs, "GRPCRoute": _service_refs,
                "ReferenceGrant": _service_refs, "Service": _service, "ServiceMonitor": _monitor,
                "PodMonitor": _monitor, "CiliumNetworkPolicy": _other, "PodDisruptionBudget": _other,
                "HorizontalPodAutoscaler": _other}
    for obj in idx.objects:
        handler = handlers.get(obj.kind)
        if handler is not None:
            findings.extend(handler(idx, obj))
    notes = tuple(f"{what}, used by a rendered chart's pods, is neither in the tree nor rendered (made in the "
                  f"cluster?): its keys were not checked" for what in sorted(absent))
    return CheckResult(tuple(dict.fromkeys(findings)), notes)
