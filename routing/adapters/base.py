"""The interface every provider adapter implements, and the shared HTTP/SSE machinery.

Internally everything is OpenAI chat format: an adapter turns an OpenAI-style request into the
provider's wire format, and the provider's answer (whole or streamed) back into OpenAI pieces.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from routing.catalog.snapshot import EndpointInfo
from routing.gateway.upstream import upstream_session


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # includes cached and cache-write tokens (OpenAI semantics)
    completion_tokens: int = 0  # includes reasoning tokens
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    estimated: bool = False


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer in OpenAI terms."""

    choices: list[dict[str, Any]]
    usage: Usage | None
    native_finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Embeddings:
    """An embeddings answer in OpenAI terms: `data` items, and prompt tokens when the provider counted."""

    data: list[dict[str, Any]]
    usage: Usage | None


class UpstreamFailure(Exception):
    """An attempt failed. `retriable` failures before the first byte move on to the next endpoint."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retriable: bool,
        kind: str = "error",
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retriable = retriable
        self.kind = kind
        self.retry_after = retry_after


@dataclass(slots=True)
class CallContext:
    """What one attempt needs besides the request: deadlines and the platform credential."""

    endpoint: EndpointInfo
    api_key: str
    started: float
    deadline: float  # monotonic time by which the whole call must end
    # Optional output batching hooks (see Adapter.stream): `on_data` when upstream bytes arrive,
    # `on_idle` right before waiting on the network again (flush what was forwarded meanwhile).
    on_data: Callable[[], None] | None = None
    on_idle: Callable[[], Awaitable[None]] | None = None

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)


def platform_key(ep: EndpointInfo, byok: str | None = None) -> str:
    return byok or (os.environ.get(ep.api_key_env, "") if ep.api_key_env else "")


_SECRET_RE = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+\S+|key=[^&\s\"']+)")


def scrub(text: str, secret: str = "") -> str:
    """Remove anything that looks like a credential from a provider's message before it is shown."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _SECRET_RE.sub("[redacted]", text)[:2000]


def status_failure(status: int, message: str, retry_after: str | None = None) -> UpstreamFailure:
    """Map an upstream HTTP status to our failure policy (DESIGN: failover on 408/429/5xx)."""
    if status in (401, 403):
        return UpstreamFailure(
            502, "The provider rejected the platform's credentials.", retriable=True, kind="auth"
        )
    if status == 408:
        return UpstreamFailure(408, message, retriable=True, kind="timeout")
    if status == 429:
        return UpstreamFailure(502, message, retriable=True, kind="rate_limited", retry_after=retry_after)
    if status >= 500:
        return UpstreamFailure(502, message, retriable=True, kind="server_error")
    if status == 404:
        return UpstreamFailure(502, message, retriable=True, kind="not_found")
    if status == 413:
        return UpstreamFailure(413, message, retriable=False, kind="too_large")
    return UpstreamFailure(400, message, retriable=False, kind="bad_request")


# One SSE line may not grow past this while it is being received (aiohttp's readline stopped at 128 KiB).
MAX_SSE_LINE = 16 * 1024 * 1024


