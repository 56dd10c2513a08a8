"""Start the real LiteLLM proxy the way the pod runs it, and ask it what it loaded.

The proxy is the one real consumer of the rendered ``config.yaml``; "it started" proves
little (LiteLLM drops bad deployments and guardrails with only a log line), so tests compare
``GET /model/info`` and the guardrail registry with what the file declares, and ping the cache.

What the proxy gets is what the HelmRelease gives the container (``pod_spec``):
- the rendered ``config.yaml`` exactly as the ConfigMap mounts it (never rewritten);
- the container's ``env`` and ``envFrom`` (``value``, ``valueFrom.secretKeyRef`` /
  ``configMapKeyRef``, ``secretRef`` / ``configMapRef``, ``$(VAR)`` expansion), Secrets taken
  from the in-memory render (plaintext never written: the environment goes to the process
  directly and its output is kept in memory, masked);
- the container's ``args`` with only ``--config`` (the file's place), ``--port`` and ``--host``
  pointed at the harness.

Only *addresses* of in-cluster peers are substituted (``PodSpec.loopback``), each with a note:
the Redis/Valkey/Dragonfly target (``REDIS_HOST``/``REDIS_PORT``, the host of ``REDIS_URL``,
``REDIS_SENTINEL_NODES``) goes to a real ``redis-server`` on loopback that demands the
credentials the pod was given (and a real Sentinel when the pod uses one); ``DATABASE_URL`` /
``DIRECT_URL`` are dropped (no Postgres; with them set and Prisma absent the CLI exits 1);
every other URL whose host is cluster-internal (``*.svc``, ``*.cluster.local``) or the pod's
own ``localhost`` (sidecars) goes to a closed loopback port; a listen port of the pod
(``SEPARATE_HEALTH_PORT``) gets a free one. External hosts stay as rendered; outbound HTTP goes
through a dead loopback proxy, so no test reaches the internet.

Two installs (``scripts/install-litellm.sh``): ``deployed`` (the image tag the HelmRelease
deploys) and ``newest`` (the newest release that installs here), each with the image's redis-py.
The process is always stopped (SIGTERM to its process group, SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import PROJECT as REPO_ROOT
from litellm_pod import (
    CLOSED_PORT,
    PodSpec,
    RedisServer,
    Started,
    free_port,
    loopback_env,
    pod_spec,
    redis_wanted,
)

__all__ = [
    "INSTALL_HINT",
    "PROXY_ROLES",
    "REPO_ROOT",
    "LiteLLMNotInstalled",
    "LiteLLMProxy",
    "PodSpec",
    "ProxyInstall",
    "ProxyStartupError",
    "RedisServer",
    "pod_spec",
    "proxy_install",
]

INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-litellm.sh"
INSTALL_HINT = "run scripts/install-litellm.sh (it creates .venv-litellm and .venv-litellm-newest)"
PROXY_ROLES = ("deployed", "newest")
_VENV_ENV = {"deployed": ("LITELLM_VENV", ".venv-litellm"),
             "newest": ("LITELLM_NEWEST_VENV", ".venv-litellm-newest")}
DEAD_PROXY = f"http://127.0.0.1:{CLOSED_PORT}"


class LiteLLMNotInstalled(RuntimeError):
    """A venv with the real proxy is missing or holds other versions than the script pins."""


class ProxyStartupError(RuntimeError):
    """The proxy exited or did not become ready in time; the message carries its log tail."""


# ------------------------------------------------------------------------------- installs


@dataclass(frozen=True)
class ProxyInstall:
    role: str
    venv: Path
    version: str
    redis_version: str

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "litellm"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _pinned() -> dict[str, tuple[str, str]]:
    """{role: (litellm version, redis-py version)} as scripts/install-litellm.sh pins them."""
    out = subprocess.run(["bash", str(INSTALL_SCRIPT), "all", "--print-version"],
                         capture_output=True, text=True, timeout=60, check=True)
    pins: dict[str, tuple[str, str]] = {}
    for line in out.stdout.splitlines():
        role, version, redis = line.split()
        pins[role] = (version, redis.removeprefix("redis=="))
    return pins


def proxy_install(role: str) -> ProxyInstall:
    """The venv of ``role``, checked to hold exactly the pinned litellm and redis-py."""
    var, default = _VENV_ENV[role]
    venv = Path(os.environ.get(var, REPO_ROOT / default))
    version, redis = _pinned()[role]
    python = venv / "bin" / "python"
    if not python.is_file() or not (venv / "bin" / "litellm").is_file():
        raise LiteLLMNotInstalled(f"{venv}: no LiteLLM venv ({role} {version}); {INSTALL_HINT}")
    probe = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version as v; "
         "print(v('litellm'), v('redis'))"], capture_output=True, text=True, timeout=60)
    got = probe.stdout.split()
    if got != [version, redis]:
        raise LiteLLMNotInstalled(
            f"{venv} holds litellm/redis {got or probe.stderr.strip()[-200:]}, the {role} pin is "
            f"litellm {version} with redis {redis}; {INSTALL_HINT}")
    return ProxyInstall(role, venv, version, redis)


# A test-only probe loaded into the proxy process through PYTHONPATH (sitecustomize): once
# litellm.proxy.proxy_server is imported it adds GET /harness/guardrails, which lists the
# guardrails LiteLLM really initialised (its in-memory registry). The config is not touched.
_PROBE_SOURCE = """
import importlib.abc, importlib.machinery, sys

_TARGET = "litellm.proxy.proxy_server"


