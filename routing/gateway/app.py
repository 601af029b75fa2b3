"""The ASGI application: a lean async handler for the completion hot path, Django for everything else.

Why not a Django view: on this box stock Django ASGI spends ~60% of a request in per-request thread
hops (sync middleware, DB signal receivers, response.close) and DRF buffers streams whole (see the
README's performance section). This handler never touches the ORM or sync code on a normal request:
the key, the catalog and the balance are answered from memory and Redis, with two Redis round trips
(place the hold; settle it and queue the usage event in one Lua call).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from accounts.keys import KeyInfo, key_lookup
from billing.holds import HoldRef, hold_cap, hold_place, hold_settle, hold_settle_now, liveness_start
from billing.money import from_units, json_default, json_number
from billing.recovery import usage_kept, watch_start
from billing.usage import usage_event_bound
from routing.adapters.base import CallContext, Completion, UpstreamFailure, Usage, platform_key, scrub
from routing.adapters.registry import adapter_for
from routing.byok import (
    BYOK_FAULTS,
    byok_api_key,
    byok_candidates,
    byok_failure,
    byok_providers,
    is_byok,
)
from routing.catalog.snapshot import EndpointInfo, catalog
from routing.gateway import tokens
from routing.gateway.cost import cost_units, worst_case_units
from routing.gateway.input_limits import check_input, parse_body
from routing.gateway.upstream import close_upstream_pool
from routing.gateway.validate import validate_completion
from routing.health import Outcome
from routing.ratelimit import rate_gate, tokens_charge_later, with_headers
from routing.router import Candidate, route
from switchyard import drain, durability, ids, metrics
from switchyard.errors import (
    NoProviderAvailable,
    PayloadTooLarge,
    RequestTimeout,
    SwitchyardError,
    Unauthorized,
    UpstreamError,
    error_body,
    store_unavailable,
)
from switchyard.logging import generation_id
from switchyard.shared import async_redis, drain_detached, redis_enabled, setting, spawn_detached

logger = logging.getLogger("switchyard.gateway")

JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PROCESSING = b": SWITCHYARD PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"

# One PRNG for the router's weighted shuffle: `plan()` otherwise seeds a new Random from os.urandom
# on every request (about 2% of a request's CPU in a c=64 profile).
_rng = random.Random()
# Failures that say the request was bad, not the provider: they never count against its health, which
# every organisation's routing shares. An organisation's own key failing (BYOK_FAULTS) is not the
# provider's fault either, nor a request that could not be sent at all (`bad_header`).
CALLER_FAULTS = {"bad_request", "too_large", "unsupported", "cancelled", "bad_header", *BYOK_FAULTS}
# Settlement is awaited before a response's last bytes (so a client that has read the whole answer
# finds its hold settled and its usage event queued), but never for longer than this.
SETTLE_BEFORE_REPLY_SECONDS = 1.0


def _capped(seconds: float, name: str) -> float:
    """A provider's catalog timeout, capped by the deployment-wide setting when that is set (> 0)."""
    cap = float(setting(name) or 0)
    return min(seconds, cap) if cap > 0 else seconds


def new_generation_id() -> str:
    """Sortable by creation time (milliseconds first), unguessable after that. It also becomes the
    current request's id for every log line it (and the tasks it spawns) writes."""
    gen_id = f"gen-{int(time.time() * 1000):013d}-{ids.token_urlsafe(15)}"
    generation_id.set(gen_id)
    return gen_id


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=json_default)


