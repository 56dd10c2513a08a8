"""The LiteLLM container as the rendered tree defines it, and its in-cluster peers on loopback.

``pod_spec(docs)`` reads, from one in-memory render, what the HelmRelease gives the container:
the mounted ``config.yaml`` (exactly as the ConfigMap holds it), the environment (``env`` /
``envFrom``, ``secretKeyRef`` / ``configMapKeyRef``, ``$(VAR)`` expansion; Secret values in
plaintext, memory only) and the ``args``. ``loopback_env`` points only the *addresses* of
in-cluster peers at loopback, with one note per change; ``RedisServer`` is the real
``redis-server`` (and Sentinel) that stands in for the cluster's Redis/Valkey/Dragonfly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = ["CLOSED_PORT", "PodSpec", "PodSpecError", "RedisServer", "RedisUnavailable",
           "free_port", "loopback_env", "pod_spec", "redis_wanted"]

# A loopback port nothing listens on (discard): peers "pointed at nothing" get it.
CLOSED_PORT = 9
_CLUSTER_HOST = re.compile(r"(^|\.)(svc|cluster\.local)$|\.svc\.")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
# Ports the container listens on besides --port: a free one each (parallel-safe).
POD_LISTEN_PORTS = ("SEPARATE_HEALTH_PORT",)


class PodSpecError(ValueError):
    """The rendered manifests do not say how the container runs (a reference names nothing)."""


class RedisUnavailable(RuntimeError):
    """redis-server is missing or did not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
# ------------------------------------------------------------------------------ pod spec


