"""Proxies for upstream calls: the environment's HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY, read
once per pool, and the CONNECT tunnel an https upstream's TLS runs inside.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from routing.gateway.connect import is_address
from routing.gateway.http1 import USER_AGENT_LINE, ConnectFailed, Origin


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: `host`, `port`, and the Proxy-Authorization header line its URL's credentials make."""

    host: str
    port: int
    authorization: bytes = b""


class ProxyConfigError(ValueError):
    """A proxy variable this client cannot use (the message names it)."""


def parse_proxy(variable: str, url: str) -> Proxy:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ProxyConfigError(
            f"{variable}={parts.scheme}://...: only http:// proxies are supported (an https upstream is "
            "still end-to-end TLS, tunnelled with CONNECT through the proxy)"
        )
    if not parts.hostname:
        raise ProxyConfigError(f"{variable} has no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyConfigError(f"{variable} has an invalid port") from None
    auth = b""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"Proxy-Authorization: Basic " + base64.b64encode(pair) + b"\r\n"
    return Proxy(parts.hostname, port, auth)


class Proxies:
    """The environment's proxy variables, as urllib and httpx read them: lower-case names win over
    upper-case ones; HTTP_PROXY for http://, HTTPS_PROXY for https://, ALL_PROXY for either; NO_PROXY a
    comma-separated list of hosts (`example.com` and `.example.com` match it and its subdomains,
    `host:port` only that port, an IP address only itself, `*` everything)."""

    def __init__(self) -> None:
        found = urllib.request.getproxies_environment()
        self._no = found.get("no", "")
        self._by_scheme: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            url = found.get(scheme) or found.get("all")
            if url:
                names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
                name = next((n for n in names if os.environ.get(n) == url), names[1])
                self._by_scheme[scheme] = parse_proxy(name, url)

    @property
    def any(self) -> bool:
        return bool(self._by_scheme)

    def for_origin(self, origin: Origin) -> Proxy | None:
        """The proxy to reach `origin` through, or None to connect directly (decided once per origin)."""
        scheme, host, port = origin
        proxy = self._by_scheme.get(scheme)
        if proxy is None or not self._no:
            return proxy
        if bypassed(self._no, host, port):
            return None
        return proxy


def bypassed(no_proxy: str, host: str, port: int) -> bool:
    """Whether NO_PROXY names host:port: `*`; a name matching it or a parent domain (a leading dot
    optional); `name:port` for that port only; an IP address (IPv6 bare or in brackets) only itself."""
    host = host.lower()
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        want: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            name, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                want = int(rest[1:])
        elif entry.count(":") == 1:
            name, _, digits = entry.partition(":")
            if not digits.isdigit():
                continue
            want = int(digits)
        else:
            name = entry  # a name, an IPv4 address or a bare IPv6 address
        name = name.lstrip(".")
        if want is not None and want != port:
            continue
        if host == name or (not is_address(host) and host.endswith("." + name)):
            return True
    return False


async def tunnel(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, port: int, proxy: Proxy
) -> None:
    """CONNECT host:port through the proxy on `sock`; TLS to the provider then runs inside it."""
    name = f"[{host}]" if ":" in host else host
    request = f"CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n".encode("latin-1")
    await loop.sock_sendall(sock, request + proxy.authorization + USER_AGENT_LINE + b"\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ConnectFailed(f"the proxy {proxy.host}:{proxy.port} closed the connection on CONNECT")
        answer += data
        if len(answer) > 65536:
            raise ConnectFailed(f"the proxy {proxy.host}:{proxy.port} sent an oversized CONNECT answer")
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].startswith("2"):
        raise ConnectFailed(
            f"the proxy {proxy.host}:{proxy.port} refused to tunnel to {name}:{port}: {status_line[:100]}"
        )
