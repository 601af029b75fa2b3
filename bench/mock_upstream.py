"""A fast fake OpenAI upstream for `make bench`: raw asyncio HTTP/1.1 with keep-alive, on 127.0.0.1.

    python bench/mock_upstream.py --port 9100 --tokens 20 --latency-ms 0 --chunk-delay-ms 0

POST /v1/chat/completions  -> canned `chat.completion` JSON with `usage`, or (`"stream": true`) SSE:
                              N content chunks, a finish chunk, a usage chunk (choices: []), [DONE].
GET  /v1/models, /health   -> small JSON (readiness checks).
Request bodies are framed by Content-Length or chunked transfer encoding; pipelined requests are
answered in order. Uses uvloop when it is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

MAX_HEADER = 64 * 1024


def _completion(model: str, tokens: int) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(["tok"] * tokens)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _stream_events(model: str, tokens: int) -> list[bytes]:
    """The SSE events of one stream, each already framed as an HTTP/1.1 chunk."""
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    events = []
    for i in range(tokens):
        delta = {"role": "assistant", "content": "tok"} if i == 0 else {"content": " tok"}
        events.append(_sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    events.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
    events.append(_sse({**base, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events]


def _response(status: str, body: bytes, ctype: bytes = b"application/json", close: bool = False) -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + ctype
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + (b"\r\nconnection: close" if close else b"")
        + b"\r\n\r\n"
        + body
    )


class Upstream(asyncio.Protocol):
    def __init__(self, opts: argparse.Namespace, cache: dict[tuple[str, bool], object]) -> None:
        self.opts = opts
        self.cache = cache
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, str, bytes, bool] | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.paused = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.delayed = bool(opts.latency_ms or opts.chunk_delay_ms)

    # ---- transport callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.delayed:
            self.worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            parsed = self._parse_one()
            if parsed is None:
                return
            if self.delayed:
                self.queue.put_nowait(parsed)
            else:
                self._answer_now(parsed)

    # ---- parsing ---------------------------------------------------------------------------
    def _parse_one(self) -> tuple[str, str, bytes, bool] | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEADER and self.transport:
                self.transport.close()
            return None
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        method, path, _ = ([*head[0].split(" ", 2), "", ""])[:3]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        pos = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                eol = self.buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
                if len(self.buf) < eol + 2 + size + 2:
                    return None
                body += self.buf[eol + 2 : eol + 2 + size]
                pos = eol + 2 + size + 2
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < pos + length:
                return None
            body = self.buf[pos : pos + length]
            pos += length
        del self.buf[:pos]
        return method, path, bytes(body), keep

    # ---- answering -------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes) -> tuple[bytes, list[bytes] | None]:
        """(bytes to write now, SSE chunk frames to follow or None)."""
        path = path.split("?", 1)[0]
        if method == "GET" and path in ("/health", "/v1/models"):
            return _response(
                "200 OK", b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}'
            ), None
        if method != "POST" or path != "/v1/chat/completions":
            return _response("404 Not Found", b'{"error":{"message":"not found"}}'), None
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return _response("400 Bad Request", b'{"error":{"message":"bad json"}}'), None
        model = str(req.get("model") or "bench-model")
        stream = bool(req.get("stream"))
        key = (model, stream)
        cached = self.cache.get(key)
        if cached is None:
            cached = (
                _stream_events(model, self.opts.tokens)
                if stream
                else _response("200 OK", _completion(model, self.opts.tokens))
            )
            if len(self.cache) < 64:
                self.cache[key] = cached
        if not stream:
            return cached, None  # type: ignore[return-value]
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        return head, cached  # type: ignore[return-value]

    def _answer_now(self, item: tuple[str, str, bytes, bool]) -> None:
        """Zero-delay fast path: everything in one write."""
        method, path, body, keep = item
        assert self.transport is not None
        head, frames = self._route(method, path, body)
        self.transport.write(head if frames is None else head + b"".join(frames) + b"0\r\n\r\n")
        if not keep:
            self.transport.close()

    async def _serve(self) -> None:
        """Delayed path (--latency-ms / --chunk-delay-ms): requests answered in order, one at a time."""
        opts = self.opts
        while True:
            item = await self.queue.get()
            if item is None or self.transport is None or self.transport.is_closing():
                return
            method, path, body, keep = item
            t = self.transport
            if opts.latency_ms and method == "POST":
                await asyncio.sleep(opts.latency_ms / 1000)
            head, frames = self._route(method, path, body)
            t.write(head)
            if frames is not None:
                for frame in frames:
                    if opts.chunk_delay_ms:
                        await asyncio.sleep(opts.chunk_delay_ms / 1000)
                    if t.is_closing():
                        return
                    await self.can_write.wait()
                    t.write(frame)
                t.write(b"0\r\n\r\n")
            await self.can_write.wait()
            if not keep:
                t.close()
                return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    opts = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        cache: dict[tuple[str, bool], object] = {}
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Upstream(opts, cache), "127.0.0.1", opts.port, backlog=2048, reuse_address=True
        )
        print(f"mock upstream on http://127.0.0.1:{opts.port}/v1 tokens={opts.tokens}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
