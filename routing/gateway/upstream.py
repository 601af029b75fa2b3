"""One pooled upstream HTTP client per process and event loop (aiohttp: see bench/README findings)."""

from __future__ import annotations

import asyncio

import aiohttp

_sessions: dict[int, aiohttp.ClientSession] = {}


def upstream_session() -> aiohttp.ClientSession:
    """The loop's shared session; created on first use, reused for every upstream call."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(id(loop))
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(
            limit=0,  # no global cap: each provider's own limits and our timeouts bound the work
            limit_per_host=0,
            keepalive_timeout=30,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # per-call deadlines are set by the caller
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            # No state carried between calls: a cookie one provider response sets is never sent with
            # another organisation's request (and filtering a jar cost CPU on every call).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        _sessions[id(loop)] = session
    return session


async def close_upstream_sessions() -> None:
    loop = asyncio.get_running_loop()
    session = _sessions.pop(id(loop), None)
    if session is not None:
        await session.close()
