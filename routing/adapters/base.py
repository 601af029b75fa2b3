"""The interface every provider adapter implements, and the shared HTTP/SSE machinery.

Internally everything is OpenAI chat format: an adapter turns an OpenAI-style request into the
provider's wire format, and the provider's answer (whole or streamed) back into OpenAI pieces.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from routing.catalog.snapshot import EndpointInfo
from routing.gateway.upstream import ConnectFailed, HeaderNotEncodable, Response, upstream_pool
from routing.request import Request
from switchyard.timeouts import within

logger = logging.getLogger("switchyard.adapters")

# No single request has ever used a billion tokens; a provider that says so (or says -5, 1.5, "lots")
# is not to be charged from. See `provider_usage`.
USAGE_TOKEN_BOUND = 10**9


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
    # Seconds; 0 means the endpoint's catalog value. The gateway caps them with settings.
    connect: float = 0.0
    first_byte: float = 0.0  # from the start of the attempt until the answer starts (first event)
    idle: float = 0.0  # longest silence between events once the answer has started
    # State an adapter keeps for this request across its attempts (Gemini's fetched images), never on
    # the Request itself; the gateway hands every attempt of one request the same dict.
    scratch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ep = self.endpoint
        self.connect = self.connect or ep.timeout_connect
        self.first_byte = self.first_byte or ep.timeout_first_byte
        self.idle = self.idle or ep.timeout_between_chunks

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def until_first_byte(self) -> float:
        """Seconds left before the first-byte deadline (or the total one, if sooner); may be <= 0."""
        return min(self.started + self.first_byte, self.deadline) - time.monotonic()


def token_count(value: Any) -> int | None:
    """A provider's token count as an int in [0, USAGE_TOKEN_BOUND]; 0 when absent (null), None when it
    is not a count: negative, fractional, not a number (a bool or a string included), or absurd."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= USAGE_TOKEN_BOUND:
        return None
    return value


def provider_usage(
    provider_format: str,
    raw: Any,
    *,
    prompt: Any,
    completion: Any,
    cached: Any = None,
    cache_write: Any = None,
    reasoning: Any = None,
    extra_prompt: tuple[Any, ...] = (),
    extra_completion: tuple[Any, ...] = (),
) -> Usage | None:
    """The usage a provider reported, checked: every count must be a `token_count`, else None (the
    gateway then charges its own estimate, marked estimated, rather than a negative or absurd amount).
    Cached and cache-write tokens beyond the prompt contradict it (None too); reasoning is clamped
    within the completion (Anthropic's is our own count of its thinking). `extra_*` are counts the format reports
    apart but OpenAI's accounting includes (Anthropic's cache tokens, Gemini's thoughts)."""
    counts = [token_count(v) for v in (prompt, completion, cached, cache_write, reasoning)]
    extras_p = [token_count(v) for v in extra_prompt]
    extras_c = [token_count(v) for v in extra_completion]
    if prompt is None or any(c is None for c in (*counts, *extras_p, *extras_c)):
        _unusable(provider_format, raw)
        return None
    p, c, k, w, r = (int(n or 0) for n in counts)
    p += sum(int(n or 0) for n in extras_p)
    c += sum(int(n or 0) for n in extras_c)
    if p > USAGE_TOKEN_BOUND or c > USAGE_TOKEN_BOUND or k + w > p:
        _unusable(provider_format, raw)  # (more cached than prompt: the counts contradict each other)
        return None
    return Usage(
        prompt_tokens=p,
        completion_tokens=c,
        cached_tokens=k,
        cache_write_tokens=w,
        reasoning_tokens=min(r, c),
    )


def _unusable(provider_format: str, raw: Any) -> None:
    logger.warning("%s provider reported unusable usage %.300r; charging our own count", provider_format, raw)


def usage_fields(raw: Any) -> dict[str, Any]:
    """A usage object (or one of its `*_details`) as a dict; anything else (a list, a string) as empty,
    so the counts read from it are missing rather than a crash."""
    return raw if isinstance(raw, dict) else {}


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


# One SSE line may not grow past this while it is being received.
MAX_SSE_LINE = 16 * 1024 * 1024


