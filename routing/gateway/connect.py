"""Opening a connection's socket: the host resolved (or taken as an address), every address tried in
the RFC 8305 (Happy Eyeballs) order, the next one started when the previous failed or after
HAPPY_EYEBALLS_DELAY, the first to connect kept; and the TLS context upstream calls verify with.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from routing.gateway.http1 import ConnectFailed

# Happy Eyeballs (RFC 8305): the next address is tried when the previous one failed, or after this long.
HAPPY_EYEBALLS_DELAY = 0.25

# (family, socket address) pairs for a host and port; see Pool(resolve=...).
Resolver = Callable[[str, int], Awaitable[list[tuple[int, Any]]]]


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def interleave(addresses: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """RFC 8305 section 4: alternate address families, starting with the resolver's first choice."""
    first = [a for a in addresses if a[0] == addresses[0][0]]
    other = [a for a in addresses if a[0] != addresses[0][0]]
    out: list[tuple[int, Any]] = []
    for i in range(max(len(first), len(other))):
        out.extend(group[i] for group in (first, other) if i < len(group))
    return out


async def system_resolve(host: str, port: int) -> list[tuple[int, Any]]:
    """(family, socket address) for every address the system resolver gives for host:port."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[tuple[int, Any]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Verification on, against the system's trust store (OpenSSL's, so SSL_CERT_FILE / SSL_CERT_DIR
    replace it as they do for every OpenSSL client) plus `ca_bundle`, a PEM file of extra CAs
    (SWITCHYARD_UPSTREAM_CA_BUNDLE). A bundle that cannot be loaded is a ValueError naming it."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"SWITCHYARD_UPSTREAM_CA_BUNDLE={ca_bundle} cannot be loaded: {exc}") from None
    return context


async def open_socket(
    loop: asyncio.AbstractEventLoop, resolve: Resolver, host: str, port: int
) -> socket.socket:
    """A connected socket to host:port: every address tried in turn, the next one started when the
    previous failed or after HAPPY_EYEBALLS_DELAY (RFC 8305), the first to connect kept."""
    if is_address(host):
        family: int = socket.AF_INET6 if ":" in host else socket.AF_INET
        addresses: list[tuple[int, Any]] = [(family, (host, port))]
    else:
        try:
            addresses = interleave(await resolve(host, port))
        except socket.gaierror as exc:
            raise ConnectFailed(f"cannot resolve {host}: {exc.strerror}") from exc
        if not addresses:
            raise ConnectFailed(f"{host} has no address")
    if len(addresses) == 1:
        return await sock_connect(loop, *addresses[0])
    errors: list[OSError] = []
    pending: set[asyncio.Task[socket.socket]] = set()
    try:
        for family, address in addresses:
            pending.add(loop.create_task(sock_connect(loop, family, address)))
            done, pending = await asyncio.wait(
                pending, timeout=HAPPY_EYEBALLS_DELAY, return_when=asyncio.FIRST_COMPLETED
            )
            if (sock := _first_connected(done, errors)) is not None:
                return sock
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if (sock := _first_connected(done, errors)) is not None:
                return sock
    finally:
        for task in pending:
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()
    reasons = "; ".join(sorted({e.strerror or type(e).__name__ for e in errors}))
    raise ConnectFailed(f"no address of {host} answered ({reasons})")


async def sock_connect(loop: asyncio.AbstractEventLoop, family: int, address: Any) -> socket.socket:
    """A non-blocking TCP socket (no Nagle delay) connected to `address`."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _first_connected(done: set[asyncio.Task[socket.socket]], errors: list[OSError]) -> socket.socket | None:
    """The first connected socket among finished attempts (any others closed); failures kept in `errors`."""
    found: socket.socket | None = None
    for task in done:
        exc = task.exception()
        if exc is None:
            if found is None:
                found = task.result()
            else:
                task.result().close()
        elif isinstance(exc, OSError):
            errors.append(exc)
        else:
            raise exc
    return found
