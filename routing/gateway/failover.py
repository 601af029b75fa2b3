"""The attempt loop: each routed candidate in turn until one answers, failing over in between; for a
whole answer and for a stream (before its first byte; after it a failure is reported in-stream)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from routing.adapters.base import UpstreamFailure, Usage
from routing.adapters.registry import adapter_for
from routing.gateway.run import Run
from routing.gateway.wire import PROCESSING
from routing.gateway.writers import BatchedSend, StreamWriter
from routing.router import Candidate
from switchyard.errors import NoProviderAvailable, RequestTimeout, SwitchyardError, UpstreamError
from switchyard.shared import setting


async def _watch_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ClientWatch:
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


async def complete(run: Run, method: str = "complete") -> Any:
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


async def complete_watched(run: Run, receive: Any, method: str = "complete") -> Any:
    """`complete` while watching the client: None, and the run marked cancelled, when it left
    (the upstream call is cancelled at once). A whole answer's and an embeddings answer's first step."""
    watch = ClientWatch(receive)
    try:
        try:
            return await complete(run, method)
        finally:
            watch.stop()
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        run.cancelled = True
        return None


class _Processing:
    """Sends `: SWITCHYARD PROCESSING` every `interval` while the request's task waits for the first
    upstream event. A timer, not a second task racing the wait: the comment is written by a short
    task only when the timer fires (a provider slower than the interval), which is rare."""

    __slots__ = ("interval", "loop", "timer", "writer", "writing")

    def __init__(self, writer: StreamWriter, interval: float) -> None:
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


async def _first_item(agen: Any, writer: StreamWriter, interval: float) -> Any:
    """Wait for a stream's first item, sending processing comments while the provider thinks."""
    comments = _Processing(writer, interval)
    try:
        return await agen.__anext__()
    finally:
        await comments.stop()


async def stream(run: Run, writer: StreamWriter) -> None:
    interval = float(setting("SWITCHYARD_PROCESSING_COMMENT_SECONDS"))
    last: UpstreamFailure | None = None
    for cand in run.candidates:
        adapter = adapter_for(cand.endpoint.api_format)
        if adapter is None:
            continue
        began = time.monotonic()
        ctx = run.context(cand)
        batched = writer.send if isinstance(writer.send, BatchedSend) else None
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
            direct = batched if type(writer) is StreamWriter else None
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


async def _forward(run: Run, writer: StreamWriter, cand: Candidate, item: dict[str, Any]) -> None:
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