async def _send_json(
    send: Any, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = dumps(body)
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Any, exc: SwitchyardError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = list(extra or [])
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await _send_json(send, exc.status, exc.body(), headers)


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


async def authenticate(scope: dict[str, Any]) -> KeyInfo:
    header = _header(scope, b"authorization")
    if not header:
        raise Unauthorized("Missing API key: send `Authorization: Bearer sk-sy-v1-...`.")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Malformed Authorization header: expected `Bearer <api key>`.")
    info = await key_lookup(secret.strip())
    if info is None:
        raise Unauthorized("Invalid API key.")
    if not info.active():
        raise Unauthorized("This API key is disabled, deleted or expired.")
    return info


def _usage_json(usage: Usage, cost: int, byok: bool = False) -> dict[str, Any]:
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


class Run:
    """One request's state from routing to settlement."""

    def __init__(
        self,
        *,
        gen_id: str,
        kind: str,
        key: KeyInfo,
        req: dict[str, Any],
        candidates: list[Candidate],
        hold: HoldRef,
        started: float,
        front: Front | None = None,
    ) -> None:
        self.gen_id = gen_id
        self.kind = kind
        self.front = front or CHAT
        self.key = key
        self.req = req
        self.candidates = candidates
        self.hold = hold
        self.started = started
        self.created = int(time.time())
        self.attempts: list[dict[str, Any]] = []
        self.winner: Candidate | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.status = "error"
        self.error = ""
        self.cancelled = False
        self.first_token_at: float | None = None
        self.text_parts: list[str] = []
        self.tool_args: list[str] = []
        self.settled = False
        self.handed_over = False  # the settlement is written to Redis (or queued, embedded)
        self._settle_task: asyncio.Task[Any] | None = None

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    def context(self, cand: Candidate) -> CallContext:
        ep = cand.endpoint
        now = time.monotonic()
        return CallContext(
            endpoint=ep,
            api_key=platform_key(ep, byok_api_key(ep)),
            started=now,
            deadline=now + _capped(ep.timeout_total, "SWITCHYARD_TOTAL_TIMEOUT_SECONDS"),
            connect=_capped(ep.timeout_connect, "SWITCHYARD_CONNECT_TIMEOUT_SECONDS"),
            first_byte=_capped(ep.timeout_first_byte, "SWITCHYARD_FIRST_BYTE_TIMEOUT_SECONDS"),
            idle=_capped(ep.timeout_between_chunks, "SWITCHYARD_IDLE_TIMEOUT_SECONDS"),
        )

    def record_cancelled(self, cand: Candidate, began: float) -> None:
        """The client left while this attempt ran: not the provider's fault (see CALLER_FAULTS)."""
        failure = UpstreamFailure(499, "The client disconnected.", retriable=False, kind="cancelled")
        self.record(cand, began, ok=False, failure=failure)

    def record(
        self, cand: Candidate, began: float, *, ok: bool, failure: UpstreamFailure | None = None
    ) -> None:
        if failure is not None:
            byok_failure(cand.endpoint, failure)  # names the org's own key, not the platform's
        entry: dict[str, Any] = {
            "provider": cand.endpoint.provider_slug,
            "model": cand.model.slug,
            "endpoint_id": cand.endpoint.id,
            "status": 200 if ok else failure.status if failure else 0,
            "latency_ms": int((time.monotonic() - began) * 1000),
            "began": began,
        }
        if failure is not None:
            entry["error"] = failure.message
            entry["reason"] = failure.kind
        if is_byok(cand.endpoint):
            entry["byok"] = True
        self.attempts.append(entry)

    def public_attempts(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in a.items() if k != "began"} for a in self.attempts]

    def outcomes(self, usage: Usage | None) -> list[Outcome]:
        """Health records for the attempts; a provider is not blamed for a request's own fault."""
        out = []
        for a in self.attempts:
            if a.get("reason") in CALLER_FAULTS:
                continue
            ok = a["status"] == 200
            outcome = Outcome(endpoint_id=a["endpoint_id"], ok=ok, latency_ms=a["latency_ms"])
            if ok and self.first_token_at is not None:
                ttft = int((self.first_token_at - a["began"]) * 1000)
                outcome.ttft_ms = outcome.latency_ms = max(ttft, 0)
                outcome.tokens = usage.completion_tokens if usage else 0
                outcome.generation_ms = max(a["latency_ms"] - ttft, 1)
            out.append(outcome)
        return out

    def final_usage(self) -> Usage:
        if self.usage is not None:
            return self.usage
        # The provider reported nothing: count with a real tokenizer and say the numbers are estimated.
        if self.kind == "embedding":
            inputs = self.req["input"] if isinstance(self.req["input"], list) else [self.req["input"]]
            prompt = sum(tokens.count_text(t) if isinstance(t, str) else len(t) for t in inputs)
            return Usage(prompt_tokens=prompt, estimated=True)
        if self.kind == "completion":
            prompt = tokens.count_text(self.req["prompt"])
        else:
            prompt = tokens.count_messages(self.req["messages"])
        completion = tokens.count_text("".join(self.text_parts)) + tokens.count_text("".join(self.tool_args))
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            estimated=True,
            images=tokens.count_images(self.req),
        )

    def charge(self, ep: EndpointInfo, usage: Usage) -> int:
        """What `usage` is charged at `ep`: its exact cost, never more than the hold (billing.holds.hold_cap).
        The cost the answer reports, and the one settlement charges."""
        return hold_cap(self.hold, cost_units(ep, usage))[0]

    def settle(self) -> asyncio.Task[Any]:
        """Charge exactly once, whatever happened to the client. The settlement is handed to Redis here
        (written to its socket before this returns, when the connection is up) and finished by a task
        detached from the request's: a client that leaves cancels the request, never the charge.

        Idempotent: a second call returns the first call's task."""
        if self._settle_task is None:
            self.settled = True
            event, usage, settlement = self._settlement()
            try:
                handed = hold_settle_now(self.hold, **settlement)
            except Exception:  # Redis refused the write: the task retries (see _settle)
                logger.exception("settlement of %s could not be handed over", self.gen_id)
                handed = None
            self.handed_over = handed is not None
            self._settle_task = spawn_detached(self._settle(event, usage, settlement, handed))
        return self._settle_task

    async def settle_before_reply(self) -> None:
        """Settle before the client can see the response end. Handing the settlement to Redis is
        enough: Redis runs a connection's commands in order, and this process's later holds follow it
        on the same connection, so no later request sees this credit still held (README "Settlement
        before the last byte"). Waiting for Redis's reply would add a round trip to every response.
        When it could not be handed over at once (no live connection), wait for it, bounded."""
        task = self.settle()
        if not self.handed_over and not task.done():
            await asyncio.wait({task}, timeout=SETTLE_BEFORE_REPLY_SECONDS)

    def _settlement(self) -> tuple[dict[str, Any], Usage | None, dict[str, Any]]:
        """The usage event, the usage charged, and hold_settle's arguments."""
        ended = time.monotonic()
        usage = cost = None
        uncharged = 0
        if self.winner is not None and (
            self.status == "success" or self.first_token_at is not None or self.usage is not None
        ):
            usage = self.final_usage()
            cost, uncharged = hold_cap(self.hold, cost_units(self.winner.endpoint, usage))
            if uncharged:
                logger.warning(
                    "%s: the provider reported %d picodollars beyond the hold of %d; not charged",
                    self.gen_id,
                    uncharged,
                    self.hold.amount_units,
                )
        ep = self.winner.endpoint if self.winner else None
        event = {
            "gen": self.gen_id,
            "org": self.key.org_id,
            "key": self.key.id,
            "hold": self.hold.id,
            "embedded": not redis_enabled(),
            "model": self.winner.model.slug if self.winner else self.req["_models"][0],
            "provider": ep.provider_slug if ep else "",
            "endpoint": ep.id if ep else None,
            "byok": is_byok(ep),
            "kind": self.front.record_kind or self.kind,
            "status": "cancelled" if self.cancelled else self.status,
            "streamed": self.req["stream"],
            "cancelled": self.cancelled,
            "finish_reason": self.finish_reason,
            "native_finish_reason": self.finish_reason,
            "tokens": {
                "prompt": usage.prompt_tokens,
                "completion": usage.completion_tokens,
                "cached": usage.cached_tokens,
                "cache_write": usage.cache_write_tokens,
                "reasoning": usage.reasoning_tokens,
            }
            if usage
            else {},
            "estimated": bool(usage and usage.estimated),
            "cost": cost or 0,
            "uncharged": uncharged,
            "latency_ms": int((ended - self.started) * 1000),
            "ttft_ms": int((self.first_token_at - self.started) * 1000) if self.first_token_at else None,
            "generation_time_ms": int((ended - self.first_token_at) * 1000) if self.first_token_at else None,
            "error": self.error,
            "attempts": self.public_attempts(),
            "created": self.created,
        }
        usage_event_bound(event)  # provider text (errors, finish reasons) is untrusted: cleaned, bounded
        settlement = {
            "cost_units": cost or 0,
            "event": orjson.dumps(event),
            "outcomes": self.outcomes(usage),
            "generation_id": self.gen_id,
        }
        return event, usage, settlement

    async def _settle(
        self,
        event: dict[str, Any],
        usage: Usage | None,
        settlement: dict[str, Any],
        handed: Awaitable[Any] | None,
    ) -> None:
        metrics.request_settled(event)
        if usage is not None:
            tokens_charge_later(self.key, usage.prompt_tokens + usage.completion_tokens)
        # Failure policy: a settlement that cannot reach Redis is retried with backoff for
        # SETTLE_RETRY_SECONDS (the Lua call is idempotent on the generation id), so a request answered
        # while Redis blinked is still charged once when it returns.
        deadline = time.monotonic() + float(setting("SWITCHYARD_SETTLE_RETRY_SECONDS"))
        attempt = 0
        while True:
            attempt += 1
            try:
                # First the reply to the call settle() wrote, then (after a failure) calls anew.
                await (handed if handed is not None else hold_settle(self.hold, **settlement))
                if redis_enabled():
                    usage_kept(settlement["event"])  # until surely drained (billing/recovery.py)
                return
            except Exception:
                handed = None
                if attempt <= 3:
                    logger.exception("settlement of %s failed (attempt %d)", self.gen_id, attempt)
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(0.2 * 2 ** min(attempt, 5), 5.0))
        logger.error(
            "could not settle %s; its hold will expire and the auditor will see it: %s", self.gen_id, event
        )


