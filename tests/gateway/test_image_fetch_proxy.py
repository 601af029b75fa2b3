"""Image URLs fetched through an HTTP proxy (proxy.py on 127.0.0.1, requiring credentials): the fetch
goes through the proxy, and a name resolving to a non-public address is still refused before it."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from routing.gateway import images
from tests.fakes.gemini_upstream import PIXEL_PNG
from tests.fakes.processes import free_port, proxy_argv, running
from tests.gateway.test_image_fetch import ImageServer

USER, PASSWORD = "egress", "s3cret"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    argv = proxy_argv(port, basic_auth=f"{USER}:{PASSWORD}")
    with running(argv, port, tmp_path_factory.mktemp("proxy") / "proxy.log"):
        yield port


@pytest.fixture(scope="module")
def public() -> Iterator[ImageServer]:
    with ImageServer("127.0.0.1") as server:
        yield server


@pytest.fixture
def public_loopback(settings, monkeypatch):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    real = images.address_allowed
    monkeypatch.setattr(images, "address_allowed", lambda address: address == "127.0.0.1" or real(address))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_the_image_is_fetched_through_the_proxy(public, proxy, public_loopback, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy}")  # no credentials: the proxy refuses
    with pytest.raises(images.ImageFetchError, match="answered HTTP 407"):
        await images.fetch_image(public.url("/pixel.png"))
    monkeypatch.setenv("HTTP_PROXY", f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy}")
    ctype, data = await images.fetch_image(public.url("/pixel.png"))
    assert (ctype, base64.b64decode(data)) == ("image/png", PIXEL_PNG)


async def test_a_name_resolving_to_a_private_address_is_refused_before_the_proxy(
    public, proxy, settings, monkeypatch
):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    monkeypatch.setenv("HTTP_PROXY", f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy}")
    before = public.hit_count()
    with pytest.raises(images.ImageFetchError, match="localhost resolves to a non-public address"):
        await images.fetch_image(f"http://localhost:{public.port}/pixel.png")
    assert public.hit_count() == before
