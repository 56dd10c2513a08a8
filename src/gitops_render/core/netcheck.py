"""Can a kubeconform schema location be read? One answer for ``doctor`` and for validation.

A local location (a path template) is readable when the folder before its first template
variable exists; a remote one (``default`` is kubeconform's own GitHub location) when its host
accepts a TCP connection within a few seconds. Offline, this is what turns kubeconform's
38-second download failure into an answer in seconds.

>>> check_location("/nonexistent/{{.ResourceKind}}.json").ok
False
>>> is_remote("default"), is_remote("schemas/{{.ResourceKind}}.json")
(True, False)
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["CONNECT_TIMEOUT", "KUBECONFORM_DEFAULT", "LocationCheck", "check_location", "check_locations", "is_remote",
           "split_reachable"]

CONNECT_TIMEOUT = 3.0
"""Seconds a schema host gets to accept a connection."""

KUBECONFORM_DEFAULT = "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/"
"""What kubeconform's ``-schema-location default`` downloads from."""


@dataclass(frozen=True)
class LocationCheck:
    """The answer for one location: readable or not, and why (for messages)."""

    location: str
    ok: bool
    detail: str
    remote: bool


def is_remote(location: str) -> bool:
    """``default`` or an http(s) URL (kubeconform downloads it)."""
    return location == "default" or location.startswith(("http://", "https://"))


def check_location(location: str, *, timeout: float = CONNECT_TIMEOUT, base: Path | None = None) -> LocationCheck:
    """Whether ``location`` can be read (a relative local location is taken relative to ``base``)."""
    url = KUBECONFORM_DEFAULT if location == "default" else location
    if "://" not in url:
        prefix = url.split("{{", 1)[0]  # the fixed part before kubeconform's first template variable
        folder = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
        if base is not None and not folder.is_absolute():
            folder = base / folder
        if folder.is_dir():
            return LocationCheck(location, True, "local", remote=False)
        return LocationCheck(location, False, f"{folder} does not exist", remote=False)
    parsed = urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return LocationCheck(location, True, f"{host} reachable", remote=True)
    except OSError as exc:
        return LocationCheck(location, False, f"{host} unreachable ({exc.strerror or type(exc).__name__})",
                             remote=True)


def check_locations(locations: Iterable[str], *, timeout: float = CONNECT_TIMEOUT,
                    base: Path | None = None) -> list[LocationCheck]:
    """:func:`check_location` for every location, the remote ones at the same time."""
    items = list(dict.fromkeys(locations))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(items)))) as pool:
        return list(pool.map(lambda loc: check_location(loc, timeout=timeout, base=base), items))


def split_reachable(locations: Iterable[str], *, base: Path | None = None,
                    timeout: float = CONNECT_TIMEOUT) -> tuple[tuple[str, ...], list[LocationCheck]]:
    """``(locations to use, remote locations that do not answer)``; local ones are always kept."""
    ordered = tuple(locations)
    remote = [loc for loc in ordered if is_remote(loc)]
    unreachable = [c for c in check_locations(remote, timeout=timeout, base=base) if not c.ok] if remote else []
    dead = {c.location for c in unreachable}
    return tuple(loc for loc in ordered if loc not in dead), unreachable
