"""Start the real LiteLLM proxy on a rendered config.yaml and ask it what it loaded.

The proxy is the one real consumer of the rendered ``config.yaml``; "it started" proves
little (LiteLLM drops bad deployments and guardrails with only a log line), so tests
compare ``GET /model/info`` and ``GET /v2/guardrails/list`` with what the file declares.

Everything runs on 127.0.0.1:
- the proxy from ``.venv-litellm`` (``scripts/install-litellm.sh`` creates it);
- a tiny in-process Redis stand-in (``FakeRedis``) that the cache settings are pointed at;
- every ``os.environ/NAME`` reference gets a dummy value; endpoints point at a closed
  loopback port; ``DATABASE_URL`` is never set (no Prisma needed);
- ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so nothing is downloaded at startup.

The process is always stopped (SIGTERM to its process group, SIGKILL after a grace period),
also when startup times out.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from conftest import PROJECT as REPO_ROOT

__all__ = [
    "REPO_ROOT",
    "VENV_DIR",
    "LiteLLMNotInstalled",
    "FakeRedis",
    "LiteLLMProxy",
    "ProxyStartupError",
    "env_references",
    "litellm_executable",
    "prepare_config",
]

VENV_DIR = Path(os.environ.get("LITELLM_VENV", REPO_ROOT / ".venv-litellm"))
INSTALL_HINT = "run scripts/install-litellm.sh to create .venv-litellm with the real proxy"

# An address nothing listens on: providers are never reached during a startup check.
DEAD_ENDPOINT = "http://127.0.0.1:9"
ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")

# Variables of the caller's environment that must not leak into the proxy.
_SCRUBBED_ENV_PREFIXES = ("LITELLM_", "REDIS_", "DATABASE_", "AZURE_", "OPENAI_", "ANTHROPIC_",
                          "COHERE_", "LANGFUSE_", "OTEL_", "PRESIDIO_", "SLACK_", "DISCORD_",
                          "GENERIC_", "STORE_MODEL", "DIRECT_URL", "PROMETHEUS_")


class LiteLLMNotInstalled(RuntimeError):
    """The venv with the real proxy is missing."""


class ProxyStartupError(RuntimeError):
    """The proxy exited or did not become ready in time; the message carries its log tail."""


def litellm_executable() -> Path:
    exe = VENV_DIR / "bin" / "litellm"
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise LiteLLMNotInstalled(f"{exe} not found: {INSTALL_HINT}")
    return exe


def installed_litellm_version() -> str:
    python = VENV_DIR / "bin" / "python"
    if not python.is_file():
        raise LiteLLMNotInstalled(f"{python} not found: {INSTALL_HINT}")
    out = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- Redis stand-in


class _RespError(Exception):
    pass


def _encode(value: Any, resp3: bool = False) -> bytes:
    """RESP2 encoding of a reply (maps as RESP3 maps once a client said HELLO 3)."""
    if isinstance(value, _RespError):
        return f"-{value}\r\n".encode()
    if value is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if isinstance(value, bool):
        return f":{int(value)}\r\n".encode()
    if isinstance(value, int):
        return f":{value}\r\n".encode()
    if isinstance(value, _Status):
        return f"+{value.text}\r\n".encode()
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(_encode(v, resp3) for v in value)
    if isinstance(value, dict):
        if resp3:
            return b"%%%d\r\n" % len(value) + b"".join(
                _encode(k, resp3) + _encode(v, resp3) for k, v in value.items())
        flat: list[Any] = []
        for k, v in value.items():
            flat += [k, v]
        return _encode(flat)
    raise TypeError(f"cannot encode {value!r}")


@dataclass(frozen=True)
class _Status:
    text: str


OK = _Status("OK")


class _RedisHandler(socketserver.StreamRequestHandler):
    server: "_RedisTCPServer"

    def _read_command(self) -> list[bytes] | None:
        line = self.rfile.readline()
        if not line:
            return None
        if not line.startswith(b"*"):  # inline command
            return line.strip().split()
        count = int(line[1:].strip())
        args: list[bytes] = []
        for _ in range(count):
            header = self.rfile.readline()
            if not header.startswith(b"$"):
                raise ConnectionError("bad RESP bulk header")
            size = int(header[1:].strip())
            data = self.rfile.read(size + 2)
            args.append(data[:-2])
        return args

    def handle(self) -> None:
        resp3 = False
        queued: list[list[bytes]] | None = None  # commands between MULTI and EXEC
        while True:
            try:
                args = self._read_command()
            except (ConnectionError, ValueError, OSError):
                return
            if args is None:
                return
            if not args:
                continue
            command = args[0].upper()
            if command == b"HELLO" and len(args) > 1 and args[1] == b"3":
                resp3 = True
            try:
                if command == b"MULTI":
                    queued, reply = [], OK
                elif command == b"DISCARD":
                    queued, reply = None, OK
                elif command == b"EXEC":
                    if queued is None:
                        raise _RespError("ERR EXEC without MULTI")
                    batch, queued = queued, None
                    reply = []
                    for queued_args in batch:
                        try:
                            reply.append(self.server.owner.execute(queued_args))
                        except _RespError as exc:
                            reply.append(exc)
                elif queued is not None:
                    queued.append(args)
                    reply = _Status("QUEUED")
                else:
                    reply = self.server.owner.execute(args)
            except _RespError as exc:
                reply = exc
            except Exception as exc:  # noqa: BLE001 - answer like Redis would
                reply = _RespError(f"ERR {type(exc).__name__}: {exc}")
            try:
                self.wfile.write(_encode(reply, resp3))
                self.wfile.flush()
            except OSError:
                return


class _RedisTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "FakeRedis"


class FakeRedis:
    """A small RESP2 server on 127.0.0.1 with an in-memory keyspace.

    Enough for LiteLLM's startup and for its cache (GET/SET with expiry, MGET, pipelines of
    those); unknown commands get ``-ERR unknown command`` like a real server.
    ``commands`` records every command name seen (upper case), for the tests.
    """

    def __init__(self) -> None:
        self._data: dict[bytes, Any] = {}
        self._expiry: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self.commands: list[str] = []
        self._server = _RedisTCPServer(("127.0.0.1", 0), _RedisHandler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-redis",
                                        daemon=True)

    def __enter__(self) -> "FakeRedis":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- keyspace helpers
    def _alive(self, key: bytes) -> bool:
        exp = self._expiry.get(key)
        if exp is not None and exp <= time.time():
            self._data.pop(key, None)
            self._expiry.pop(key, None)
        return key in self._data

    def _get(self, key: bytes) -> Any:
        return self._data.get(key) if self._alive(key) else None

    def _set(self, key: bytes, value: Any, ttl: float | None = None) -> None:
        self._data[key] = value
        if ttl is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = time.time() + ttl

    def execute(self, args: list[bytes]) -> Any:
        name = args[0].decode(errors="replace").upper()
        rest = args[1:]
        with self._lock:
            self.commands.append(name)
            handler = getattr(self, f"_cmd_{name.lower()}", None)
            if handler is None:
                raise _RespError(f"ERR unknown command '{name}'")
            return handler(rest)

    # -- connection
    def _cmd_hello(self, rest: list[bytes]) -> Any:
        proto = int(rest[0]) if rest else 2
        if proto not in (2, 3):
            raise _RespError("NOPROTO unsupported protocol version")
        return {"server": "redis", "version": "7.2.0", "proto": proto, "id": 1,
                "mode": "standalone", "role": "master", "modules": []}

    def _cmd_ping(self, rest: list[bytes]) -> Any:
        return rest[0] if rest else _Status("PONG")

    def _cmd_echo(self, rest: list[bytes]) -> Any:
        return rest[0]

    def _cmd_auth(self, rest: list[bytes]) -> Any:
        return OK

    def _cmd_select(self, rest: list[bytes]) -> Any:
        return OK

    def _cmd_client(self, rest: list[bytes]) -> Any:
        sub = rest[0].upper() if rest else b""
        if sub == b"ID":
            return 1
        if sub == b"GETNAME":
            return None
        return OK

    def _cmd_info(self, rest: list[bytes]) -> Any:
        return ("# Server\r\nredis_version:7.2.0\r\nredis_mode:standalone\r\n"
                "# Clients\r\nconnected_clients:1\r\n# Memory\r\nused_memory:1024\r\n"
                "# Keyspace\r\n")

    def _cmd_config(self, rest: list[bytes]) -> Any:
        return [] if rest and rest[0].upper() == b"GET" else OK

    def _cmd_dbsize(self, rest: list[bytes]) -> Any:
        return sum(1 for k in list(self._data) if self._alive(k))

    def _cmd_flushdb(self, rest: list[bytes]) -> Any:
        self._data.clear()
        self._expiry.clear()
        return OK

    _cmd_flushall = _cmd_flushdb

    # -- strings
    def _cmd_get(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        if value is not None and not isinstance(value, bytes):
            raise _RespError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return value

    def _cmd_set(self, rest: list[bytes]) -> Any:
        key, value, opts = rest[0], rest[1], [o.upper() for o in rest[2:]]
        ttl: float | None = None
        i = 0
        nx = xx = get = False
        while i < len(opts):
            opt = opts[i]
            if opt in (b"EX", b"PX"):
                amount = float(rest[2 + i + 1])
                ttl = amount if opt == b"EX" else amount / 1000
                i += 2
                continue
            nx |= opt == b"NX"
            xx |= opt == b"XX"
            get |= opt == b"GET"
            i += 1
        old = self._get(key)
        if (nx and old is not None) or (xx and old is None):
            return None
        self._set(key, value, ttl)
        return old if get else OK

    def _cmd_setex(self, rest: list[bytes]) -> Any:
        self._set(rest[0], rest[2], float(rest[1]))
        return OK

    def _cmd_psetex(self, rest: list[bytes]) -> Any:
        self._set(rest[0], rest[2], float(rest[1]) / 1000)
        return OK

    def _cmd_setnx(self, rest: list[bytes]) -> Any:
        if self._get(rest[0]) is not None:
            return 0
        self._set(rest[0], rest[1])
        return 1

    def _cmd_mget(self, rest: list[bytes]) -> Any:
        return [self._get(k) if isinstance(self._get(k), bytes) else None for k in rest]

    def _cmd_mset(self, rest: list[bytes]) -> Any:
        for k, v in zip(rest[::2], rest[1::2]):
            self._set(k, v)
        return OK

    def _cmd_incrbyfloat(self, rest: list[bytes]) -> Any:
        current = float(self._get(rest[0]) or b"0")
        new = current + float(rest[1])
        text = repr(new).encode()
        ttl = self._expiry.get(rest[0])
        self._data[rest[0]] = text
        if ttl is None:
            self._expiry.pop(rest[0], None)
        return text

    def _cmd_incrby(self, rest: list[bytes]) -> Any:
        new = int(self._get(rest[0]) or b"0") + int(rest[1])
        self._data[rest[0]] = str(new).encode()
        return new

    def _cmd_incr(self, rest: list[bytes]) -> Any:
        return self._cmd_incrby([rest[0], b"1"])

    def _cmd_decrby(self, rest: list[bytes]) -> Any:
        return self._cmd_incrby([rest[0], str(-int(rest[1])).encode()])

    # -- keys
    def _cmd_del(self, rest: list[bytes]) -> Any:
        removed = 0
        for k in rest:
            if self._alive(k):
                removed += 1
            self._data.pop(k, None)
            self._expiry.pop(k, None)
        return removed

    _cmd_unlink = _cmd_del

    def _cmd_exists(self, rest: list[bytes]) -> Any:
        return sum(1 for k in rest if self._alive(k))

    def _cmd_expire(self, rest: list[bytes]) -> Any:
        if not self._alive(rest[0]):
            return 0
        self._expiry[rest[0]] = time.time() + float(rest[1])
        return 1

    def _cmd_pexpire(self, rest: list[bytes]) -> Any:
        return self._cmd_expire([rest[0], str(float(rest[1]) / 1000).encode()])

    def _cmd_ttl(self, rest: list[bytes]) -> Any:
        if not self._alive(rest[0]):
            return -2
        exp = self._expiry.get(rest[0])
        return -1 if exp is None else max(0, int(exp - time.time()))

    def _cmd_pttl(self, rest: list[bytes]) -> Any:
        ttl = self._cmd_ttl(rest)
        return ttl if ttl < 0 else ttl * 1000

    def _cmd_type(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        kind = ("none" if value is None else "string" if isinstance(value, bytes)
                else "list" if isinstance(value, list) else "hash")
        return _Status(kind)

    def _matching(self, pattern: bytes) -> list[bytes]:
        import fnmatch
        pat = pattern.decode(errors="replace")
        return [k for k in list(self._data)
                if self._alive(k) and fnmatch.fnmatchcase(k.decode(errors="replace"), pat)]

    def _cmd_keys(self, rest: list[bytes]) -> Any:
        return self._matching(rest[0] if rest else b"*")

    def _cmd_scan(self, rest: list[bytes]) -> Any:
        pattern = b"*"
        for i, arg in enumerate(rest):
            if arg.upper() == b"MATCH" and i + 1 < len(rest):
                pattern = rest[i + 1]
        return [b"0", self._matching(pattern)]

    # -- lists (spend-update queues)
    def _list(self, key: bytes) -> list[bytes]:
        value = self._get(key)
        if value is None:
            value = []
            self._data[key] = value
        if not isinstance(value, list):
            raise _RespError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return value

    def _cmd_rpush(self, rest: list[bytes]) -> Any:
        lst = self._list(rest[0])
        lst.extend(rest[1:])
        return len(lst)

    def _cmd_lpush(self, rest: list[bytes]) -> Any:
        lst = self._list(rest[0])
        for v in rest[1:]:
            lst.insert(0, v)
        return len(lst)

    def _cmd_llen(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        return len(value) if isinstance(value, list) else 0

    def _cmd_lrange(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        if not isinstance(value, list):
            return []
        start, stop = int(rest[1]), int(rest[2])
        stop = len(value) if stop == -1 else stop + 1
        return value[start:stop]

    def _cmd_lpop(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        if not isinstance(value, list) or not value:
            return None
        if len(rest) > 1:
            count = int(rest[1])
            out, value[:] = value[:count], value[count:]
            return out
        return value.pop(0)

    def _cmd_ltrim(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        if isinstance(value, list):
            start, stop = int(rest[1]), int(rest[2])
            stop = len(value) if stop == -1 else stop + 1
            value[:] = value[start:stop]
        return OK

    # -- hashes
    def _hash(self, key: bytes) -> dict[bytes, bytes]:
        value = self._get(key)
        if value is None:
            value = {}
            self._data[key] = value
        if not isinstance(value, dict):
            raise _RespError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return value

    def _cmd_hset(self, rest: list[bytes]) -> Any:
        h = self._hash(rest[0])
        added = 0
        for k, v in zip(rest[1::2], rest[2::2]):
            added += k not in h
            h[k] = v
        return added

    def _cmd_hget(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        return value.get(rest[1]) if isinstance(value, dict) else None

    def _cmd_hgetall(self, rest: list[bytes]) -> Any:
        value = self._get(rest[0])
        return dict(value) if isinstance(value, dict) else []

    # -- scripting: the rate limiters load Lua scripts; answer "no script" so callers fall
    # back or fail soft (startup never needs them).
    def _cmd_script(self, rest: list[bytes]) -> Any:
        sub = rest[0].upper() if rest else b""
        if sub == b"LOAD":
            import hashlib
            return hashlib.sha1(rest[1]).hexdigest()
        if sub == b"EXISTS":
            return [0 for _ in rest[1:]]
        return OK

    # MULTI / EXEC / DISCARD are handled per connection in _RedisHandler.handle.


# ------------------------------------------------------------------------- config rewrite


def env_references(node: Any) -> set[str]:
    """Every NAME in an ``os.environ/NAME`` string anywhere in the config."""
    found: set[str] = set()
    if isinstance(node, dict):
        for value in node.values():
            found |= env_references(value)
    elif isinstance(node, list):
        for value in node:
            found |= env_references(value)
    elif isinstance(node, str):
        m = ENV_REF.match(node.strip())
        if m:
            found.add(m.group(1))
    return found


def dummy_env_value(name: str, *, redis_port: int, master_key: str) -> str:
    upper = name.upper()
    if upper == "LITELLM_MASTER_KEY" or upper.endswith("MASTER_KEY"):
        return master_key
    if "REDIS" in upper and "HOST" in upper:
        return "127.0.0.1"
    if "REDIS" in upper and "PORT" in upper:
        return str(redis_port)
    if upper.endswith("PORT"):
        return "9"
    if "API_VERSION" in upper:
        return "2025-01-01-preview"
    if any(part in upper for part in ("API_BASE", "ENDPOINT", "BASE_URL", "HOST", "_URL", "URI")):
        return DEAD_ENDPOINT
    if upper.endswith("SALT_KEY"):
        return "harness-salt-" + secrets.token_hex(16)
    return f"dummy-{name.lower()}"


def prepare_config(config: dict[str, Any], *, redis_port: int) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``config`` fit for a loopback startup, and a note per rewrite made.

    Only connection targets are changed: the cache / router Redis goes to the stand-in and
    ``general_settings.database_url`` is dropped (no database here). Models, credentials,
    guardrails and every other setting stay exactly as rendered.
    """
    cfg = copy.deepcopy(config)
    notes: list[str] = []
    ls = cfg.get("litellm_settings")
    if isinstance(ls, dict) and isinstance(ls.get("cache_params"), dict):
        cp = ls["cache_params"]
        if cp.get("type", "redis") == "redis":
            for key in ("url", "redis_url", "redis_startup_nodes", "sentinel_nodes",
                        "service_name", "ssl", "username"):
                if key in cp:
                    cp.pop(key)
                    notes.append(f"litellm_settings.cache_params.{key} removed")
            cp["host"], cp["port"] = "127.0.0.1", redis_port
            notes.append(f"litellm_settings.cache_params host/port -> 127.0.0.1:{redis_port}")
    rs = cfg.get("router_settings")
    if isinstance(rs, dict) and any(k in rs for k in ("redis_host", "redis_url", "redis_port")):
        rs.pop("redis_url", None)
        rs["redis_host"], rs["redis_port"] = "127.0.0.1", redis_port
        notes.append(f"router_settings redis -> 127.0.0.1:{redis_port}")
    gs = cfg.get("general_settings")
    if isinstance(gs, dict) and "database_url" in gs:
        gs.pop("database_url")
        notes.append("general_settings.database_url removed (no database in the harness)")
    return cfg, notes


