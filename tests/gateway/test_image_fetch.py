"""Server-side image fetching (routing/gateway/images.py): SSRF rules, redirects, size, time and content
type limits, against real HTTP servers on 127.0.0.1 and 127.0.0.2, and end to end through the gateway.

Loopback is forbidden by the SSRF rules, so the tests reach their servers in one of two ways:
`SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE` (everything allowed), or the `public_loopback` fixture, which
treats exactly 127.0.0.1 as a public address while every other address (127.0.0.2 included, where a
second real server answers) keeps the real rule. A redirect from the "public" server to the private one
is then a real redirect to a reachable private address: if the rule were missing, the fetch would succeed.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from decimal import Decimal
from urllib.parse import urlencode

import anthropic
import openai
import pytest
from aiohttp import web
from django.conf import settings
from django.test import override_settings

from routing.gateway import images
from tests.fakes.base import ThreadedServer, sleep_unless_shutdown, wait_for_shutdown
from tests.fakes.gemini_upstream import PIXEL_PNG
from tests.gateway.test_native_providers import (  # noqa: F401  (fixtures)
    claude,
    fakes,
    native_catalog,
    oai,
    org,
    secret,
)

LIMIT = settings.SWITCHYARD_IMAGE_FETCH_MAX_BYTES


class ImageServer(ThreadedServer):
    """Serves images (and non-images) with the behaviours the fetcher must handle; counts hits per path."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit_count(self, path: str = "") -> int:
        with self._lock:
            return sum(n for p, n in self.hits.items() if p.startswith(path))

    def build_app(self) -> web.Application:
        app = web.Application()

        @web.middleware
        async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
            with self._lock:
                self.hits[request.path] = self.hits.get(request.path, 0) + 1
            return await handler(request)

        app.middlewares.append(count)
        r = app.router
        r.add_get("/pixel.png", self._pixel)
        r.add_get("/chunked-pixel", self._chunked_pixel)
        r.add_get("/typed", self._typed)
        r.add_get("/exact", self._exact)
        r.add_get("/declared-too-big", self._declared_too_big)
        r.add_get("/chunked-too-big", self._chunked_too_big)
        r.add_get("/stall", self._stall)
        r.add_get("/slow-headers", self._slow_headers)
        r.add_get("/trickle", self._trickle)
        r.add_get("/redirect", self._redirect)
        r.add_get("/loop", self._redirect_loop)
        return app

    async def _pixel(self, request: web.Request) -> web.Response:
        return web.Response(body=PIXEL_PNG, content_type="image/png")

    async def _chunked_pixel(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(PIXEL_PNG)
        await resp.write_eof()
        return resp

    async def _exact(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * LIMIT, content_type="image/png")

    async def _declared_too_big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * (LIMIT + 1), content_type="image/png")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _redirect_loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _typed(self, request: web.Request) -> web.Response:
        return web.Response(body=PIXEL_PNG, headers={"Content-Type": request.query["ct"]})

    async def _chunked_too_big(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()  # no Content-Length: only counting the bytes can stop it
        await resp.prepare(request)
        piece = b"\0" * (1024 * 1024)
        for _ in range(LIMIT // len(piece)):
            await resp.write(piece)
        await resp.write(b"\0" * (LIMIT % len(piece) + 1))
        await resp.write_eof()
        return resp

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(PIXEL_PNG[:8])
        await wait_for_shutdown(request.app)
        return resp

    async def _slow_headers(self, request: web.Request) -> web.Response:
        await wait_for_shutdown(request.app)
        return web.Response(body=PIXEL_PNG, content_type="image/png")

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        """Never silent for long, never finished: only a deadline on the whole download stops it."""
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        while not await sleep_unless_shutdown(request.app, 0.05):
            await resp.write(b"\0")
        return resp


@pytest.fixture(scope="module")
def public():
    with ImageServer("127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def private():
    with ImageServer("127.0.0.2") as server:
        yield server


@pytest.fixture
def allow_private(settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = True


@pytest.fixture
def public_loopback(settings, monkeypatch):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    real = images.address_allowed
    monkeypatch.setattr(images, "address_allowed", lambda address: address == "127.0.0.1" or real(address))


def decoded(result: tuple[str, str]) -> tuple[str, bytes]:
    return result[0], base64.b64decode(result[1])


# ---- SSRF ------------------------------------------------------------------------------------------


async def test_both_servers_are_reachable_when_private_addresses_are_allowed(public, private, allow_private):
    """The control for the refusals below: both servers answer, so a refusal is the rule, not the network."""
    assert decoded(await images.fetch_image(public.url("/pixel.png"))) == ("image/png", PIXEL_PNG)
    assert decoded(await images.fetch_image(private.url("/pixel.png"))) == ("image/png", PIXEL_PNG)
    target = private.url("/pixel.png")
    assert decoded(await images.fetch_image(public.url(f"/redirect?to={target}"))) == ("image/png", PIXEL_PNG)


async def test_public_address_is_fetched(public, public_loopback):
    assert decoded(await images.fetch_image(public.url("/pixel.png"))) == ("image/png", PIXEL_PNG)
    # A same-host redirect is followed.
    assert decoded(await images.fetch_image(public.url("/redirect?to=/pixel.png"))) == (
        "image/png",
        PIXEL_PNG,
    )


async def test_private_literal_address_is_refused_before_connecting(private, public_loopback):
    before = private.hit_count()
    with pytest.raises(images.ImageFetchError, match=r"the address 127\.0\.0\.2 is not public"):
        await images.fetch_image(private.url("/pixel.png"))
    assert private.hit_count() == before


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/pixel.png",  # loopback, and a live server is there
        "http://[::ffff:127.0.0.2]:{port}/pixel.png",  # the same, IPv4-mapped IPv6
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://10.0.0.1/x.png",  # RFC 1918
        "http://192.168.1.1/x.png",
        "http://[::1]/x.png",
        "http://[fe80::1]/x.png",
        "http://0.0.0.0:{port}/pixel.png",
        "http://192.0.0.8/x.png",  # IANA's IPv4 dummy address: `is_global` let it through
        "http://[2002:7f00:2::1]:{port}/pixel.png",  # 6to4 wrapping 127.0.0.2
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/",  # 6to4 wrapping the metadata address
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 wrapping it
    ],
)
async def test_redirect_to_a_private_address_is_refused(public, private, public_loopback, target):
    before = private.hit_count()
    location = target.format(port=private.port)
    with pytest.raises(images.ImageFetchError, match="is not public"):
        await images.fetch_image(public.url("/redirect?to=" + location))
    assert public.hit_count("/redirect") >= 1
    assert private.hit_count() == before


async def test_name_resolving_to_loopback_is_refused(public, settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    before = public.hit_count()
    with pytest.raises(images.ImageFetchError, match="localhost resolves to a non-public address"):
        await images.fetch_image(f"http://localhost:{public.port}/pixel.png")
    assert public.hit_count() == before


async def test_redirect_to_a_name_resolving_to_loopback_is_refused(public, private, settings, monkeypatch):
    """First hop public (by the fixture's rule for 127.0.0.1), second hop a *name* for 127.0.0.2."""
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    real = images.address_allowed
    monkeypatch.setattr(images, "address_allowed", lambda address: address == "127.0.0.1" or real(address))
    resolved: list[str] = []
    inner_resolve = images.system_resolve

    async def resolve(host, port):  # type: ignore[no-untyped-def]
        # "private-host.test" resolves (like a hostile DNS record would) to 127.0.0.2.
        if host == "private-host.test":
            resolved.append(host)
            return await inner_resolve("127.0.0.2", port)
        return await inner_resolve(host, port)

    monkeypatch.setattr(images, "system_resolve", resolve)
    before = private.hit_count()
    with pytest.raises(images.ImageFetchError, match="non-public address"):
        await images.fetch_image(
            public.url(f"/redirect?to=http://private-host.test:{private.port}/pixel.png")
        )
    assert resolved == ["private-host.test"] and private.hit_count() == before


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/x.png", "gopher://example.com/", "http:///nohost.png"],
)
async def test_only_http_urls(url, settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = True  # the scheme rule holds regardless
    with pytest.raises(images.ImageFetchError, match=r"only http\(s\) image URLs"):
        await images.fetch_image(url)


async def test_redirect_to_another_scheme_is_refused(public, allow_private):
    with pytest.raises(images.ImageFetchError, match=r"only http\(s\) image URLs"):
        await images.fetch_image(public.url("/redirect?to=file:///etc/passwd"))


async def test_redirect_loop_stops(public, allow_private):
    before = public.hit_count("/loop")
    with pytest.raises(images.ImageFetchError, match="more than 3 redirects"):
        await images.fetch_image(public.url("/loop"))
    assert public.hit_count("/loop") - before == 3 + 1


async def test_lowered_redirect_limit(public, allow_private):
    target = public.url("/pixel.png")
    once = public.url("/redirect?" + urlencode({"to": target}))
    with override_settings(SWITCHYARD_IMAGE_FETCH_MAX_REDIRECTS=0):
        with pytest.raises(images.ImageFetchError, match="more than 0 redirects"):
            await images.fetch_image(once)
    with override_settings(SWITCHYARD_IMAGE_FETCH_MAX_REDIRECTS=1):
        assert decoded(await images.fetch_image(once)) == ("image/png", PIXEL_PNG)


# ---- size, time, content type ----------------------------------------------------------------------


async def test_image_of_exactly_the_limit_is_fetched(public, public_loopback):
    ctype, data = decoded(await images.fetch_image(public.url("/exact")))
    assert ctype == "image/png" and len(data) == LIMIT


async def test_declared_size_over_the_limit_is_refused(public, public_loopback):
    with pytest.raises(images.ImageFetchError, match=f"larger than {LIMIT} bytes"):
        await images.fetch_image(public.url("/declared-too-big"))


async def test_undeclared_size_over_the_limit_is_refused(public, public_loopback):
    with pytest.raises(images.ImageFetchError, match=f"larger than {LIMIT} bytes"):
        await images.fetch_image(public.url("/chunked-too-big"))


async def test_lowered_size_limit(public, public_loopback):
    """The pixel is fetched at the default limit and refused one byte under its size, declared or not."""
    size = len(PIXEL_PNG)
    with override_settings(SWITCHYARD_IMAGE_FETCH_MAX_BYTES=size):
        assert decoded(await images.fetch_image(public.url("/pixel.png")))[1] == PIXEL_PNG
    with override_settings(SWITCHYARD_IMAGE_FETCH_MAX_BYTES=size - 1):
        with pytest.raises(images.ImageFetchError, match=f"larger than {size - 1} bytes"):
            await images.fetch_image(public.url("/pixel.png"))
        with pytest.raises(images.ImageFetchError, match=f"larger than {size - 1} bytes"):
            await images.fetch_image(public.url("/chunked-pixel"))


@pytest.mark.parametrize("path", ["/stall", "/slow-headers", "/trickle"])
async def test_download_time_limit(public, public_loopback, path):
    with pytest.raises(images.ImageFetchError, match=r"did not download within 0\.5s"):
        await images.fetch_image(public.url(path), timeout=0.5)


@override_settings(SWITCHYARD_IMAGE_FETCH_TIMEOUT_SECONDS=Decimal("0.5"))
async def test_default_time_limit_is_applied(public, public_loopback):
    """The gateway calls fetch_image without a timeout: the setting must bound a server that never ends."""
    req = {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": public.url("/stall")}]}]
    }
    with pytest.raises(
        images.ImageFetchError, match=r"^messages\[0\]\.content\[0\]\.image_url\.url: .*0\.5s"
    ):
        await asyncio.wait_for(images.inline_images(req), 30)


@pytest.mark.parametrize(
    "kind", ["image/png", "image/jpeg", "image/gif", "image/webp", "IMAGE/PNG; charset=x"]
)
async def test_allowed_content_types(public, public_loopback, kind):
    ctype, data = decoded(await images.fetch_image(public.url("/typed?" + urlencode({"ct": kind}))))
    assert ctype == kind.split(";")[0].lower() and data == PIXEL_PNG


@pytest.mark.parametrize(
    "kind", ["image/svg+xml", "text/html", "application/octet-stream", "image/tiff", "application/json"]
)
async def test_refused_content_types(public, public_loopback, kind):
    with pytest.raises(images.ImageFetchError, match=re.escape(f"content type '{kind}' is not one of")):
        await images.fetch_image(public.url("/typed?" + urlencode({"ct": kind})))


# ---- end to end: the gateway answers 400 and never calls the provider -----------------------------


@pytest.mark.django_db(transaction=True)
def test_openai_sdk_oversized_image_is_a_400(oai, fakes, public, public_loopback):  # noqa: F811
    content = [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": public.url("/declared-too-big")}},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="test/gemini", messages=[{"role": "user", "content": content}])
    assert "messages[0].content[1].image_url.url" in err.value.message
    assert f"larger than {LIMIT} bytes" in err.value.message
    assert fakes["gemini"].requests == []


@pytest.mark.django_db(transaction=True)
def test_chat_image_on_a_6to4_address_wrapping_loopback_is_a_400(oai, fakes, private, public_loopback):  # noqa: F811
    """Through the gateway: 2002:7f00:2:: is 6to4 for 127.0.0.2, where a live server answers."""
    url = f"http://[2002:7f00:2::1]:{private.port}/pixel.png"
    content = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="test/gemini", messages=[{"role": "user", "content": content}])
    assert "messages[0].content[1].image_url.url" in err.value.message
    assert "is not public" in err.value.message
    assert fakes["gemini"].requests == []


@pytest.mark.django_db(transaction=True)
def test_messages_redirect_to_private_address_is_a_400(claude, fakes, public, private, public_loopback):  # noqa: F811
    before = private.hit_count()
    url = public.url(f"/redirect?to={private.url('/pixel.png')}")
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(
            model="test/gemini",
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "url", "url": url}}],
                }
            ],
        )
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "is not public" in err.value.body["error"]["message"]
    assert private.hit_count() == before and fakes["gemini"].requests == []


@pytest.mark.django_db(transaction=True)
def test_messages_stream_to_gemini_with_fetched_image_and_tool(claude, fakes, public, public_loopback):  # noqa: F811
    """The anthropic SDK streaming through /messages to a Gemini-format endpoint: the image URL is fetched
    and inlined, the stream goes to streamGenerateContent?alt=sse, and the answer comes back as
    Anthropic events."""
    upstream = fakes["gemini"]
    with claude.messages.stream(
        model="test/gemini",
        max_tokens=300,
        system="Describe images.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "url", "url": public.url("/redirect?to=/pixel.png")},
                    },
                ],
            }
        ],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    sent = upstream.last
    assert sent.path == "/v1beta/models/gemini-test-1:streamGenerateContent" and sent.query == {"alt": "sse"}
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Describe images."}]}
    inline = [p["inlineData"] for p in sent.json["contents"][0]["parts"] if "inlineData" in p]
    assert inline == [{"mimeType": "image/png", "data": base64.b64encode(PIXEL_PNG).decode()}]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events and "message_delta" in events
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"
    assert f"I see 1 image(s): image/png {len(PIXEL_PNG)} bytes" in final.content[0].text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
