"""`POST /api/v1/embeddings` (OpenAI's format): routed, held, metered and recorded like completions."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

from billing.holds import hold_place
from billing.money import from_units, json_number
from routing.adapters.base import Embeddings
from routing.byok import byok_candidates, byok_providers, charged_units
from routing.catalog.snapshot import catalog
from routing.gateway.app import (
    CHAT,
    Run,
    _complete_watched,
    _send_json,
    authenticate,
    new_generation_id,
    read_body,
    send_error,
)
from routing.gateway.input_limits import check_input, parse_body
from routing.gateway.validate import _models
from routing.ratelimit import rate_gate, with_headers
from routing.router import plan
from switchyard.errors import BadRequest, SwitchyardError

logger = logging.getLogger("switchyard.gateway")

MAX_INPUTS = 2048


def _fail(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", metadata={"field": field})


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def validate_embeddings(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    req: dict[str, Any] = {"_kind": "embedding", "_models": _models(body), "stream": False}
    value = body.get("input")
    if isinstance(value, str):
        if not value:
            raise _fail("input", "must not be empty")
    elif _is_tokens(value):
        pass
    elif isinstance(value, list) and value and len(value) <= MAX_INPUTS:
        for i, item in enumerate(value):
            if not (isinstance(item, str) and item) and not _is_tokens(item):
                raise _fail(f"input[{i}]", "must be a non-empty string or a list of token ids")
    else:
        raise _fail("input", f"must be a string, or a list of at most {MAX_INPUTS} strings or token arrays")
    req["input"] = value
    fmt = body.get("encoding_format")
    if fmt is not None:
        if fmt not in ("float", "base64"):
            raise _fail("encoding_format", 'must be "float" or "base64"')
        req["encoding_format"] = fmt
    dims = body.get("dimensions")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 65536:
            raise _fail("dimensions", "must be a positive integer")
        req["dimensions"] = dims
    if body.get("user") is not None:
        if not isinstance(body["user"], str):
            raise _fail("user", "must be a string")
        req["user"] = body["user"]
    if body.get("provider") is not None:
        if not isinstance(body["provider"], dict):
            raise _fail("provider", "must be an object of routing preferences")
        req["provider"] = body["provider"]
    return req


def input_bytes(req: dict[str, Any]) -> int:
    """An upper bound on the input's token count: its UTF-8 bytes (token arrays count themselves)."""
    value = req["input"]
    items = [value] if isinstance(value, str) or _is_tokens(value) else value
    return sum(len(i.encode()) if isinstance(i, str) else len(i) for i in items)


async def handle_embeddings(scope: dict[str, Any], receive: Any, send: Any) -> None:
    started = time.monotonic()
    gen_id = new_generation_id()
    try:
        key = await authenticate(scope)
        raw = await read_body(receive, settings.SWITCHYARD_MAX_BODY_BYTES)
        body = parse_body(raw)
        check_input(body)
        req = validate_embeddings(body)
        snapshot = await catalog.get()
        size = input_bytes(req)
        candidates = plan(
            snapshot,
            req,
            org_defaults=key.routing_defaults,
            prompt_estimate=size // 4,
            keyed_providers=await byok_providers(key.org_id),
        )
        candidates = await byok_candidates(key.org_id, candidates)
        gate = await rate_gate(key, free=all(c.endpoint.is_free for c in candidates))
        worst = max(
            charged_units(c.endpoint, size * c.endpoint.prompt_units + c.endpoint.request_units)
            for c in candidates
        )
        hold = await hold_place(
            org_id=key.org_id,
            key_id=key.id,
            amount_units=worst,
            limit_units=key.limit_units,
            limit_reset=key.limit_reset,
            rate=gate,
        )
        send = with_headers(send, gate)
    except SwitchyardError as exc:
        await send_error(send, exc)
        return
    run = Run(
        gen_id=gen_id,
        kind="embedding",
        key=key,
        req=req,
        candidates=candidates,
        hold=hold,
        started=started,
        front=CHAT,
    )
    gen_header = [(b"x-generation-id", gen_id.encode())]
    try:
        try:
            result: Embeddings | None = await _complete_watched(run, receive, "embed")
        except SwitchyardError as exc:
            await run.settle_before_reply()
            await send_error(send, exc, gen_header)
            return
        if result is None:  # the client left
            return
        run.status = "success"
        run.usage = result.usage
        usage = run.final_usage()
        run.usage = usage
        assert run.winner is not None
        cost = run.charge(run.winner.endpoint, usage)
        body = {
            "object": "list",
            "id": gen_id,
            "model": run.winner.model.slug,
            "provider": run.winner.endpoint.provider_name,
            "data": result.data,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "total_tokens": usage.prompt_tokens,
                "cost": json_number(from_units(cost)),
            },
        }
        await run.settle_before_reply()
        await _send_json(send, 200, body, gen_header)
    except asyncio.CancelledError:
        run.cancelled = True
        raise
    except Exception as exc:
        logger.exception("unexpected error in %s", gen_id)
        run.error = f"internal error: {type(exc).__name__}"
        raise
    finally:
        run.settle()