# A test-only probe loaded into the proxy process through PYTHONPATH (sitecustomize): once
# litellm.proxy.proxy_server is imported it adds GET /harness/guardrails, which lists the
# guardrails LiteLLM really initialised (its in-memory registry). LiteLLM 1.80.x answers
# /v2/guardrails/list only with a database; the probe reads the same registry without one.
# The config itself is not touched.
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


@dataclass
class LiteLLMProxy:
    """Context manager running ``litellm --config`` on loopback.

    >>> with LiteLLMProxy(config) as proxy:
    ...     proxy.model_info()
    """

    config: dict[str, Any]
    startup_timeout: float = 90.0
    extra_env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None

    port: int = 0
    master_key: str = ""
    startup_seconds: float = 0.0
    rewrite_notes: list[str] = field(default_factory=list)
    env_names: list[str] = field(default_factory=list)
    redis: FakeRedis | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _log_path: Path | None = None
    guardrails_source: str = ""

    # -- lifecycle
    def __enter__(self) -> "LiteLLMProxy":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        exe = litellm_executable()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="litellm-harness-")
            self.workdir = Path(self._tmp.name)
        self.redis = FakeRedis()
        self.redis.start()
        cfg, self.rewrite_notes = prepare_config(self.config, redis_port=self.redis.port)

        gs = cfg.get("general_settings") or {}
        declared_key = gs.get("master_key") if isinstance(gs, dict) else None
        # A fresh random key for every run (never a well-known default).
        generated = "sk-harness-" + secrets.token_hex(16)
        if isinstance(declared_key, str) and not ENV_REF.match(declared_key.strip()):
            self.master_key = declared_key
        else:
            self.master_key = generated

        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
        names = sorted(env_references(cfg) - {"DATABASE_URL", "DIRECT_URL"})
        self.env_names = names
        for name in names:
            env[name] = dummy_env_value(name, redis_port=self.redis.port, master_key=self.master_key)
        env.update({
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": self.master_key,
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis.port),
            "NO_PROXY": "*",
            "no_proxy": "*",
            "PYTHONUNBUFFERED": "1",
            "HOME": str(self.workdir),
        })
        for key in ("DATABASE_URL", "DIRECT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                    "https_proxy"):
            env.pop(key, None)
        env.update(self.extra_env)

        probe_dir = self.workdir / "probe"
        probe_dir.mkdir(exist_ok=True)
        (probe_dir / "sitecustomize.py").write_text(_PROBE_SOURCE, encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(probe_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])

        config_path = self.workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        self._log_path = self.workdir / "proxy.log"
        self.port = _free_port()
        log = self._log_path.open("wb")
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                [str(exe), "--config", str(config_path), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self._wait_ready(started)
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise ProxyStartupError(
                    f"litellm exited with code {code} during startup\n{self.log_tail()}")
            try:
                status, _ = self.request("GET", "/health/liveliness", timeout=2, auth=False)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ProxyStartupError(
                    f"litellm not ready after {self.startup_timeout:.0f} s\n{self.log_tail()}")
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
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._tmp is not None:
            self._saved_log = self.log_text()
            self._tmp.cleanup()
            self._tmp = None
            self._log_path = None

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
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get_json(self, path: str) -> Any:
        status, payload = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {str(payload)[:500]}")
        return payload

    def model_info(self) -> list[dict[str, Any]]:
        return list(self.get_json("/model/info").get("data", []))

    def guardrails(self) -> list[dict[str, Any]]:
        """The guardrails the proxy initialised (names, types, modes).

        ``GET /v2/guardrails/list`` first; LiteLLM 1.80.x answers it only with a database
        (500 "Prisma client not initialized"), then the probe route reads the same
        in-memory registry that endpoint merges in.
        """
        status, payload = self.request("GET", "/v2/guardrails/list")
        if status == 200 and isinstance(payload, dict):
            self.guardrails_source = "/v2/guardrails/list"
            return list(payload.get("guardrails", []))
        if "Prisma client not initialized" not in str(payload):
            raise AssertionError(f"GET /v2/guardrails/list -> {status}: {str(payload)[:500]}")
        self.guardrails_source = "/harness/guardrails (in-memory registry)"
        return list(self.get_json("/harness/guardrails").get("guardrails", []))

    def metrics_text(self) -> str:
        status, payload = self.request("GET", "/metrics/", auth=False)
        if status != 200:
            raise AssertionError(f"GET /metrics/ -> {status}")
        return payload if isinstance(payload, str) else json.dumps(payload)

    # -- logs
    def log_text(self) -> str:
        if self._log_path is not None and self._log_path.exists():
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        return getattr(self, "_saved_log", "")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])


def iter_declared_models(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in config.get("model_list") or []:
        if isinstance(entry, dict):
            yield entry
