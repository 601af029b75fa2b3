"""Run an aiohttp application on 127.0.0.1 in a background thread (or standalone) for fake upstream servers."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
from types import TracebackType
from typing import Self

from aiohttp import web

# Set when the server begins shutting down, so handlers that "hang" forever can finish and let the
# thread stop promptly instead of waiting out aiohttp's shutdown timeout.
SHUTDOWN_EVENT = web.AppKey("fake_shutdown_event", asyncio.Event)


def install_shutdown_event(app: web.Application) -> asyncio.Event:
    """Attach (once) an event to `app` that is set by aiohttp's on_shutdown signal."""
    if SHUTDOWN_EVENT in app:
        return app[SHUTDOWN_EVENT]
    event = asyncio.Event()
    app[SHUTDOWN_EVENT] = event

    async def _signal(_app: web.Application) -> None:
        event.set()

    app.on_shutdown.append(_signal)
    return event


def shutdown_event(app: web.Application) -> asyncio.Event:
    return install_shutdown_event(app)


async def wait_for_shutdown(app: web.Application) -> None:
    """Block the calling handler until the server stops."""
    await shutdown_event(app).wait()


async def sleep_unless_shutdown(app: web.Application, seconds: float) -> bool:
    """Sleep up to `seconds`; return True if the server started shutting down meanwhile."""
    event = shutdown_event(app)
    if seconds <= 0:
        return event.is_set()
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def drop_connection(request: web.Request) -> None:
    """Close the client's TCP connection; aiohttp then silently discards whatever the handler returns."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.close()


class ThreadedServer:
    """An aiohttp application served on `host:port` (0 = free port) by a background thread with its own loop.

    Pass an `app`, or subclass and override `build_app()` (called on every `start()`, so a subclass
    can be stopped and started again on the same port to simulate an upstream coming back).
    """

    def __init__(
        self,
        app: web.Application | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self._app = app
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._shutdown_timeout = shutdown_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        if self._app is None:
            raise NotImplementedError("pass an app to ThreadedServer or override build_app()")
        return self._app

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        return self.base_url + path

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("server not started")
        return self._loop

    def start(self, timeout: float = 10.0) -> Self:
        if self.running:
            return self
        app = self.build_app()
        install_shutdown_event(app)
        # Bind here, in the caller's thread, so "address in use" surfaces as an exception from start();
        # a restart reuses the port picked the first time.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port or self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]

        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(app, sock, ready, errors), name=f"fake-server-{self._port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"fake server on port {self._port} did not start within {timeout}s")
        if errors:
            raise RuntimeError(f"fake server on port {self._port} failed to start") from errors[0]
        return self

    def _run(
        self,
        app: web.Application,
        sock: socket.socket,
        ready: threading.Event,
        errors: list[BaseException],
    ) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            runner = web.AppRunner(app, shutdown_timeout=self._shutdown_timeout, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            self._runner = runner
        except BaseException as exc:
            errors.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            # Anything still running (e.g. a client-abandoned handler) is cancelled so the loop closes cleanly.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        try:
            if runner is not None and thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
                future.result(timeout)
        finally:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None
            self._loop = None
            self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(app: web.Application | ThreadedServer, port: int = 0, host: str = "127.0.0.1") -> None:
    """Serve until SIGINT/SIGTERM, for running a fake as its own process in multi-process tests.

    Prints one line `listening on http://host:port` (flushed) once the socket accepts connections,
    so a parent process can wait for it and learn the port when `port` is 0. A ThreadedServer
    (e.g. a fake with Python-side state) may be passed instead of an app; it keeps its own host/port.
    """
    server = app if isinstance(app, ThreadedServer) else ThreadedServer(app, host=host, port=port)
    stop = threading.Event()

    def _request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    server.start()
    print(f"listening on {server.base_url}", flush=True)
    try:
        # Wait in short slices: a plain Event.wait() without timeout can delay signal delivery.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        sys.stdout.flush()
