"""uvicorn's httptools protocol with read deadlines and a connection limit that answer in JSON.

uvicorn has `timeout_keep_alive` (idle between requests) and `limit_concurrency`, but no deadline on
reading a request: a client that trickles its headers or its body a byte at a time held a connection
(and a task) for as long as it liked (75 s and more in the issue; forever in fact). Here:

* headers must be complete within SWITCHYARD_HEADER_TIMEOUT seconds of the connection opening, or of
  the first byte of the next request on a kept-alive connection (the wait before that byte is
  uvicorn's keep-alive timeout); after that the connection gets a 408 and is closed;
* a request body must be complete within SWITCHYARD_BODY_TIMEOUT seconds of its headers: a whole
  deadline, not a silence timeout, so a trickle cannot extend it. The application is then told the
  client left (its `receive` returns `http.disconnect`), and the client gets a 408 in the error shape
  of the path (Anthropic's on /api/v1/messages) if no response has started;
* at most SWITCHYARD_MAX_CONNECTIONS open connections (or running requests) per process: beyond it a
  request gets a 503 JSON with Retry-After, answered without running the application.

The deadlines cost the hot path a few attribute writes per request: one sweeper task per process
checks every connection's deadline four times a second (a timer per request, armed and cancelled, was
measured at +15 us per request on a keep-alive connection, against ~140 us for the whole exchange).
Use: `uvicorn --http switchyard.server:TimedHttpToolsProtocol` (what `manage.py serve` and the test
server run).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

ANTHROPIC_PATHS = ("/api/v1/messages",)


def header_timeout() -> float:
    return float(settings.SWITCHYARD_HEADER_TIMEOUT)


def body_timeout() -> float:
    return float(settings.SWITCHYARD_BODY_TIMEOUT)


def max_connections() -> int:
    return int(settings.SWITCHYARD_MAX_CONNECTIONS)


def error_json(status: int, message: str, path: str) -> bytes:
    """The error body for `path`: Anthropic's shape on /messages, Switchyard's everywhere else."""
    if path.startswith(ANTHROPIC_PATHS):
        kind = "timeout_error" if status == 408 else "overloaded_error"
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    return orjson.dumps({"error": {"code": status, "message": message}})


def raw_response(status: int, reason: bytes, body: bytes, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response that closes the connection (when no ASGI cycle can answer)."""
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (status, reason, len(body), extra, body)
    )


class _Busy:
    """The ASGI app that answers a request over the connection limit."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = error_json(
            503, "This server is at its connection limit; retry shortly.", scope.get("path", "")
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"1"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


BUSY = _Busy()


# How often the sweeper looks at every connection's read deadline: a cut comes at most this late.
SWEEP_SECONDS = 0.25
_HEADERS, _BODY = 1, 2


async def _sweep(connections: set[Any]) -> None:
    """One task per process (per event loop): every SWEEP_SECONDS, cut the connections whose headers or
    body are late. Cheaper than a timer per request, armed and cancelled on every request (measured:
    +15 us per request for the two timers; here a few attribute writes)."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        now = asyncio.get_running_loop().time()
        for conn in list(connections):
            deadline = getattr(conn, "read_deadline", None)
            if deadline is not None and now >= deadline:
                conn.read_late()


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus the read deadlines and the connection limit described above."""

    _sweepers: dict[int, asyncio.Task[None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_deadline: float | None = None  # loop time by which the current read must end
        self._phase = 0
        self._header_seconds = header_timeout()
        self._body_seconds = body_timeout()
        self._max_connections = max_connections()
        self.limit_concurrency = None  # the limit below answers in JSON instead of uvicorn's text/plain

    # -- deadlines -----------------------------------------------------------------------------------

    def _expect(self, phase: int) -> None:
        seconds = self._header_seconds if phase == _HEADERS else self._body_seconds
        self._phase = phase
        self.read_deadline = self.loop.time() + seconds if seconds > 0 else None

    def _done_reading(self) -> None:
        self._phase = 0
        self.read_deadline = None

    def _ensure_sweeper(self) -> None:
        key = id(self.loop)
        task = self._sweepers.get(key)
        if task is None or task.done():
            self._sweepers[key] = self.loop.create_task(_sweep(self.connections))

    def read_late(self) -> None:
        """Called by the sweeper once the current read's deadline has passed."""
        phase = self._phase
        self._done_reading()
        if self.transport.is_closing():
            return
        if phase == _HEADERS:
            self._headers_late()
        elif phase == _BODY:
            self._body_late()

    def _headers_late(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # nothing else is being written: say why
            message = f"The request headers did not arrive within {self._header_seconds:g}s."
            self.transport.write(raw_response(408, b"Request Timeout", error_json(408, message, "")))
        self.transport.close()

    def _body_late(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        if cycle.response_started:
            self.transport.close()  # (connection_lost tells the application)
            return
        self.loop.create_task(self._answer_408(cycle))

    async def _answer_408(self, cycle: RequestResponseCycle) -> None:
        message = f"The request body did not arrive within {self._body_seconds:g}s."
        body = error_json(408, message, self.scope.get("path", "") if self.scope else "")
        cycle.keep_alive = False  # the rest of the body may still come: never read it as a request
        try:
            await cycle.send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await cycle.send({"type": "http.response.body", "body": body})
        except Exception:
            self.transport.close()
        # The application, still waiting for the body, is told the client left; what it sends after
        # this is dropped (uvicorn ignores sends on a disconnected cycle).
        cycle.disconnected = True
        cycle.message_event.set()

    # -- protocol callbacks --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._ensure_sweeper()
        self._expect(_HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done_reading()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._phase:  # the first byte of a further request on a kept-alive connection
            self._expect(_HEADERS)

    def on_headers_complete(self) -> None:
        limit = self._max_connections
        if limit > 0 and (len(self.connections) > limit or len(self.tasks) >= limit):
            app, self.app = self.app, BUSY
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        # Ended by on_message_complete, in the same feed, when the request has no body.
        self._expect(_BODY)

    def on_message_complete(self) -> None:
        self._done_reading()
        super().on_message_complete()
