"""A small TCP proxy for fault injection: it sits between the app and Redis or PostgreSQL and can pass
traffic, refuse connections (nothing listening, like a stopped server), blackhole them (accept, never
answer, like a hung host or a dropped network) and cut every open connection at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Literal

from tests.live import free_port

Mode = Literal["up", "refuse", "hang"]


class FaultProxy:
    """`FaultProxy(host, port).start()`; then `down("refuse" | "hang")`, `up()`, `stop()`; or
    `withhold_replies_after(marker)` and `release()` to keep a server's answers from its client."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode: Mode = "up"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._markers: tuple[bytes, ...] = ()
        self._released: asyncio.Event | None = None
        self.withheld = threading.Event()  # set once an answer has been kept back

    def url(self, scheme: str, path: str = "", user: str = "") -> str:
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}{path}"

    def _call(self, coro):  # type: ignore[no-untyped-def]
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(10)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def down(self, mode: Literal["refuse", "hang"] = "refuse") -> None:
        """Cut every open connection; then refuse new ones (stop listening) or accept and ignore them."""
        self._call(self._set(mode))

    def up(self) -> None:
        self._call(self._set("up"))

    def cut(self) -> None:
        """Drop every open connection (both sides see a reset) but keep accepting."""
        self._call(self._cut())

    def withhold_replies_after(self, *markers: bytes) -> None:
        """On the next connection to send bytes containing every one of `markers` (in one read), keep
        everything the server sends from then on back until `release()`: the request itself goes
        through (the server acts on it), its client never hears back. Other connections pass all."""
        self._released = self._call(_new_event())
        self._markers = markers

    def release(self) -> None:
        """Let the answers kept back (and every later one) through."""
        if self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _set(self, mode: Mode) -> None:
        self.mode = mode
        await self._cut()
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                self._server = None
        elif self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        await self._set("refuse")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(Exception):
                # Linger 0: close with a reset, as a dead host's kernel (or a restarted server) does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.mode == "hang":
                await asyncio.Event().wait()  # until cut
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            gate = _Gate(self)
            await asyncio.gather(_pipe(reader, up_writer, gate.saw), _pipe(up_reader, writer, None, gate))
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer,):
                self._writers.discard(w)
                w.transport.abort()


class _Gate:
    """One connection's answers, kept back once its client sent the proxy's marker."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.released: asyncio.Event | None = None

    def saw(self, data: bytes) -> None:
        markers = self.proxy._markers
        if self.released is None and markers and all(m in data for m in markers):
            self.released = self.proxy._released
            self.proxy._markers = ()  # one connection only

    async def wait(self) -> None:
        if self.released is not None and not self.released.is_set():
            self.proxy.withheld.set()
            await self.released.wait()


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    seen: Callable[[bytes], None] | None = None,
    gate: _Gate | None = None,
) -> None:
    try:
        while data := await reader.read(65536):
            if seen is not None:
                seen(data)  # before the bytes go on, so their answer finds the gate closed
            if gate is not None:
                await gate.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
