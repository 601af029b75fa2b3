"""Static files through the real ASGI server (switchyard/staticfiles.py answers them with a whole body
under ASGI): the file's bytes with WhiteNoise's headers, byte ranges, HEAD and 404s."""

from __future__ import annotations

from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "static" / "vendor" / "chart-4.6.1.umd.min.js"


def test_a_static_file_is_served_whole_with_its_headers(live):
    url = f"{live.url}/static/vendor/{CHART.name}"
    resp = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert resp.status_code == 200
    assert resp.content == CHART.read_bytes()
    assert resp.headers["content-type"].startswith("text/javascript")
    assert int(resp.headers["content-length"]) == CHART.stat().st_size
    assert "max-age" in resp.headers.get("cache-control", "")


def test_byte_ranges_and_head(live):
    url = f"{live.url}/static/vendor/{CHART.name}"
    part = httpx.get(url, headers={"Range": "bytes=10-29", "Accept-Encoding": "identity"})
    assert part.status_code == 206
    assert part.content == CHART.read_bytes()[10:30]
    head = httpx.head(url, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == CHART.stat().st_size


def test_an_unknown_static_file_is_a_404(live):
    assert httpx.get(f"{live.url}/static/vendor/nope.js").status_code == 404