def _install(module):
    from fastapi.responses import JSONResponse

    def harness_guardrails():
        from litellm.proxy.guardrails.guardrail_registry import IN_MEMORY_GUARDRAIL_HANDLER
        import litellm
        out = []
        for g in IN_MEMORY_GUARDRAIL_HANDLER.list_in_memory_guardrails():
            gid = g.get("guardrail_id")
            params = dict(g.get("litellm_params") or {})
            cb = IN_MEMORY_GUARDRAIL_HANDLER.guardrail_id_to_custom_guardrail.get(gid)
            out.append({
                "guardrail_id": gid,
                "guardrail_name": g.get("guardrail_name"),
                "guardrail": params.get("guardrail"),
                "mode": params.get("mode"),
                "callback_class": type(cb).__name__ if cb is not None else None,
                "callback_registered": cb is not None and cb in litellm.callbacks,
            })
        return JSONResponse({"guardrails": out, "source": "in-memory registry"})

    module.app.add_api_route("/harness/guardrails", harness_guardrails, methods=["GET"])


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _install(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


sys.meta_path.insert(0, _Finder())
"""

# -------------------------------------------------------------------------------- proxy


def _args_for(args: tuple[str, ...], config_path: Path, port: int) -> list[str]:
    out = list(args)
    for flag, value in (("--config", str(config_path)), ("--port", str(port)),
                        ("--host", "127.0.0.1")):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


@dataclass
class LiteLLMProxy(Started):
    """Context manager running the real proxy as the pod runs it, on loopback.

    >>> with LiteLLMProxy(pod_spec(docs), proxy_install("deployed")) as proxy:
    ...     proxy.model_info()
    """

    spec: PodSpec
    install: ProxyInstall
    startup_timeout: float = 120.0

    port: int = 0
    startup_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    guardrails_source: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _log: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def master_key(self) -> str:
        return self.env.get("LITELLM_MASTER_KEY", "")

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="litellm-harness-")
        workdir = Path(self._tmp.name)
        self.redis = redis_wanted(self.spec.env)
        if self.redis is not None:
            self.redis.start()
        self.env, self.notes = loopback_env(self.spec.env, self.redis)
        if self.env.get("LITELLM_LOCAL_MODEL_COST_MAP", "").lower() != "true":
            self.env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            self.notes.append("LITELLM_LOCAL_MODEL_COST_MAP=True added (no download at start)")
        if not self.master_key:
            self.env["LITELLM_MASTER_KEY"] = "sk-harness-" + secrets.token_hex(16)
            self.notes.append("LITELLM_MASTER_KEY: the pod sets none; a random one added")
        probe_dir = workdir / "probe"
        probe_dir.mkdir()
        (probe_dir / "sitecustomize.py").write_text(_PROBE_SOURCE, encoding="utf-8")
        self.env.update({
            # the process, not the pod: where Python and the probe are, a private HOME
            "PATH": f"{self.install.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir), "TMPDIR": str(workdir), "PYTHONPATH": str(probe_dir),
            "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8",
            # outbound HTTP goes nowhere (external hosts keep their rendered names)
            "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY, "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })
        # The ConfigMap's file, byte for byte (a ConfigMap holds no secret).
        config_path = workdir / "config.yaml"
        config_path.write_text(self.spec.config_text, encoding="utf-8")
        self.port = free_port()
        started = time.monotonic()
        self._proc = subprocess.Popen(
            [str(self.install.executable), *_args_for(self.spec.args, config_path, self.port)],
            cwd=workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read_output, daemon=True,
                                        name="litellm-log")
        self._reader.start()
        self._wait_ready(started)
        self.startup_seconds = time.monotonic() - started

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._log.append(raw.decode(errors="replace"))

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)
                raise ProxyStartupError(
                    f"litellm {self.install.version} exited with code {code} during startup\n"
                    f"{self.log_tail()}")
            try:
                status, _ = self.request("GET", "/health/liveliness", timeout=2, auth=False)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ProxyStartupError(f"litellm {self.install.version} not ready after "
                                        f"{self.startup_timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=15)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- HTTP
    def request(self, method: str, path: str, *, body: Any = None, timeout: float = 30,
                auth: bool = True) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.master_key}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get_json(self, path: str) -> Any:
        status, payload = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {self.mask(str(payload))[:500]}")
        return payload

    def model_info(self) -> list[dict[str, Any]]:
        return list(self.get_json("/model/info").get("data", []))

    def guardrails(self) -> list[dict[str, Any]]:
        """The guardrails the proxy initialised (``/v2/guardrails/list``; without a database
        LiteLLM 1.80.x answers it with 500, then the probe reads the same in-memory registry)."""
        status, payload = self.request("GET", "/v2/guardrails/list")
        if status == 200 and isinstance(payload, dict):
            self.guardrails_source = "/v2/guardrails/list"
            return list(payload.get("guardrails", []))
        self.guardrails_source = "/harness/guardrails (in-memory registry)"
        return list(self.get_json("/harness/guardrails").get("guardrails", []))

    def cache_ping(self) -> tuple[int, Any]:
        """``GET /cache/ping``: LiteLLM pings its own cache client (the pod's Redis settings)."""
        status, payload = self.request("GET", "/cache/ping", timeout=60)
        return status, json.loads(self.mask(json.dumps(payload)))

    def metrics(self) -> tuple[int, str]:
        """``GET /metrics/`` without credentials, as the ServiceMonitor scrapes it."""
        status, payload = self.request("GET", "/metrics/", auth=False)
        return status, payload if isinstance(payload, str) else json.dumps(payload)

    # -- logs (in memory only, secret values masked)
    def mask(self, text: str) -> str:
        for value in sorted(self.spec.secret_values | {self.master_key} - {""}, key=len,
                            reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def log_text(self) -> str:
        return self.mask("".join(self._log))

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
