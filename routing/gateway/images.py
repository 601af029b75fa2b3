"""Fetch image URLs server-side for providers that only take inline image data (Gemini), safely.

Limits: size, time and redirects (the SWITCHYARD_IMAGE_FETCH_* settings), content type, and never an
address in IANA's special-purpose registries (routing/gateway/addresses.py: private, loopback,
link-local, multicast, NAT64/6to4 wrapping any of those, ...; every resolved address is checked, on
every redirect hop). Failures are the caller's: a 400 that names the message part.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import Any
from urllib.parse import urljoin, urlsplit

from django.conf import settings

from routing.gateway.addresses import address_allowed
from routing.gateway.upstream import Pool, UpstreamError, system_resolve, tls_context

# What Gemini takes inline (and what is safe to hand on: no SVG).
ALLOWED_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
ACCEPT = {"Accept": ", ".join(sorted(ALLOWED_TYPES))}


def max_bytes() -> int:
    return int(settings.SWITCHYARD_IMAGE_FETCH_MAX_BYTES)


def fetch_seconds() -> float:
    return float(settings.SWITCHYARD_IMAGE_FETCH_TIMEOUT_SECONDS)


def max_redirects() -> int:
    return int(settings.SWITCHYARD_IMAGE_FETCH_MAX_REDIRECTS)


class ImageFetchError(Exception):
    pass


def _allow_private() -> bool:
    return bool(getattr(settings, "SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE", False))


async def _resolve(host: str, port: int) -> list[tuple[int, Any]]:
    """The system resolver's addresses for the host, refused if any of them is not public."""
    found = await system_resolve(host, port)
    if not _allow_private():
        for _family, address in found:
            if not address_allowed(address[0]):
                raise ImageFetchError(f"the host {host} resolves to a non-public address")
    return found


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageFetchError("only http(s) image URLs can be fetched")
    if not _literal(parts.hostname):
        return  # a name: the resolver checks what it resolves to
    if not _allow_private() and not address_allowed(parts.hostname):
        raise ImageFetchError(f"the address {parts.hostname} is not public")


async def _fetch(pool: Pool, url: str, timeout: float) -> tuple[str, bytes]:
    limit, redirects = max_bytes(), max_redirects()
    for _ in range(redirects + 1):
        _check_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not _literal(host) and pool.route((parts.scheme, host, port)) is not None:
            # Through a proxy, which resolves the name itself: the name is still resolved and checked
            # here first (the proxy's own egress rules are the proxy's).
            await _resolve(host, port)
        resp = await pool.request("GET", url, ACCEPT, None, connect_timeout=timeout)
        try:
            location = resp.headers.get("location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise ImageFetchError(f"the image server answered HTTP {resp.status}")
            ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype not in ALLOWED_TYPES:
                raise ImageFetchError(
                    f"content type {ctype or 'unknown'!r} is not one of {', '.join(sorted(ALLOWED_TYPES))}"
                )
            declared = resp.headers.get("content-length", "").strip()
            if declared.isdigit() and int(declared) > limit:
                raise ImageFetchError(f"the image is larger than {limit} bytes")
            data = bytearray()
            while piece := await resp.readany():
                data.extend(piece)
                if len(data) > limit:
                    raise ImageFetchError(f"the image is larger than {limit} bytes")
            return ctype, bytes(data)
        finally:
            resp.release()
    raise ImageFetchError(f"more than {redirects} redirects")


async def fetch_image(url: str, *, timeout: float | None = None) -> tuple[str, str]:
    """(media type, base64 data) for an image URL, or ImageFetchError saying why not. The whole
    download, redirects included, must end within `timeout` (default: the setting). The upstream
    client fetches it (proxy variables honoured), through a pool of its own whose resolver refuses
    non-public addresses, closed when the download ends."""
    if timeout is None:
        timeout = fetch_seconds()
    try:
        pool = Pool(asyncio.get_running_loop(), tls_context(), max_per_origin=4, resolve=_resolve)
    except ValueError as exc:  # a proxy variable the client cannot use
        raise ImageFetchError(f"the download failed ({exc})") from None
    try:
        async with asyncio.timeout(timeout):
            ctype, data = await _fetch(pool, url, timeout)
    except TimeoutError:
        raise ImageFetchError(f"the image did not download within {timeout:g}s")
    except (UpstreamError, OSError) as exc:
        raise ImageFetchError(f"the download failed ({type(exc).__name__})")
    finally:
        pool.close()
    return ctype, base64.b64encode(data).decode()


def image_urls(req: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, url) of every http(s) image part in a chat request."""
    out = []
    for i, m in enumerate(req.get("messages") or ()):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if isinstance(url, str) and not url.startswith("data:"):
                    out.append((f"messages[{i}].content[{j}].image_url.url", url))
    return out


async def inline_images(req: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Fetch every image URL of the request once (cached on the request for failover attempts).

    Raises ImageFetchError with a message naming the part that failed.
    """
    cached: dict[str, tuple[str, str]] | None = req.get("_inlined_images")
    if cached is not None:
        return cached
    found = image_urls(req)
    fetched: dict[str, tuple[str, str]] = {}
    for where, url in found:
        if url in fetched:
            continue
        try:
            fetched[url] = await fetch_image(url)
        except ImageFetchError as exc:
            raise ImageFetchError(f"{where}: could not fetch the image: {exc}")
    req["_inlined_images"] = fetched
    return fetched
