"""One request's state from routing to settlement: the attempts, the winner, what was produced."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from accounts.keys import KeyInfo
from billing.holds import HoldRef, hold_cap
from routing.adapters.base import CallContext, UpstreamFailure, Usage, platform_key
from routing.byok import BYOK_FAULTS, byok_api_key, byok_failure, is_byok
from routing.catalog.snapshot import EndpointInfo
from routing.gateway import tokens
from routing.gateway.cost import cost_units
from routing.health import Outcome
from routing.request import Request
from routing.router import Candidate
from switchyard.shared import setting

# Failures that say the request was bad, not the provider: they never count against its health, which
# every organisation's routing shares. An organisation's own key failing (BYOK_FAULTS) is not the
# provider's fault either, nor a request that could not be sent at all (`bad_header`).
CALLER_FAULTS = {"bad_request", "too_large", "unsupported", "cancelled", "bad_header", *BYOK_FAULTS}


def capped(seconds: float, name: str) -> float:
    """A provider's catalog timeout, capped by the deployment-wide setting when that is set (> 0)."""
    cap = float(setting(name) or 0)
    return min(seconds, cap) if cap > 0 else seconds


class Run:
    """One request's state from routing to settlement (routing/gateway/settlement.py charges it)."""

    def __init__(
        self,
        *,
        gen_id: str,
        kind: str,
        key: KeyInfo,
        req: Request,
        candidates: list[Candidate],
        hold: HoldRef,
        started: float,
        record_kind: str | None = None,
    ) -> None:
        self.gen_id = gen_id
        self.kind = kind
        self.record_kind = record_kind or kind  # the generation record's kind (`messages`, ...)
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
        self.settle_task: asyncio.Task[Any] | None = None
        self.scratch: dict[str, Any] = {}  # what adapters keep across this request's attempts

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
            deadline=now + capped(ep.timeout_total, "SWITCHYARD_TOTAL_TIMEOUT_SECONDS"),
            connect=capped(ep.timeout_connect, "SWITCHYARD_CONNECT_TIMEOUT_SECONDS"),
            first_byte=capped(ep.timeout_first_byte, "SWITCHYARD_FIRST_BYTE_TIMEOUT_SECONDS"),
            idle=capped(ep.timeout_between_chunks, "SWITCHYARD_IDLE_TIMEOUT_SECONDS"),
            scratch=self.scratch,
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
        req = self.req
        if self.kind == "embedding":
            inputs = req.input if isinstance(req.input, list) else [req.input]
            prompt = sum(tokens.count_text(t) if isinstance(t, str) else len(t) for t in inputs)
            return Usage(prompt_tokens=prompt, estimated=True)
        if self.kind == "completion":
            prompt = tokens.count_text(req.prompt or "")
        else:
            prompt = tokens.count_messages(req.messages or [])
        completion = tokens.count_text("".join(self.text_parts)) + tokens.count_text("".join(self.tool_args))
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            estimated=True,
            images=req.images,
        )

    def charge(self, ep: EndpointInfo, usage: Usage) -> int:
        """What `usage` is charged at `ep`: its exact cost, never more than the hold (billing.holds.hold_cap).
        The cost the answer reports, and the one settlement charges."""
        return hold_cap(self.hold, cost_units(ep, usage))[0]
