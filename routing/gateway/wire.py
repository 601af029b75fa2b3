"""The hot path's ASGI plumbing: reading a body, writing JSON and errors, the bearer key, the generation id."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from accounts.keys import KeyInfo, key_lookup
from routing.adapters.base import Usage
from switchyard import ids
from switchyard.errors import PayloadTooLarge, SwitchyardError, Unauthorized
from switchyard.logging import generation_id
from switchyard.money import from_units, json_default, json_number

Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PROCESSING = b": SWITCHYARD PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"


def new_generation_id() -> str:
    """Sortable by creation time (milliseconds first), unguessable after that. It also becomes the
    current request's id for every log line it (and the tasks it spawns) writes."""
    gen_id = f"gen-{int(time.time() * 1000):013d}-{ids.token_urlsafe(15)}"
    generation_id.set(gen_id)
    return gen_id


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=json_default)


def error_headers(exc: SwitchyardError, extra: Headers | None = None) -> Headers:
    """`extra` and the headers an error carries (Retry-After, ...), lower-cased for ASGI."""
    return [*(extra or ()), *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]


async def send_json(send: Any, status: int, body: Any, extra: Headers | None = None) -> None:
    payload = dumps(body)
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Any, exc: SwitchyardError, extra: Headers | None = None) -> None:
    await send_json(send, exc.status, exc.body(), error_headers(exc, extra))


async def read_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError("client went away while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.", metadata={"limit": limit})
        chunks.append(body)
        if not message.get("more_body"):
            return b"".join(chunks)


async def key_from_secret(secret: str) -> KeyInfo:
    info = await key_lookup(secret.strip())
    if info is None:
        raise Unauthorized("Invalid API key.")
    if not info.active():
        raise Unauthorized("This API key is disabled, deleted or expired.")
    return info


async def authenticate(scope: dict[str, Any]) -> KeyInfo:
    value = header(scope, b"authorization")
    if not value:
        raise Unauthorized("Missing API key: send `Authorization: Bearer sk-sy-v1-...`.")
    scheme, _, secret = value.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Malformed Authorization header: expected `Bearer <api key>`.")
    return await key_from_secret(secret)


def usage_json(usage: Usage, cost: int, byok: bool = False) -> dict[str, Any]:
    """An answer's `usage` in OpenAI's shape, with the cost charged (USD)."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "cost": json_number(from_units(cost)),
        "is_byok": byok,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
