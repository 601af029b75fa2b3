"""switchyard/fastredis.py over TLS: the hot path's Redis connection honours every rediss:// option that
redis-py (and so the cache and Celery) honours, against real TLS redis-servers on 127.0.0.1 started here
with a private CA made at test time; an option it cannot honour stops start-up, naming it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
import redis
import uvloop
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as RedisConnectionError

from switchyard.env import env_redis_url
from switchyard.fastredis import FastRedis, Script, UnsupportedRedisOption, connection_options
from tests.fakes.processes import free_port, redis_tls_argv, running
from tests.fakes.tls import Certs, make_certs

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

PASSWORD = "s3cret-pass"
ECHO = Script("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module")
def tls_redis(certs: Certs) -> Iterator[int]:
    """TLS only, a password, no client certificate asked for."""
    port = free_port()
    argv = redis_tls_argv(port, certs.ca.parent, auth_clients=False, password=PASSWORD)
    with running(argv, port, certs.ca.parent / f"redis-{port}.log"):
        yield port


@pytest.fixture(scope="module")
def mtls_redis(certs: Certs) -> Iterator[int]:
    """TLS only, and the client must present a certificate signed by the CA."""
    port = free_port()
    with running(
        redis_tls_argv(port, certs.ca.parent, auth_clients=True), port, certs.ca.parent / f"redis-{port}.log"
    ):
        yield port


async def _call(url: str, value: str = "v") -> bytes:
    client = FastRedis(url, asyncio.get_running_loop())
    try:
        reply: bytes = await client.evalsha(ECHO, ["sy:test:tls"], [value])
        return reply
    finally:
        client.close()


def call(url: str, value: str = "v", loop: str = "asyncio") -> bytes:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_call(url, value))


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # uvloop: what production runs


@LOOPS
def test_private_ca_works_with_ssl_ca_certs(tls_redis: int, certs: Certs, loop: str) -> None:
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis}/0?ssl_ca_certs={certs.ca}"
    assert call(url, "a", loop) == b"a"
    assert redis.Redis.from_url(url).get("sy:test:tls") == b"a"  # redis-py agrees on the same URL


@LOOPS
def test_private_ca_without_ssl_ca_certs_fails_clearly(tls_redis: int, loop: str) -> None:
    with pytest.raises(
        RedisConnectionError, match=r"TLS handshake with Redis failed.*certificate verify failed"
    ):
        call(f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis}/0", loop=loop)


def test_ssl_cert_reqs_none_skips_verification(tls_redis: int) -> None:
    assert call(f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis}/0?ssl_cert_reqs=none", "b") == b"b"


def test_hostname_is_checked_unless_ssl_check_hostname_is_off(tls_redis: int, certs: Certs) -> None:
    # The certificate names 127.0.0.1 only: "localhost" reaches the same server under another name.
    base = f"rediss://:{PASSWORD}@localhost:{tls_redis}/0?ssl_ca_certs={certs.ca}"
    with pytest.raises(RedisConnectionError, match=r"TLS handshake.*(hostname|match|IP address mismatch)"):
        call(base)
    assert call(base + "&ssl_check_hostname=false", "c") == b"c"


def test_wrong_password_is_a_connection_error(tls_redis: int, certs: Certs) -> None:
    with pytest.raises(RedisConnectionError, match="refused the connection's set-up"):
        call(f"rediss://:wrong@127.0.0.1:{tls_redis}/0?ssl_ca_certs={certs.ca}")


def test_username_password_and_db_are_used(tls_redis: int, certs: Certs) -> None:
    url = f"rediss://default:{PASSWORD}@127.0.0.1:{tls_redis}/5?ssl_ca_certs={certs.ca}"
    assert call(url, "in-five") == b"in-five"
    r = redis.Redis.from_url(url.replace("/5?", "/0?"))
    assert r.get("sy:test:tls") != b"in-five"
    assert redis.Redis.from_url(url).get("sy:test:tls") == b"in-five"


@LOOPS
def test_client_certificate_required_by_the_server(mtls_redis: int, certs: Certs, loop: str) -> None:
    base = f"rediss://127.0.0.1:{mtls_redis}/0?ssl_ca_certs={certs.ca}"
    assert call(f"{base}&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}", "d", loop) == b"d"
    with pytest.raises(RedisConnectionError):  # no client certificate: the server ends the handshake
        call(base, loop=loop)


def test_timeouts_and_client_name_come_from_the_url(tls_redis: int, certs: Certs) -> None:
    url = (
        f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis}/0?ssl_ca_certs={certs.ca}"
        "&socket_timeout=1.5&socket_connect_timeout=0.75&client_name=sy-hot-path&socket_keepalive=true"
    )
    options = connection_options(url)
    assert (options.reply_timeout, options.connect_timeout, options.keepalive) == (1.5, 0.75, True)

    async def main() -> bytes:
        client = FastRedis(url, asyncio.get_running_loop())
        try:
            reply: bytes = await client.execute(b"CLIENT", b"GETNAME")
            return reply
        finally:
            client.close()

    assert asyncio.run(main()) == b"sy-hot-path"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ssl_validate_ocsp=true", "ssl_validate_ocsp"),
        ("retry_on_timeout=true", "retry_on_timeout"),
        ("no_such_option=1", "no_such_option"),
        ("ssl_ca_certs=/nonexistent/ca.pem", "TLS files"),
        ("ssl_cert_reqs=sometimes", "TLS options"),
    ],
)
def test_an_option_that_cannot_be_honoured_stops_start_up(
    query: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"rediss://127.0.0.1:6390/0?{query}"
    with pytest.raises(UnsupportedRedisOption, match=named):
        connection_options(url)
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ImproperlyConfigured, match=f"REDIS_URL: .*{named}"):
        env_redis_url("REDIS_URL")


def test_tls_options_on_a_plain_url_are_refused() -> None:
    with pytest.raises(UnsupportedRedisOption, match="ssl_ca_certs needs a rediss://"):
        connection_options("redis://127.0.0.1:6390/0?ssl_ca_certs=/x")


def test_pool_options_are_accepted(certs: Certs) -> None:
    options = connection_options(
        f"rediss://127.0.0.1:6390/0?ssl_ca_certs={certs.ca}&max_connections=50&health_check_interval=30&retry_on_timeout=false"
    )
    assert options.tls is not None and options.server_hostname == "127.0.0.1"
