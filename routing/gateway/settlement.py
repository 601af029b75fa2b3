"""Settlement: charge a run exactly once (its usage event, the hold settled to the exact cost), retried
while Redis is away, and never cancelled by the client leaving."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from billing.holds import hold_cap, hold_settle, hold_settle_now
from billing.recovery import usage_kept
from billing.usage import usage_event_bound
from routing.adapters.base import Usage
from routing.byok import is_byok
from routing.gateway.cost import cost_units
from routing.gateway.run import Run
from routing.ratelimit import tokens_charge_later
from switchyard import metrics
from switchyard.retry import GaveUp, retry
from switchyard.shared import redis_enabled, spawn_detached

logger = logging.getLogger("switchyard.gateway")

# Settlement is awaited before a response's last bytes (so a client that has read the whole answer
# finds its hold settled and its usage event queued), but never for longer than this.
SETTLE_BEFORE_REPLY_SECONDS = 1.0


def settle(run: Run) -> asyncio.Task[Any]:
    """Charge exactly once, whatever happened to the client. The settlement is handed to Redis here
    (written to its socket before this returns, when the connection is up) and finished by a task
    detached from the request's: a client that leaves cancels the request, never the charge.

    Idempotent: a second call returns the first call's task."""
    if run.settle_task is None:
        run.settled = True
        event, usage, settlement = settlement_of(run)
        try:
            handed = hold_settle_now(run.hold, **settlement)
        except Exception:  # Redis refused the write: the task retries (see _finish)
            logger.exception("settlement of %s could not be handed over", run.gen_id)
            handed = None
        run.handed_over = handed is not None
        run.settle_task = spawn_detached(_finish(run, event, usage, settlement, handed))
    return run.settle_task


async def settle_before_reply(run: Run) -> None:
    """Settle before the client can see the response end. Handing the settlement to Redis is
    enough: Redis runs a connection's commands in order, and this process's later holds follow it
    on the same connection, so no later request sees this credit still held (README "Settlement
    before the last byte"). Waiting for Redis's reply would add a round trip to every response.
    When it could not be handed over at once (no live connection), wait for it, bounded."""
    task = settle(run)
    if not run.handed_over and not task.done():
        await asyncio.wait({task}, timeout=SETTLE_BEFORE_REPLY_SECONDS)


def settlement_of(run: Run) -> tuple[dict[str, Any], Usage | None, dict[str, Any]]:
    """The usage event, the usage charged, and hold_settle's arguments."""
    ended = time.monotonic()
    usage = cost = None
    uncharged = 0
    if run.winner is not None and (
        run.status == "success" or run.first_token_at is not None or run.usage is not None
    ):
        usage = run.final_usage()
        cost, uncharged = hold_cap(run.hold, cost_units(run.winner.endpoint, usage))
        if uncharged:
            logger.warning(
                "%s: the provider reported %d picodollars beyond the hold of %d; not charged",
                run.gen_id,
                uncharged,
                run.hold.amount_units,
            )
    ep = run.winner.endpoint if run.winner else None
    event = {
        "gen": run.gen_id,
        "org": run.key.org_id,
        "key": run.key.id,
        "hold": run.hold.id,
        "embedded": not redis_enabled(),
        "model": run.winner.model.slug if run.winner else run.req.models[0],
        "provider": ep.provider_slug if ep else "",
        "endpoint": ep.id if ep else None,
        "byok": is_byok(ep),
        "kind": run.record_kind,
        "status": "cancelled" if run.cancelled else run.status,
        "streamed": run.req.stream,
        "cancelled": run.cancelled,
        "finish_reason": run.finish_reason,
        "native_finish_reason": run.finish_reason,
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
        "latency_ms": int((ended - run.started) * 1000),
        "ttft_ms": int((run.first_token_at - run.started) * 1000) if run.first_token_at else None,
        "generation_time_ms": int((ended - run.first_token_at) * 1000) if run.first_token_at else None,
        "error": run.error,
        "attempts": run.public_attempts(),
        "created": run.created,
    }
    usage_event_bound(event)  # provider text (errors, finish reasons) is untrusted: cleaned, bounded
    settlement = {
        "cost_units": cost or 0,
        "event": orjson.dumps(event),
        "outcomes": run.outcomes(usage),
        "generation_id": run.gen_id,
    }
    return event, usage, settlement


async def _finish(
    run: Run,
    event: dict[str, Any],
    usage: Usage | None,
    settlement: dict[str, Any],
    handed: Awaitable[Any] | None,
) -> None:
    metrics.request_settled(event)
    if usage is not None:
        tokens_charge_later(run.key, usage.prompt_tokens + usage.completion_tokens)
    # Failure policy: a settlement that cannot reach Redis is retried with backoff for
    # SETTLE_RETRY_SECONDS (the Lua call is idempotent on the generation id), so a request answered
    # while Redis blinked is still charged once when it returns.
    pending = handed

    async def settle_once() -> Any:
        nonlocal pending
        # First the reply to the call settle() wrote, then (after a failure) calls anew.
        call, pending = pending, None
        return await (call if call is not None else hold_settle(run.hold, **settlement))

    try:
        await retry(settle_once, what=f"settlement of {run.gen_id}", log=logger)
    except GaveUp:
        logger.error(
            "could not settle %s; its hold will expire and the auditor will see it: %s", run.gen_id, event
        )
        return
    if redis_enabled():
        usage_kept(settlement["event"])  # until surely drained (billing/recovery.py)