async def _redis_refused() -> str | None:
    """Full mode will not start on a Redis that keeps no append-only file unless the risk is accepted
    (switchyard/durability.py); an unreachable Redis is left to /readyz and the failure policy."""
    if not redis_enabled():
        return None
    try:
        kept = await asyncio.wait_for(durability.check(async_redis()), 5.0)
    except Exception:
        logger.warning("could not check Redis persistence at start-up; /readyz keeps checking", exc_info=True)
        return None
    if kept["problem"]:
        logger.error("refusing to start: %s", kept["problem"])
    return kept["problem"]


async def _watch_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _ClientWatch:
    """Cancels the request's own task when its client disconnects, so the upstream call stops at once.

    The work runs inline in the request's task (no second task per request, no asyncio.wait): one
    watcher task waits on `receive` and, when the client leaves, cancels the request's task. `left`
    tells that cancellation apart from any other (server shutdown, drain deadline)."""

    __slots__ = ("active", "left", "task", "watcher")

    def __init__(self, receive: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.left = False
        self.active = True
        self.watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive))
        self.watcher.add_done_callback(self._gone)

    def _gone(self, watcher: asyncio.Task[Any]) -> None:
        if not self.active or watcher.cancelled() or watcher.exception() is not None:
            return
        self.left = True
        self.task.cancel()

    def stop(self) -> None:
        self.active = False
        if not self.watcher.done():
            self.watcher.cancel()

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancellation undone) when the client left."""
        if not self.left:
            return False
        self.task.uncancel()
        return True


async def _complete(run: Run, method: str = "complete") -> Any:
    """Call each candidate's adapter (`complete`, or `embed`) until one answers; failover in between."""
    last: UpstreamFailure | None = None
    for cand in run.candidates:
        adapter = adapter_for(cand.endpoint.api_format)
        if adapter is None:
            continue
        began = time.monotonic()
        try:
            completion = await getattr(adapter, method)(run.context(cand), run.req)
        except asyncio.CancelledError:
            run.record_cancelled(cand, began)
            raise
        except UpstreamFailure as failure:
            run.record(cand, began, ok=False, failure=failure)
            last = failure
            if not failure.retriable:
                break
            continue
        run.record(cand, began, ok=True)
        run.winner = cand
        run.first_token_at = time.monotonic()
        return completion
    raise _all_failed(run, last)


