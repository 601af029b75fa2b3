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
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from routing.gateway.addresses import address_allowed

# What Gemini takes inline (and what is safe to hand on: no SVG).
ALLOWED_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


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


class _PublicResolver(AbstractResolver):
    """Resolves like the system resolver, then refuses the host if any of its addresses is not public."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not _allow_private():
            for r in results:
                if not address_allowed(r["host"]):
                    raise ImageFetchError(f"the host {host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageFetchError("only http(s) image URLs can be fetched")
    try:
        ipaddress.ip_address(parts.hostname.strip("[]"))
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not _allow_private() and not address_allowed(parts.hostname.strip("[]")):
        raise ImageFetchError(f"the address {parts.hostname} is not public")


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[str, bytes]:
    limit, redirects = max_bytes(), max_redirects()
    for _ in range(redirects + 1):
        _check_url(url)
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status != 200:
                raise ImageFetchError(f"the image server answered HTTP {resp.status}")
            ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if ctype not in ALLOWED_TYPES:
                raise ImageFetchError(
                    f"content type {ctype or 'unknown'!r} is not one of {', '.join(sorted(ALLOWED_TYPES))}"
                )
            if resp.content_length is not None and resp.content_length > limit:
                raise ImageFetchError(f"the image is larger than {limit} bytes")
            data = bytearray()
            async for piece in resp.content.iter_chunked(65536):
                data.extend(piece)
                if len(data) > limit:
                    raise ImageFetchError(f"the image is larger than {limit} bytes")
            return ctype, bytes(data)
    raise ImageFetchError(f"more than {redirects} redirects")


async def fetch_image(url: str, *, timeout: float | None = None) -> tuple[str, str]:
    """(media type, base64 data) for an image URL, or ImageFetchError saying why not. The whole
    download, redirects included, must end within `timeout` (default: the setting)."""
    if timeout is None:
        timeout = fetch_seconds()
    connector = aiohttp.TCPConnector(resolver=_PublicResolver(), limit=4, force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            async with asyncio.timeout(timeout):
                ctype, data = await _fetch(session, url)
    except TimeoutError:
        raise ImageFetchError(f"the image did not download within {timeout:g}s")
    except ImageFetchError:
        raise
    except (aiohttp.ClientError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ImageFetchError) else None
        if (
            cause is None
            and isinstance(exc, aiohttp.ClientConnectorError)
            and isinstance(exc.os_error, ImageFetchError)
        ):
            cause = exc.os_error
        raise ImageFetchError(str(cause) if cause else f"the download failed ({type(exc).__name__})")
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
