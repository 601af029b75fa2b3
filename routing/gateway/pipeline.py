"""The one pipeline every front door runs: admit (key, body, limits) -> route -> hold -> the attempt
loop with failover (routing/gateway/failover.py) -> settle (routing/gateway/settlement.py), with the
answer written whole or as a stream by the front door's writer (routing/gateway/front.py)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from billing.holds import hold_place
from routing.adapters.base import Completion, UpstreamFailure, scrub
from routing.byok import byok_candidates, byok_providers
from routing.catalog.snapshot import catalog
from routing.gateway import failover
from routing.gateway.front import Front
from routing.gateway.input_limits import check_input, parse_body
from routing.gateway.run import Run
from routing.gateway.settlement import settle, settle_before_reply
from routing.gateway.wire import new_generation_id, read_body, send_json
from routing.gateway.writers import BatchedSend, StreamWriter
from routing.ratelimit import rate_gate, with_headers
from routing.router import plan, route
from switchyard import drain, metrics
from switchyard.errors import NoProviderAvailable, SwitchyardError, store_unavailable
from switchyard.shared import setting

logger = logging.getLogger("switchyard.gateway")

# One PRNG for the router's weighted shuffle: `plan()` otherwise seeds a new Random from os.urandom
# on every request (about 2% of a request's CPU in a c=64 profile).
_rng = random.Random()


async def handle(front: Front, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One request through `front`: refused before the hold with the front door's error shape, or
    answered, and settled exactly once whatever happens after the hold."""
    started = time.monotonic()
    gen_id = new_generation_id()
    kind = front.kind
    try:
        key = await front.authenticate(scope)
        raw = await read_body(receive, setting("SWITCHYARD_MAX_BODY_BYTES"))
        body = parse_body(raw)
        check_input(body)
        req = front.parse(body)
        snapshot = await catalog.get()
        keyed = await byok_providers(key.org_id)
        if front.sticky:
            candidates = await route(
                snapshot,
                req,
                org_id=key.org_id,
                org_defaults=key.routing_defaults,
                prompt_estimate=req.bound.size // 4,
                rng=_rng,
                keyed_providers=keyed,
            )
        else:
            candidates = plan(
                snapshot,
                req,
                org_defaults=key.routing_defaults,
                prompt_estimate=req.bound.size // 4,
                rng=_rng,
                keyed_providers=keyed,
            )
        candidates = front.admit(req, await byok_candidates(key.org_id, candidates))
        # After routing, when it is known whether the request is on the free tier; in full mode the
        # gate rides in the hold's Lua call (no extra round trip), embedded it is checked here.
        gate = await rate_gate(key, free=all(c.endpoint.is_free for c in candidates))
        worst = max(front.worst_case(c.endpoint, req) for c in candidates)
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
        metrics.request_refused(kind, exc.status)
        await front.send_error(send, exc)
        return
    except Exception as exc:  # Redis or the database unreachable before the hold: a clean 503
        if (down := store_unavailable(exc)) is None:
            raise
        metrics.request_refused(kind, down.status)
        await front.send_error(send, down)
        return
    run = Run(
        gen_id=gen_id,
        kind=kind,
        key=key,
        req=req,
        candidates=candidates,
        hold=hold,
        started=started,
        record_kind=front.record_kind,
    )
    try:
        if req.stream:
            await respond_stream(front, run, send, receive)
        else:
            await respond_whole(front, run, send, receive)
    except asyncio.CancelledError:
        run.cancelled = True
        raise
    except Exception as exc:
        logger.exception("unexpected error in %s", gen_id)
        run.error = scrub(f"internal error: {type(exc).__name__}")
        raise
    finally:
        settle(run)


async def respond_whole(front: Front, run: Run, send: Any, receive: Any) -> None:
    """A whole answer: the attempt loop while watching the client, then the front door's JSON."""
    gen_header = [(b"x-generation-id", run.gen_id.encode())]
    try:
        result = await failover.complete_watched(run, receive, front.call)
    except SwitchyardError as exc:
        await settle_before_reply(run)
        await front.send_error(send, exc, gen_header)
        return
    if result is None:  # the client left
        return
    run.status = "success"
    run.usage = result.usage
    if isinstance(result, Completion):
        run.finish_reason = result.native_finish_reason
        for choice in result.choices:
            message = choice.get("message") or {}
            run.text_parts.append(message.get("content") or choice.get("text") or "")
            for call in message.get("tool_calls") or []:
                run.tool_args.append((call.get("function") or {}).get("arguments") or "")
    usage = run.final_usage()
    run.usage = usage
    assert run.winner is not None
    body = front.whole_body(run, result, usage)
    await settle_before_reply(run)
    await send_json(send, 200, body, gen_header)


async def respond_stream(front: Front, run: Run, send: Any, receive: Any) -> None:
    """A stream: the attempt loop writing through the front door's stream writer."""
    writer = front.stream_writer(run, BatchedSend(send))
    watch = failover.ClientWatch(receive)
    drain.track(watch.task)
    try:
        try:
            await failover.stream(run, writer)
        finally:
            watch.stop()
    except SwitchyardError as exc:
        if writer.started:  # pragma: no cover - failover.stream reports in-stream once started
            raise
        await settle_before_reply(run)
        await front.send_error(send, exc, [(b"x-generation-id", run.gen_id.encode())])
        return
    except asyncio.CancelledError:
        if watch.absorb():
            run.cancelled = True
            return
        if not drain.stopped_for_shutdown(watch.task):
            raise
        watch.task.uncancel()
        await _end_for_shutdown(front, run, writer, send)
        return
    finally:
        drain.untrack(watch.task)


async def _end_for_shutdown(front: Front, run: Run, writer: StreamWriter, send: Any) -> None:
    """The process is shutting down and the drain deadline passed: end the stream with an error the
    client can see, charging what was produced (switchyard/drain.py)."""
    message = "The server is shutting down; this stream was ended before it finished. Please retry."
    run.error = message
    run.finish_reason = "error"
    if writer.started and run.winner is not None:
        await writer.fail(run.winner, UpstreamFailure(503, message, retriable=False, kind="shutdown"))
    elif writer.started:
        await writer.fail_all(NoProviderAvailable(message))
    else:
        await settle_before_reply(run)
        await front.send_error(
            send, NoProviderAvailable(message), [(b"x-generation-id", run.gen_id.encode())]
        )
