"""Bare reference passthrough: raw ASGI + one shared aiohttp session, nothing else (the "Python limit").

    UPSTREAM=http://127.0.0.1:9100 uvicorn --app-dir bench ref_aiohttp:app --loop uvloop --http httptools

Forwards POST /v1/chat/completions (and /api/v1/...) body and Authorization-free headers to
$UPSTREAM, relaying status, content-type and the body as it arrives (streams pass through).
"""

import os

import aiohttp

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:9100").rstrip("/")
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    return _session


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (msg := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        if _session is not None:
            await _session.close()
        return await send({"type": "lifespan.shutdown.complete"})
    body, more = b"", True
    while more:
        msg = await receive()
        body, more = body + msg.get("body", b""), msg.get("more_body", False)
    path = "/v1" + scope["path"].split("/v1", 1)[-1]
    ctype = {"content-type": "application/json"}
    async with session().request(scope["method"], UPSTREAM + path, data=body or None, headers=ctype) as r:
        headers = [(b"content-type", r.headers.get("content-type", "application/json").encode())]
        await send({"type": "http.response.start", "status": r.status, "headers": headers})
        async for chunk in r.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
