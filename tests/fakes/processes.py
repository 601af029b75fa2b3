"""Real servers run as child processes on 127.0.0.1 (redis-server with TLS, an HTTP proxy), each
started on a free port and stopped by its own PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on {port} within {timeout:g}s: {log.read_text()[-2000:]}")


@contextmanager
def running(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (which listens on `port`), wait until it accepts connections, stop it by PID."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(proc, port, log)
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def redis_tls_argv(
    port: int, certs_dir: Path, *, auth_clients: bool, password: str | None = None
) -> list[str]:
    """A throwaway redis-server speaking only TLS on `port` (no persistence)."""
    argv = [
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(certs_dir),
        "--tls-cert-file", str(certs_dir / "server.pem"), "--tls-key-file", str(certs_dir / "server.key"),
        "--tls-ca-cert-file", str(certs_dir / "ca.pem"),
        "--tls-auth-clients", "yes" if auth_clients else "no",
    ]  # fmt: skip
    if password:
        argv += ["--requirepass", password]
    return argv


def proxy_argv(port: int, *, basic_auth: str | None = None) -> list[str]:
    """proxy.py (the `proxy.py` package, in the dev extra) as a forward proxy with CONNECT on `port`."""
    argv = [
        sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port),
        "--num-workers", "1", "--num-acceptors", "1", "--log-level", "INFO",
    ]  # fmt: skip
    if basic_auth:
        argv += ["--basic-auth", basic_auth]
    return argv