def _all_failed(run: Run, last: UpstreamFailure | None) -> SwitchyardError:
    tried = [f"{a['provider']}: {a.get('error', '')}" for a in run.attempts]
    metadata: dict[str, Any] = {"generation_id": run.gen_id, "attempts": run.public_attempts()}
    if last is None:
        run.error = "No provider with a supported wire format was available."
        return NoProviderAvailable(run.error, metadata=metadata)
    run.error = "; ".join(tried)
    if not last.retriable:
        metadata["provider_name"] = run.attempts[-1]["provider"]
        return SwitchyardError(last.message, status=last.status, code=last.kind, metadata=metadata)
    metadata["provider_name"] = run.attempts[-1]["provider"]
    if all(a.get("reason") == "unsupported" for a in run.attempts):
        # No endpoint can take this kind of request at all: the request is at fault, not a provider.
        return SwitchyardError(
            f"No endpoint of this model supports this request. {last.message}",
            status=400,
            code="unsupported",
            metadata=metadata,
        )
    if all(a.get("reason") == "timeout" for a in run.attempts):
        return RequestTimeout(
            f"Every provider timed out. Tried {len(run.attempts)}: " + "; ".join(tried), metadata=metadata
        )
    headers = {"Retry-After": last.retry_after} if last.retry_after else None
    return UpstreamError(
        f"Every provider failed. Tried {len(run.attempts)}: " + "; ".join(tried),
        metadata=metadata,
        headers=headers,
    )


async def _complete_watched(run: Run, receive: Any, method: str = "complete") -> Any:
    """`_complete` while watching the client: None, and the run marked cancelled, when it left
    (the upstream call is cancelled at once). A whole answer's and an embeddings answer's first step."""
    watch = _ClientWatch(receive)
    try:
        try:
            return await _complete(run, method)
        finally:
            watch.stop()
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        run.cancelled = True
        return None


