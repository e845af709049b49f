"""The check of a Ray cluster's address before ``ray.init``, which would otherwise retry a bad
one for minutes: the host must resolve and its port accept a TCP connection within seconds.

    >>> check_ray_address("local")
    'local'
    >>> check_ray_address("no-port")
    Traceback (most recent call last):
    ...
    ValueError: ray address 'no-port' is not HOST:PORT; accepted: 'local' (start a cluster here), 'auto' (the cluster this machine runs), or HOST:PORT / ray://HOST:PORT of a running cluster
"""

from __future__ import annotations

import socket
import threading
from typing import Any

__all__ = ["check_ray_address", "PASSED_THROUGH"]

#: addresses handed to Ray as they are: "local" starts a cluster, "auto" finds this machine's
PASSED_THROUGH = ("local", "auto")
_ACCEPTED = ("'local' (start a cluster here), 'auto' (the cluster this machine runs), "
             "or HOST:PORT / ray://HOST:PORT of a running cluster")


def _host_port(address: str) -> tuple[str, int]:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ray address {address!r} is not HOST:PORT; accepted: {_ACCEPTED}")
    return host, int(port)


def _resolve(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo with a time limit (it has none of its own; a dead DNS server can take minutes)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if "infos" not in out:
        why = f"({out['error']})" if "error" in out else f"(no answer within {timeout:g} s)"
        raise ValueError(f"host {host!r} does not resolve {why}")
    return out["infos"]


def check_ray_address(address: Any, timeout: float = 3.0) -> str:
    """``address`` if Ray can be asked to join it: ``"local"`` and ``"auto"`` as they are, else
    ``HOST:PORT`` (or ``ray://HOST:PORT``) whose host resolves and whose port accepts a TCP
    connection within ``timeout`` seconds; otherwise ``ValueError`` naming the address."""
    if not isinstance(address, str):
        raise TypeError(f"ray address must be a str, got {type(address).__name__}; accepted: {_ACCEPTED}")
    if address in PASSED_THROUGH:
        return address
    host, port = _host_port(address)
    try:
        infos = _resolve(host, port, timeout)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.settimeout(timeout)
            s.connect(sockaddr)
    except (OSError, ValueError) as e:
        raise ValueError(f"ray address {address!r}: no Ray cluster reachable there: {e}; accepted: {_ACCEPTED}") from None
    return address
