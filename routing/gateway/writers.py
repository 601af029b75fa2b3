"""The stream writer of OpenAI's SSE shape (front doors with another shape subclass it), and the
batched ASGI send under it."""

from __future__ import annotations

from typing import Any

from routing.adapters.base import UpstreamFailure
from routing.byok import is_byok
from routing.gateway.run import Run
from routing.gateway.settlement import settle_before_reply
from routing.gateway.wire import DONE, SSE_HEADERS, dumps, usage_json
from routing.router import Candidate
from switchyard.errors import SwitchyardError, error_body


class BatchedSend:
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


class StreamWriter:
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
        """The stream's tail: a usage chunk when the request asked for one, then [DONE]."""
        run = self.run
        if run.req.wants_usage:
            usage = run.final_usage()
            run.usage = usage
            cost = run.charge(cand.endpoint, usage)
            payload = {"choices": [], "usage": usage_json(usage, cost, is_byok(cand.endpoint))}
            await self.raw(self.chunk_bytes(cand, payload))
        await self.end()

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
        await settle_before_reply(self.run)
        await self.send({"type": "http.response.body", "body": DONE, "more_body": False})