class Adapter:
    """Base adapter. HTTP adapters fill in the four translation hooks; `simulated` overrides the calls."""

    def build_request(
        self, ctx: CallContext, req: Request, *, stream: bool
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

    async def _open(self, ctx: CallContext, req: Request, *, stream: bool) -> Response:
        url, headers, body = self.build_request(ctx, req, stream=stream)
        ep = ctx.endpoint
        wait = ctx.until_first_byte()
        try:
            if wait <= 0:
                raise TimeoutError
            with within(wait):
                # The upstream client never follows redirects: a 3xx is a misconfigured base URL, not
                # a place to send the platform key and the customer's prompt.
                resp = await upstream_pool().post(url, headers, body, connect_timeout=min(ctx.connect, wait))
        except TimeoutError:
            raise _first_byte_timeout(ctx)
        except ConnectFailed as exc:
            raise UpstreamFailure(
                502,
                f"Could not connect to {ep.provider_name}: {exc}.",
                retriable=True,
                kind="connect",
            )
        except HeaderNotEncodable as exc:
            # Nothing was sent, so the provider is not at fault: an organisation's own key with
            # characters a header cannot carry (routing/byok.py names it), or a platform key misconfigured.
            raise UpstreamFailure(
                502,
                f"The request to {ep.provider_name} could not be sent: {exc}.",
                retriable=True,
                kind="bad_header",
            )
        except ValueError as exc:  # the catalog's base URL is not an http(s) URL
            raise UpstreamFailure(502, f"{ep.provider_name}: {exc}.", retriable=True, kind="connect")
        except OSError as exc:
            raise UpstreamFailure(
                502,
                f"Connection to {ep.provider_name} failed before it answered: {type(exc).__name__}.",
                retriable=True,
                kind="connection",
            )
        if 300 <= resp.status < 400:
            resp.release()
            raise UpstreamFailure(
                502,
                f"{ep.provider_name} answered with a redirect (HTTP {resp.status}); check its base URL.",
                retriable=True,
                kind="redirect",
            )
        if resp.status >= 400:
            try:
                with within(min(5.0, ctx.remaining())):
                    raw = await resp.read()
            except OSError:  # (TimeoutError included)
                raw = b""
            finally:
                resp.release()
            failure = status_failure(
                resp.status,
                scrub(self.error_message(resp.status, raw), ctx.api_key),
                resp.headers.get("retry-after"),
            )
            raise failure
        return resp

    async def complete(self, ctx: CallContext, req: Request) -> Completion:
        data = await self._call_json(ctx, req)
        try:
            return self.parse_response(data)
        except UpstreamFailure as failure:  # an error object in a 200 body: the provider's own words
            failure.message = scrub(failure.message, ctx.api_key)
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise UpstreamFailure(
                502,
                f"{ctx.endpoint.provider_name} sent a malformed response ({exc}).",
                retriable=True,
                kind="malformed",
            )

    async def embed(self, ctx: CallContext, req: Request) -> Embeddings:
        raise UpstreamFailure(
            400,
            f"{ctx.endpoint.provider_name} does not serve embeddings through Switchyard.",
            retriable=True,
            kind="unsupported",
        )

    async def _call_json(self, ctx: CallContext, req: Request) -> dict[str, Any]:
        """One non-streamed call: the provider's JSON object, or an UpstreamFailure.

        The headers must come within the first-byte deadline; a non-streamed body is one event, so
        once the headers are in it must arrive whole within the idle timeout (a provider that
        trickles its body is cut off rather than holding the request until the total deadline).
        """
        resp = await self._open(ctx, req, stream=False)
        ep = ctx.endpoint
        wait = min(ctx.idle, ctx.remaining())
        try:
            with within(wait):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamFailure(
                408,
                f"{ep.provider_name} did not finish sending its answer within {wait:g}s.",
                retriable=True,
                kind="timeout",
            )
        except OSError as exc:
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

    async def stream(self, ctx: CallContext, req: Request) -> AsyncGenerator[dict[str, Any] | Usage, None]:
        """Yield OpenAI chunk dicts (choices deltas) and, at most once, a Usage.

        Raises UpstreamFailure; the caller decides whether it was before or after the first byte.
        Deadlines count events, not bytes: the first event must come by the first-byte deadline,
        and after it the longest silence between events is `ctx.idle` (a provider dripping one
        byte at a time never completes an event, so it cannot hold the stream open), all within
        the total deadline.
        """
        resp = await self._open(ctx, req, stream=True)
        ep = ctx.endpoint
        await _require_event_stream(ctx, resp)
        translator = self.stream_events()
        progress: float | None = None  # when the last event was handed on; None before the first
        content = resp
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
                        if progress is None:
                            wait = ctx.until_first_byte()
                        else:
                            wait = min(progress + ctx.idle - time.monotonic(), ctx.remaining())
                        if wait <= 0:
                            raise TimeoutError
                        with within(wait):
                            data = await content.readany()
                except TimeoutError:
                    if progress is None:
                        raise _first_byte_timeout(ctx)
                    if ctx.remaining() <= 0.001:
                        message = f"{ep.provider_name} did not finish within the total deadline."
                    else:
                        message = f"{ep.provider_name} went silent for {ctx.idle:g}s mid-answer."
                    raise UpstreamFailure(408, message, retriable=True, kind="timeout")
                except OSError as exc:
                    raise UpstreamFailure(
                        502,
                        f"{ep.provider_name} dropped the stream ({type(exc).__name__}).",
                        retriable=True,
                        kind="connection",
                    )
                if not data:  # end of the body
                    if tail:
                        for line in tail.split(b"\n"):  # (the tail may hold several unterminated lines)
                            for item in translator.feed_line(line):
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
                if ctx.on_data is not None:
                    ctx.on_data()
                buf = tail + data if tail else data
                # Whole events (split at blank lines) are parsed at once; a stream with CR line ends
                # goes line by line. Either way `tail` keeps what is not complete yet.
                feed: Callable[[bytes], list[dict[str, Any] | Usage]]
                if b"\r" in buf:
                    pieces, feed = buf.split(b"\n"), translator.feed_line
                else:
                    pieces, feed = buf.split(b"\n\n"), translator.feed_block
                tail = pieces.pop()
                for piece in pieces:
                    try:
                        items = feed(piece)
                    except UpstreamFailure as failure:  # an error event: the provider's own words
                        failure.message = scrub(failure.message, ctx.api_key)
                        raise
                    for item in items:
                        yield item
                    if items:
                        progress = time.monotonic()
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
            # At the stream's logical end the connection is kept for the next call; any other way out
            # (the client left, a failure) closes it at once, which stops the provider generating.
            resp.release(at_end=translator.done)


async def _require_event_stream(ctx: CallContext, resp: Response) -> None:
    """A stream request answered with something other than server-sent events is a failed attempt
    (before the first byte, so the next provider is tried), not a stream to parse."""
    ctype = resp.headers.get("content-type", "")
    if not ctype or "event-stream" in ctype:
        return
    try:
        with within(min(ctx.idle, ctx.remaining())):
            raw = await resp.read(64 * 1024)
    except OSError:  # (TimeoutError included)
        raw = b""
    finally:
        resp.release()
    name = ctx.endpoint.provider_name
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        err = data["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamFailure(
            502, scrub(f"{name} error: {message}", ctx.api_key), retriable=True, kind="stream_error"
        )
    raise UpstreamFailure(
        502,
        f"{name} answered a stream request with {ctype.split(';')[0]} instead of server-sent events.",
        retriable=True,
        kind="malformed",
    )


def _first_byte_timeout(ctx: CallContext) -> UpstreamFailure:
    waited = min(ctx.first_byte, ctx.deadline - ctx.started)
    return UpstreamFailure(
        408,
        f"{ctx.endpoint.provider_name} did not start answering within {waited:g}s.",
        retriable=True,
        kind="timeout",
    )


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

    def feed_block(self, block: bytes) -> list[dict[str, Any] | Usage]:
        """One complete event: the lines between two blank lines. The common shape, a single
        `data: ...` line, goes straight to on_event; anything else is fed line by line."""
        if block.startswith(b"data: ") and not self._data and self._event is None and b"\n" not in block:
            return self.on_event(None, block[6:])
        out: list[dict[str, Any] | Usage] = []
        for line in block.split(b"\n"):
            out.extend(self.feed_line(line))
        out.extend(self.feed_line(b""))
        return out

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