class Adapter:
    """Base adapter. HTTP adapters fill in the four translation hooks; `simulated` overrides the calls."""

    def build_request(
        self, ctx: CallContext, req: dict[str, Any], *, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        raise NotImplementedError

    def parse_response(self, data: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def stream_events(self) -> StreamTranslator:
        raise NotImplementedError

    def error_message(self, status: int, body: bytes) -> str:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body[:300].decode("utf-8", "replace") or f"HTTP {status}"
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)

    # ---- calls -------------------------------------------------------------------------------

    async def _open(self, ctx: CallContext, req: dict[str, Any], *, stream: bool) -> aiohttp.ClientResponse:
        url, headers, body = self.build_request(ctx, req, stream=stream)
        ep = ctx.endpoint
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=ep.timeout_connect, connect=ep.timeout_connect
        )
        first_byte = min(ep.timeout_first_byte, ctx.remaining())
        try:
            async with asyncio.timeout(first_byte):
                resp = await upstream_session().post(url, data=body, headers=headers, timeout=timeout)
        except TimeoutError:
            raise UpstreamFailure(
                408,
                f"{ep.provider_name} did not answer within {first_byte:g}s.",
                retriable=True,
                kind="timeout",
            )
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailure(
                502,
                f"Could not connect to {ep.provider_name}: {exc.strerror or 'refused'}.",
                retriable=True,
                kind="connect",
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(
                502,
                f"Connection to {ep.provider_name} failed: {type(exc).__name__}.",
                retriable=True,
                kind="connection",
            )
        if resp.status >= 400:
            try:
                async with asyncio.timeout(min(5.0, ctx.remaining())):
                    raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                resp.release()
            failure = status_failure(
                resp.status,
                scrub(self.error_message(resp.status, raw), ctx.api_key),
                resp.headers.get("Retry-After"),
            )
            raise failure
        return resp

    async def complete(self, ctx: CallContext, req: dict[str, Any]) -> Completion:
        data = await self._call_json(ctx, req)
        try:
            return self.parse_response(data)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise UpstreamFailure(
                502,
                f"{ctx.endpoint.provider_name} sent a malformed response ({exc}).",
                retriable=True,
                kind="malformed",
            )

    async def embed(self, ctx: CallContext, req: dict[str, Any]) -> Embeddings:
        raise UpstreamFailure(
            400,
            f"{ctx.endpoint.provider_name} does not serve embeddings through Switchyard.",
            retriable=True,
            kind="unsupported",
        )

    async def _call_json(self, ctx: CallContext, req: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed call: the provider's JSON object, or an UpstreamFailure."""
        resp = await self._open(ctx, req, stream=False)
        ep = ctx.endpoint
        try:
            async with asyncio.timeout(min(ep.timeout_total, ctx.remaining())):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamFailure(
                408, f"{ep.provider_name} timed out while sending its answer.", retriable=True, kind="timeout"
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(
                502,
                f"{ep.provider_name} broke off its answer ({type(exc).__name__}).",
                retriable=True,
                kind="connection",
            )
        finally:
            resp.release()
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return data
        except ValueError as exc:
            raise UpstreamFailure(
                502,
                f"{ep.provider_name} sent a malformed response ({exc}).",
                retriable=True,
                kind="malformed",
            )

    async def stream(
        self, ctx: CallContext, req: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any] | Usage, None]:
        """Yield OpenAI chunk dicts (choices deltas) and, at most once, a Usage.

        Raises UpstreamFailure; the caller decides whether it was before or after the first byte.
        """
        resp = await self._open(ctx, req, stream=True)
        ep = ctx.endpoint
        translator = self.stream_events()
        gap = ep.timeout_between_chunks
        first = True
        content = resp.content
        tail = b""  # a partial line, completed by the next read
        # Everything already received is parsed without a timer or an await per line; only an
        # empty buffer waits on the network (with the timeout), after calling `on_idle`.
        try:
            while True:
                wait = 0.0
                try:
                    data = content.read_nowait()
                    if not data:
                        if ctx.on_idle is not None:
                            await ctx.on_idle()
                        wait = min(ep.timeout_first_byte if first else gap, ctx.remaining())
                        async with asyncio.timeout(wait):
                            data = await content.readany()
                except TimeoutError:
                    raise UpstreamFailure(
                        408,
                        f"{ep.provider_name} went silent for {wait:g}s mid-answer.",
                        retriable=True,
                        kind="timeout",
                    )
                except (aiohttp.ClientError, OSError) as exc:
                    raise UpstreamFailure(
                        502,
                        f"{ep.provider_name} dropped the stream ({type(exc).__name__}).",
                        retriable=True,
                        kind="connection",
                    )
                if not data:  # end of the body
                    if tail:
                        for item in translator.feed_line(tail):
                            yield item
                        tail = b""
                        if translator.done:
                            return
                    if not translator.done:
                        raise UpstreamFailure(
                            502,
                            f"{ep.provider_name} ended the stream early.",
                            retriable=True,
                            kind="truncated",
                        )
                    return
                first = False
                if ctx.on_data is not None:
                    ctx.on_data()
                lines = (tail + data if tail else data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    for item in translator.feed_line(line):
                        yield item
                    if translator.done:
                        return
                if len(tail) > MAX_SSE_LINE:
                    raise UpstreamFailure(
                        502,
                        f"{ep.provider_name} sent a stream line over {MAX_SSE_LINE} bytes.",
                        retriable=True,
                        kind="malformed",
                    )
        finally:
            resp.release()


class StreamTranslator:
    """Turns SSE lines from one provider into OpenAI chunk dicts and a Usage; `done` at the end."""

    def __init__(self) -> None:
        self.done = False
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed_line(self, line: bytes) -> list[dict[str, Any] | Usage]:
        line = line.rstrip(b"\r\n")
        if not line:
            if not self._data:
                self._event = None
                return []
            data = b"\n".join(self._data)
            event, self._data, self._event = self._event, [], None
            return self.on_event(event, data)
        if line.startswith(b":"):
            return []
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode()
        return []

    def on_event(self, event: str | None, data: bytes) -> list[dict[str, Any] | Usage]:
        raise NotImplementedError

    @staticmethod
    def load(data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                502, "The provider sent a malformed stream event.", retriable=True, kind="malformed"
            )