def _secret_data(doc: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
    return data


@dataclass(frozen=True)
class PodSpec:
    """How the container runs: config file text, environment (plaintext, memory only), args.

    ``secret_values`` are the values that came from Secrets (masked in every log text).
    """

    config_text: str
    config_path: str
    env: Mapping[str, str]
    args: tuple[str, ...]
    secret_values: frozenset[str] = frozenset()

    def digest(self) -> str:
        """Identity of what the pod gets (two combinations with one digest run identically)."""
        blob = json.dumps([self.config_text, sorted(self.env.items()), self.args])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def config(self) -> dict[str, Any]:
        import yaml
        data = yaml.safe_load(self.config_text)
        return data if isinstance(data, dict) else {}


def _objects(docs: Mapping[str, list[Any]], kind: str) -> list[dict[str, Any]]:
    return [d for items in docs.values() for d in items
            if isinstance(d, dict) and d.get("kind") == kind]


def _named(docs: Mapping[str, list[Any]], kind: str, name: str, namespace: str | None,
           where: str) -> dict[str, Any]:
    for doc in _objects(docs, kind):
        meta = doc.get("metadata") or {}
        if meta.get("name") == name and meta.get("namespace") in (None, namespace):
            return doc
    raise PodSpecError(f"{where}: no rendered {kind} {name!r} in namespace {namespace!r}")


def _env_items(env: Any) -> list[tuple[str, Any]]:
    """app-template env: a mapping NAME -> value / {value} / {valueFrom}, or a k8s list."""
    if isinstance(env, Mapping):
        return list(env.items())
    if isinstance(env, list):
        return [(item["name"], {k: v for k, v in item.items() if k != "name"}) for item in env]
    return []


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _ENV_REF.sub(sub, value)


def pod_spec(docs: Mapping[str, list[Any]], *, release: str = "litellm", controller: str = "litellm",
             container: str = "app") -> PodSpec:
    """The LiteLLM container of HelmRelease ``release`` as the rendered tree defines it.

    ``docs`` is ``{path: [parsed documents]}`` of one in-memory render (Secrets in plaintext).
    """
    hr = next((d for d in _objects(docs, "HelmRelease")
               if (d.get("metadata") or {}).get("name") == release), None)
    if hr is None:
        raise PodSpecError(f"no rendered HelmRelease {release!r}")
    ns = (hr.get("metadata") or {}).get("namespace")
    values = (hr.get("spec") or {}).get("values") or {}
    where = f"HelmRelease {release} controllers.{controller}.containers.{container}"
    spec = ((values.get("controllers") or {}).get(controller) or {}).get("containers", {}).get(
        container)
    if not isinstance(spec, Mapping):
        raise PodSpecError(f"{where}: not rendered")
    env: dict[str, str] = {}
    from_secrets: set[str] = set()

    def source(kind: str, name: str, key: str | None, optional: bool) -> dict[str, str] | None:
        try:
            doc = _named(docs, kind, name, ns, where)
        except PodSpecError:
            if optional:
                return None
            raise
        data = _secret_data(doc) if kind == "Secret" else {
            k: str(v) for k, v in (doc.get("data") or {}).items()}
        if key is not None and key not in data and not optional:
            raise PodSpecError(f"{where}: {kind} {name!r} has no key {key!r}")
        return data

    for item in spec.get("envFrom") or []:
        if not isinstance(item, Mapping):
            continue
        ref = item.get("secretRef") or ({"name": item["secret"]} if "secret" in item else None)
        kind = "Secret"
        if ref is None:
            ref = item.get("configMapRef") or (
                {"name": item["configMap"]} if "configMap" in item else None)
            kind = "ConfigMap"
        if ref is None:
            raise PodSpecError(f"{where}: envFrom entry {dict(item)} names no Secret or ConfigMap")
        data = source(kind, ref["name"], None, bool(ref.get("optional"))) or {}
        prefix = str(item.get("prefix", ""))
        for k, v in data.items():
            env[prefix + k] = v
            if kind == "Secret":
                from_secrets.add(v)
    for name, raw in _env_items(spec.get("env")):
        if isinstance(raw, Mapping) and "valueFrom" in raw:
            vf = raw["valueFrom"]
            ref, kind = (vf.get("secretKeyRef"), "Secret") if "secretKeyRef" in vf else (
                vf.get("configMapKeyRef"), "ConfigMap")
            if not isinstance(ref, Mapping):
                raise PodSpecError(f"{where}: env {name}: unsupported valueFrom {dict(vf)}")
            data = source(kind, ref["name"], ref["key"], bool(ref.get("optional")))
            if data is None or ref["key"] not in data:
                continue  # optional and absent: Kubernetes leaves the variable unset
            env[name] = data[ref["key"]]
            if kind == "Secret":
                from_secrets.add(env[name])
        else:
            value = raw.get("value", "") if isinstance(raw, Mapping) else raw
            env[name] = _expand("" if value is None else str(value), env)

    args = tuple(str(a) for a in spec.get("args") or ())
    config_path = args[args.index("--config") + 1] if "--config" in args else ""
    if not config_path:
        raise PodSpecError(f"{where}: args {list(args)} name no --config file")
    config_text = _mounted_file(docs, values, ns, config_path, where)
    return PodSpec(config_text, config_path, env, args, frozenset(v for v in from_secrets if v))


def _mounted_file(docs: Mapping[str, list[Any]], values: Mapping[str, Any], ns: str | None,
                  path: str, where: str) -> str:
    for pname, item in (values.get("persistence") or {}).items():
        if not isinstance(item, Mapping) or item.get("type") not in ("configMap", "secret"):
            continue
        for mount in item.get("globalMounts") or []:
            if mount.get("path") != path:
                continue
            kind = "ConfigMap" if item["type"] == "configMap" else "Secret"
            doc = _named(docs, kind, str(item.get("name") or pname), ns, where)
            data = _secret_data(doc) if kind == "Secret" else dict(doc.get("data") or {})
            key = mount.get("subPath") or Path(path).name
            if key not in data:
                raise PodSpecError(f"{where}: {kind} {item.get('name')!r} has no key {key!r} "
                                   f"mounted at {path}")
            return str(data[key])
    raise PodSpecError(f"{where}: nothing in persistence mounts {path}")


# ------------------------------------------------------------------- loopback Redis / Sentinel


def _resp(sock: socket.socket, *args: str) -> bytes:
    """Send one command, return the first reply line (enough for PING / AUTH / status)."""
    payload = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    sock.sendall(payload)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply.split(b"\r\n", 1)[0]


class Started:
    """A local server process as a context manager: ``start()`` on entry (stopped again if that
    fails half-way), ``stop()`` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RedisServer(Started):
    """A real ``redis-server`` on 127.0.0.1 demanding the credentials the pod was given.

    With ``username`` an ACL user (the default user off), else ``requirepass`` when there is a
    ``password``. ``sentinel_service`` adds a real Sentinel monitoring it under that name. The
    server reads its configuration from stdin; the Sentinel's (it must be rewritable) lives in a
    private directory on /dev/shm (memory), removed on stop.
    """

    username: str | None = None
    password: str | None = None
    sentinel_service: str | None = None
    port: int = 0
    sentinel_port: int = 0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _shm: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisUnavailable("redis-server not found: run scripts/install-litellm.sh "
                                   "(it installs it with apt-get)")
        self.port = free_port()
        lines = [f"port {self.port}", "bind 127.0.0.1", 'save ""', "appendonly no",
                 "protected-mode yes", 'dir "/tmp"']
        if self.username:
            lines += ["user default off", f"user {self.username} on >{self.password or ''} "
                      "~* &* +@all"]
        elif self.password:
            lines.append(f"requirepass {self.password}")
        proc = subprocess.Popen([exe, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.close()
        self._wait(self.port, auth=True)
        if self.sentinel_service:
            self.sentinel_port = free_port()
            shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
            self._shm = tempfile.TemporaryDirectory(prefix="litellm-sentinel-", dir=shm)
            conf = Path(self._shm.name) / "sentinel.conf"
            text = [f"port {self.sentinel_port}", "bind 127.0.0.1", f'dir "{self._shm.name}"',
                    f"sentinel monitor {self.sentinel_service} 127.0.0.1 {self.port} 1"]
            if self.password:
                text.append(f"sentinel auth-pass {self.sentinel_service} {self.password}")
            if self.username:
                text.append(f"sentinel auth-user {self.sentinel_service} {self.username}")
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("\n".join(text) + "\n")
            self._procs.append(subprocess.Popen(
                [exe, str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            self._wait(self.sentinel_port, auth=False)

    def _wait(self, port: int, *, auth: bool, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if any(p.poll() is not None for p in self._procs):
                raise RedisUnavailable(f"redis-server on port {port} exited at startup")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    if auth and self.password:
                        creds = [self.username, self.password] if self.username else [self.password]
                        _resp(sock, "AUTH", *[c for c in creds if c])
                    if _resp(sock, "PING") == b"+PONG":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server on port {port} not ready in {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=10)
        if self._shm is not None:
            self._shm.cleanup()
            self._shm = None


def redis_wanted(env: Mapping[str, str]) -> RedisServer | None:
    """The loopback stand-in for the Redis the pod's environment names (None: it names none)."""
    url = env.get("REDIS_URL")
    if not url and not env.get("REDIS_HOST") and not env.get("REDIS_SENTINEL_NODES"):
        return None
    parsed = urllib.parse.urlsplit(url) if url else None
    username = env.get("REDIS_USERNAME") or (urllib.parse.unquote(parsed.username)
                                             if parsed and parsed.username else None)
    password = env.get("REDIS_PASSWORD") or (urllib.parse.unquote(parsed.password)
                                             if parsed and parsed.password else None)
    sentinel = env.get("REDIS_SERVICE_NAME") or "mymaster" if env.get(
        "REDIS_SENTINEL_NODES") else None
    return RedisServer(username=username, password=password, sentinel_service=sentinel)


def _swap_netloc(url: str, host: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def loopback_env(env: Mapping[str, str], redis: RedisServer | None) -> tuple[dict[str, str],
                                                                             list[str]]:
    """The pod's environment with in-cluster addresses on loopback, and a note per change."""
    out = dict(env)
    notes: list[str] = []
    for name in ("DATABASE_URL", "DIRECT_URL"):
        if out.pop(name, None) is not None:
            notes.append(f"{name} unset (no Postgres here; Prisma is not installed)")
    if redis is not None:
        if "REDIS_HOST" in out:
            notes.append(f"REDIS_HOST {out['REDIS_HOST']} -> 127.0.0.1")
            out["REDIS_HOST"] = "127.0.0.1"
        if "REDIS_PORT" in out:
            notes.append(f"REDIS_PORT {out['REDIS_PORT']} -> {redis.port}")
            out["REDIS_PORT"] = str(redis.port)
        if out.get("REDIS_URL"):
            out["REDIS_URL"] = _swap_netloc(out["REDIS_URL"], "127.0.0.1", redis.port)
            notes.append(f"REDIS_URL host:port -> 127.0.0.1:{redis.port} (credentials kept)")
        if out.get("REDIS_SENTINEL_NODES"):
            out["REDIS_SENTINEL_NODES"] = json.dumps([["127.0.0.1", redis.sentinel_port]])
            notes.append(f"REDIS_SENTINEL_NODES -> [[127.0.0.1, {redis.sentinel_port}]] "
                         f"(a Sentinel monitoring the loopback server)")
    redis_names = {"REDIS_HOST", "REDIS_PORT", "REDIS_URL", "REDIS_SENTINEL_NODES"}
    for name, value in sorted(out.items()):
        if name in POD_LISTEN_PORTS:
            out[name] = str(free_port())
            notes.append(f"{name} {value} -> {out[name]} (a free port)")
            continue
        if name in redis_names or "://" not in value:
            continue
        try:
            parts = urllib.parse.urlsplit(value)
            host = parts.hostname
        except ValueError:
            continue
        if host and (_CLUSTER_HOST.search(host) or host in _LOCAL_HOSTS):
            out[name] = _swap_netloc(value, "127.0.0.1", CLOSED_PORT)
            notes.append(f"{name} {host} -> 127.0.0.1:{CLOSED_PORT} (nothing listens)")
    return out, notes