async def _respond_whole(run: Run, send: Any, receive: Any) -> None:
    gen_header = [(b"x-generation-id", run.gen_id.encode())]
    try:
        completion = await _complete_watched(run, receive)
    except SwitchyardError as exc:
        await run.settle_before_reply()
        await run.front.send_error(send, exc, gen_header)
        return
    if completion is None:
        return
    run.status = "success"
    run.usage = completion.usage
    run.finish_reason = completion.native_finish_reason
    for choice in completion.choices:
        message = choice.get("message") or {}
        run.text_parts.append(message.get("content") or choice.get("text") or "")
        for call in message.get("tool_calls") or []:
            run.tool_args.append((call.get("function") or {}).get("arguments") or "")
    usage = run.final_usage()
    run.usage = usage
    assert run.winner is not None
    body = run.front.whole_body(run, completion, usage)
    await run.settle_before_reply()
    await _send_json(send, 200, body, gen_header)


class _BatchedSend:
    """ASGI `send` for a stream: while the upstream adapter is still parsing bytes it already has
    (between CallContext.on_data and on_idle), body parts are held back and go out as one write when
    it is about to wait on the network again, or with the response's last part. A provider that
    trickles tokens still gets every event out at once; a burst of events costs one write, not one
    per event (uvicorn does a transport.write per body message)."""

    __slots__ = ("holding", "pending", "send")

    def __init__(self, send: Any) -> None:
        self.send = send
        self.pending: list[bytes] = []
        self.holding = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if self.holding and message.get("more_body"):
                self.pending.append(message.get("body", b""))
                return
            if self.pending:
                message = {**message, "body": b"".join(self.pending) + message.get("body", b"")}
                self.pending = []
        await self.send(message)

    def hold(self) -> None:
        self.holding = True

    async def flush(self) -> None:
        self.holding = False
        if self.pending:
            body = b"".join(self.pending)
            self.pending = []
            await self.send({"type": "http.response.body", "body": body, "more_body": True})


class _StreamWriter:
    """Sends SSE for one request: headers once, OpenAI chunks, keep-alive comments, the closing lines."""

    def __init__(self, run: Run, send: Any) -> None:
        self.run = run
        self.send = send
        self.started = False
        # The bytes every chunk from one candidate starts with, up to its choices (see chunk_bytes).
        self._prefix = b""
        self._prefix_for: Candidate | None = None

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*SSE_HEADERS, (b"x-generation-id", self.run.gen_id.encode())],
                }
            )

    async def raw(self, data: bytes) -> None:
        await self.start()
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def chunk(self, cand: Candidate, payload: dict[str, Any]) -> None:
        """One translated chunk from the provider (OpenAI chunk dict) goes out."""
        await self.raw(self.chunk_bytes(cand, payload))

    async def fail(self, cand: Candidate, failure: UpstreamFailure) -> None:
        """The provider failed after the first byte: say so in-stream and end it."""
        err = error_body(failure.status, failure.message, {"provider_name": cand.endpoint.provider_name})
        payload = {**err, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
        await self.raw(self.chunk_bytes(cand, payload))
        await self.finish(cand)

    async def fail_all(self, exc: SwitchyardError) -> None:
        """Every provider failed after headers (processing comments) went out."""
        await self.raw(b"data: " + dumps({**exc.body(), "id": self.run.gen_id}) + b"\n\n")
        await self.end()

    async def finish(self, cand: Candidate) -> None:
        await _stream_tail(self.run, self, cand)

    def _head(self, cand: Candidate) -> dict[str, Any]:
        run = self.run
        return {
            "id": run.gen_id,
            "object": run.object_name + ("" if run.kind == "completion" else ".chunk"),
            "created": run.created,
            "model": cand.model.slug,
            "provider": cand.endpoint.provider_name,
        }

    def chunk_bytes(self, cand: Candidate, payload: dict[str, Any]) -> bytes:
        if len(payload) == 1 and "choices" in payload:
            # The common chunk, once per token: the fixed head is serialised once per candidate and
            # only the choices per chunk (the same bytes as serialising the whole object).
            if self._prefix_for is not cand:
                self._prefix = b"data: " + dumps(self._head(cand))[:-1] + b',"choices":'
                self._prefix_for = cand
            return self._prefix + dumps(payload["choices"]) + b"}\n\n"
        return b"data: " + dumps({**self._head(cand), **payload}) + b"\n\n"

    async def end(self) -> None:
        await self.run.settle_before_reply()
        await self.send({"type": "http.response.body", "body": DONE, "more_body": False})


class _Processing:
    """Sends `: SWITCHYARD PROCESSING` every `interval` while the request's task waits for the first
    upstream event. A timer, not a second task racing the wait: the comment is written by a short
    task only when the timer fires (a provider slower than the interval), which is rare."""

    __slots__ = ("interval", "loop", "timer", "writer", "writing")

    def __init__(self, writer: _StreamWriter, interval: float) -> None:
        self.writer = writer
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.writing: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(interval, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if self.writing is None or self.writing.done():
            self.writing = self.loop.create_task(self.writer.raw(PROCESSING))
        self.timer = self.loop.call_later(self.interval, self._fire)

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.writing is not None and not self.writing.done():
            try:
                await asyncio.shield(self.writing)  # never interleave a comment with the first chunk
            except Exception:
                pass


async def _first_item(agen: Any, writer: _StreamWriter, interval: float) -> Any:
    """Wait for a stream's first item, sending processing comments while the provider thinks."""
    comments = _Processing(writer, interval)
    try:
        return await agen.__anext__()
    finally:
        await comments.stop()


async def _stream(run: Run, writer: _StreamWriter) -> None:
    interval = float(setting("SWITCHYARD_PROCESSING_COMMENT_SECONDS"))
    last: UpstreamFailure | None = None
    for cand in run.candidates:
        adapter = adapter_for(cand.endpoint.api_format)
        if adapter is None:
            continue
        began = time.monotonic()
        ctx = run.context(cand)
        batched = writer.send if isinstance(writer.send, _BatchedSend) else None
        if batched is not None:
            await batched.flush()  # nothing is held between attempts
            ctx.on_data, ctx.on_idle = batched.hold, batched.flush
        agen = adapter.stream(ctx, run.req)
        forwarded = False
        run.usage = None
        try:
            try:
                item = await _first_item(agen, writer, interval)
            except StopAsyncIteration:
                raise UpstreamFailure(
                    502, f"{cand.endpoint.provider_name} sent an empty stream.", retriable=True, kind="empty"
                )
            run.winner = cand
            # OpenAI chunks out of an OpenAI-format front: while the adapter is parsing bytes it already
            # has (the batched send is holding), a chunk is appended to the pending write without an
            # await chain per event. Other fronts translate each chunk in their writer.
            direct = batched if type(writer) is _StreamWriter else None
            while True:
                if isinstance(item, Usage):
                    run.usage = item
                elif direct is not None and direct.holding and writer.started:
                    _observe(run, item)
                    direct.pending.append(writer.chunk_bytes(cand, item))
                    forwarded = True
                else:
                    await _forward(run, writer, cand, item)
                    forwarded = True
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    break
        except asyncio.CancelledError:
            run.record_cancelled(cand, began)
            raise
        except UpstreamFailure as failure:
            run.record(cand, began, ok=False, failure=failure)
            last = failure
            if forwarded or run.first_token_at is not None:
                # After the first byte there is no failover: say so in the stream, charge what was produced.
                run.error = failure.message
                run.finish_reason = "error"
                await writer.fail(cand, failure)
                return
            run.winner = None
            if not failure.retriable:
                break
            continue
        finally:
            await agen.aclose()
        run.record(cand, began, ok=True)
        run.status = "success"
        await writer.finish(cand)
        return
    exc = _all_failed(run, last)
    if not writer.started:
        raise exc
    # Headers already went out with processing comments: report the failure in-stream.
    await writer.fail_all(exc)


async def _forward(run: Run, writer: _StreamWriter, cand: Candidate, item: dict[str, Any]) -> None:
    _observe(run, item)
    await writer.chunk(cand, item)


def _observe(run: Run, item: dict[str, Any]) -> None:
    """What the run keeps of a chunk: its text and tool arguments (for an estimate when the provider
    reports no usage), the finish reason and when the first token came."""
    for choice in item.get("choices") or ():
        delta = choice.get("delta") or {}
        text = delta.get("content") if run.kind == "chat" else choice.get("text")
        if text:
            run.text_parts.append(text)
        for call in delta.get("tool_calls") or ():
            run.tool_args.append((call.get("function") or {}).get("arguments") or "")
        if choice.get("finish_reason"):
            run.finish_reason = choice["finish_reason"]
    if run.first_token_at is None:
        run.first_token_at = time.monotonic()


async def _stream_tail(run: Run, writer: _StreamWriter, cand: Candidate) -> None:
    req = run.req
    wants_usage = bool(
        (req.get("stream_options") or {}).get("include_usage") or (req.get("usage") or {}).get("include")
    )
    if wants_usage:
        usage = run.final_usage()
        run.usage = usage
        await writer.raw(
            writer.chunk_bytes(
                cand,
                {
                    "choices": [],
                    "usage": _usage_json(usage, run.charge(cand.endpoint, usage), is_byok(cand.endpoint)),
                },
            )
        )
    await writer.end()


async def _respond_stream(run: Run, send: Any, receive: Any) -> None:
    writer = run.front.stream_writer(run, _BatchedSend(send))
    watch = _ClientWatch(receive)
    drain.track(watch.task)
    try:
        try:
            await _stream(run, writer)
        finally:
            watch.stop()
    except SwitchyardError as exc:
        if writer.started:  # pragma: no cover - _stream reports in-stream once started
            raise
        await run.settle_before_reply()
        await run.front.send_error(send, exc, [(b"x-generation-id", run.gen_id.encode())])
        return
    except asyncio.CancelledError:
        if watch.absorb():
            run.cancelled = True
            return
        if not drain.stopped_for_shutdown(watch.task):
            raise
        watch.task.uncancel()
        await _end_for_shutdown(run, writer, send)
        return
    finally:
        drain.untrack(watch.task)


async def _end_for_shutdown(run: Run, writer: _StreamWriter, send: Any) -> None:
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
        await run.settle_before_reply()
        await run.front.send_error(
            send, NoProviderAvailable(message), [(b"x-generation-id", run.gen_id.encode())]
        )


class Front:
    """A front door to the completion machinery: how a request is read and how answers and errors are
    written. The default is OpenAI chat/text completions; other API shapes (Anthropic's /messages)
    translate their request into the internal OpenAI-style `req` and override the writers."""

    record_kind: str | None = None  # the generation record's kind when it differs from `kind`

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def authenticate(self, scope: dict[str, Any]) -> KeyInfo:
        return await authenticate(scope)

    def parse(self, body: Any) -> dict[str, Any]:
        return validate_completion(body, kind=self.kind)

    def admit(self, req: dict[str, Any], candidates: list[Candidate]) -> list[Candidate]:
        """The routed candidates this front door can serve `req` with (all of them by default)."""
        return candidates

    def prompt_bound(self, req: dict[str, Any]) -> tokens.PromptBound:
        """What the hold must cover of everything `req` can send upstream (measured once)."""
        return tokens.prompt_bound(req)

    async def send_error(
        self, send: Any, exc: SwitchyardError, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send_error(send, exc, extra)

    def whole_body(self, run: Run, completion: Completion, usage: Usage) -> dict[str, Any]:
        assert run.winner is not None
        return {
            "id": run.gen_id,
            "object": run.object_name,
            "created": run.created,
            "model": run.winner.model.slug,
            "provider": run.winner.endpoint.provider_name,
            "system_fingerprint": None,
            "choices": completion.choices,
            "usage": _usage_json(usage, run.charge(run.winner.endpoint, usage), is_byok(run.winner.endpoint)),
        }

    def stream_writer(self, run: Run, send: Any) -> _StreamWriter:
        return _StreamWriter(run, send)


CHAT = Front("chat")
TEXT = Front("completion")


async def handle_completion(scope: dict[str, Any], receive: Any, send: Any, kind: str) -> None:
    await handle_front(scope, receive, send, TEXT if kind == "completion" else CHAT)


async def handle_front(scope: dict[str, Any], receive: Any, send: Any, front: Front) -> None:
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
        bound = front.prompt_bound(req)
        candidates = await route(
            snapshot,
            req,
            org_id=key.org_id,
            org_defaults=key.routing_defaults,
            prompt_estimate=bound.size // 4,
            rng=_rng,
            keyed_providers=await byok_providers(key.org_id),
        )
        candidates = front.admit(req, await byok_candidates(key.org_id, candidates))
        # After routing, when it is known whether the request is on the free tier; in full mode the
        # gate rides in the hold's Lua call (no extra round trip), embedded it is checked here.
        gate = await rate_gate(key, free=all(c.endpoint.is_free for c in candidates))
        worst = max(worst_case_units(c.endpoint, req, bound) for c in candidates)
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
        front=front,
    )
    try:
        if req["stream"]:
            await _respond_stream(run, send, receive)
        else:
            await _respond_whole(run, send, receive)
    except asyncio.CancelledError:
        run.cancelled = True
        raise
    except Exception as exc:
        logger.exception("unexpected error in %s", gen_id)
        run.error = scrub(f"internal error: {type(exc).__name__}")
        raise
    finally:
        run.settle()


async def handle_chat(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await handle_front(scope, receive, send, CHAT)


async def handle_text(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await handle_front(scope, receive, send, TEXT)


async def _handle_messages(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from routing.gateway.messages import handle_messages

    await handle_messages(scope, receive, send)


async def _handle_embeddings(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from routing.gateway.embeddings import handle_embeddings

    await handle_embeddings(scope, receive, send)


# Routes whose errors are in Anthropic's shape, even the last-resort 500 (routing/gateway/messages.py
# writes every other error of its own).
ANTHROPIC_SHAPED = frozenset({"/api/v1/messages"})


def anthropic_error_body(exc: SwitchyardError) -> dict[str, Any]:
    kind = "overloaded_error" if exc.status == 503 else "api_error"
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def _extra(exc: SwitchyardError) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]


# Hot-path routes (POST only). Other front doors (messages, embeddings) register here too.
ROUTES: dict[str, Any] = {
    "/api/v1/chat/completions": handle_chat,
    "/api/v1/completions": handle_text,
    "/api/v1/messages": _handle_messages,
    "/api/v1/embeddings": _handle_embeddings,
}


# The cyclic GC, not our code, was ~15% of a request's CPU at c=64: every 700 net allocations a young
# collection ran, and the older generations re-scanned the objects Django and the libraries
# leave behind at import (120k+). A web process frees almost everything by reference counting, so after
# start-up the survivors are frozen (never scanned again) and young collections run 14x less often.
GC_GEN0_THRESHOLD = 10_000


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gen0), gen1, gen2)


MODELS_PATH = "/api/v1/models"


async def handle_models_list(scope: dict[str, Any], send: Any) -> None:
    """`GET /api/v1/models` straight from the catalog snapshot. SDK clients and load balancers' readiness
    probes call it all the time; answered here it costs no thread hop and a worker that serves only the
    API never loads Django's URLconf, DRF and the admin (~12 MB). The DRF view in routing/apis.py
    documents it (OpenAPI) and answers the other methods; both use `selectors.model_list`, and a test
    checks they return the same document."""
    from urllib.parse import parse_qs

    from routing import selectors

    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    search = query["search"][-1] if query.get("search") else None
    data = selectors.model_list(snapshot=await catalog.get(), search=search)
    await _send_json(send, 200, {"data": data}, [(b"vary", b"Accept")])


API_PREFIX = "/api/"
HTTPS_REQUIRED = (
    "This API is served over HTTPS only: call it with https:// (through the TLS proxy in front of "
    "Switchyard). A server on a private network without TLS sets SWITCHYARD_PLAIN_HTTP=1."
)


def _plain_http(scope: dict[str, Any]) -> bool:
    """An insecure call as Django's SECURE_PROXY_SSL_HEADER sees it: neither TLS to this process (or a
    trusted proxy uvicorn already applied) nor `X-Forwarded-Proto: https` from the proxy."""
    if scope.get("scheme") == "https":
        return False
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-proto":
            return value.split(b",", 1)[0].strip().lower() != b"https"
    return True


class GatewayApp:
    """Routes the hot-path paths to their async handlers and everything else to Django."""

    def __init__(self, django_app: Any) -> None:
        self.django_app = django_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope.get("path", "").startswith(API_PREFIX)
            and setting("SECURE_SSL_REDIRECT")
            and _plain_http(scope)
        ):
            # One answer for the whole API where production redirects browsers to HTTPS.
            await _send_json(send, 403, error_body(403, HTTPS_REQUIRED))
            return
        handler = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None and scope["type"] == "http" and scope["method"] == "GET":
            if scope["path"] == MODELS_PATH:
                await handle_models_list(scope, send)
                return
        if handler is not None:
            if scope["method"] != "POST":
                await _send_json(
                    send,
                    405,
                    error_body(405, f"Method {scope['method']} not allowed. Use POST."),
                    [(b"allow", b"POST")],
                )
                return
            try:
                await handler(scope, receive, send)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                down = store_unavailable(exc)
                if down is None:
                    logger.exception("unhandled error on %s", scope["path"])
                failure: SwitchyardError = down or SwitchyardError(
                    "Internal server error.", status=500, code="internal"
                )
                try:
                    if scope["path"] in ANTHROPIC_SHAPED:
                        await _send_json(send, failure.status, anthropic_error_body(failure), _extra(failure))
                    else:
                        await send_error(send, failure)
                except Exception:
                    pass  # the response had already started; the client sees a truncated stream
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.django_app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await catalog.get()
                except Exception:
                    logger.exception("catalog could not be loaded at start-up; will retry on first request")
                _tune_gc()
                refused = await _redis_refused()
                watch_start()
                liveness_start()
                if refused:
                    await send({"type": "lifespan.startup.failed", "message": refused})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await drain_detached()
                await close_upstream_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return
