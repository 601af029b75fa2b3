"""SIGTERM on a real `manage.py serve`: streams in flight finish, or end with an error chunk at the
drain deadline; either way every hold is settled and the generation is recorded."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from routing.models import Generation
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.production.procs import NO_HOLDS, Served, load_slow_catalog, open_holds

pytestmark = pytest.mark.django_db(transaction=True)
# uvicorn ends a process it shut down gracefully by re-raising the signal it got.
EXITED = (0, -signal.SIGTERM)


class StreamReader(threading.Thread):
    """Reads one SSE stream to its end in the background; `first` is set at the first data event."""

    def __init__(self, url: str, key: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.model = url, key, model
        self.first = threading.Event()
        self.events: list[Any] = []
        self.status = 0
        self.gen_id = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Tell me a story."}],
        }
        try:
            with httpx.stream(
                "POST",
                self.url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=120,
            ) as resp:
                self.status = resp.status_code
                self.gen_id = resp.headers.get("x-generation-id", "")
                for line in resp.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    self.events.append(data if data == "[DONE]" else json.loads(data))
                    self.first.set()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.first.set()

    def text(self) -> str:
        return "".join(
            (c["choices"][0]["delta"].get("content") or "")
            for c in self.events
            if isinstance(c, dict) and c.get("choices")
        )


@pytest.fixture
def org_and_key(transactional_db, celery_worker_process):
    load_slow_catalog()
    org = make_org(credits="5")
    _, secret = make_key(org)
    return org, secret


def _served(url: str) -> bool:
    """Does a new connection get an answer? (With several workers the parent still holds the socket,
    so the kernel may complete the TCP handshake, but no worker accepts it any more.)"""
    try:
        httpx.get(url + "/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_sigterm_lets_a_stream_finish_within_the_deadline(org_and_key):
    org, key = org_and_key
    server = Served(workers=1, SWITCHYARD_SHUTDOWN_DRAIN_SECONDS="60").wait_ready()
    try:
        reader = StreamReader(server.api, key, "switchyard/sim-steady")  # ~45 tokens x 40 ms
        reader.start()
        assert reader.first.wait(30)
        server.sigterm()
        reader.join(60)
        assert reader.error is None, reader.error
        assert server.wait(60) in EXITED
    finally:
        server.stop()
    assert reader.status == 200
    assert reader.events[-1] == "[DONE]"
    finishes = [c["choices"][0].get("finish_reason") for c in reader.events[:-1] if c.get("choices")]
    assert finishes[-1] == "stop"
    assert not any("error" in c for c in reader.events[:-1])
    assert "simulated model" in reader.text()
    assert open_holds(org.id) == NO_HOLDS
    flush_usage()
    gen = Generation.objects.get(pk=reader.gen_id)
    assert gen.status == "success" and gen.cost_units > 0


def test_sigterm_ends_a_long_stream_with_an_error_chunk_and_settles_its_hold(org_and_key):
    org, key = org_and_key
    # Two workers: the SIGTERM goes to uvicorn's parent process, which passes it to each worker.
    server = Served(workers=2, SWITCHYARD_SHUTDOWN_DRAIN_SECONDS="3").wait_ready()
    try:
        reader = StreamReader(server.api, key, "switchyard/sim-slow")  # ~45 tokens x 400 ms = 18 s
        reader.start()
        assert reader.first.wait(30)
        server.sigterm()
        # While the stream is still being drained, new connections stop being served. How soon after
        # the signal depends on the box's load (the parent passes it on; each worker notices on its
        # next tick), so probe until they are refused, for at most 2.5 s of the 3 s drain.
        refused_while_draining = False
        give_up = time.monotonic() + 2.5
        while time.monotonic() < give_up and reader.is_alive():
            alive = reader.is_alive()
            if not _served(server.url):
                refused_while_draining = alive
                break
            time.sleep(0.1)
        reader.join(60)
        assert reader.error is None, reader.error
        assert server.wait(60) in EXITED
        output = server.output()
    finally:
        server.stop()
    assert refused_while_draining, "new connections were still served 2.5 s after SIGTERM, mid-drain"
    assert reader.status == 200
    assert reader.events[-1] == "[DONE]"
    errors = [c for c in reader.events[:-1] if "error" in c]
    assert len(errors) == 1
    assert errors[0]["error"]["code"] == 503
    assert "shutting down" in errors[0]["error"]["message"]
    assert errors[0]["choices"][0]["finish_reason"] == "error"
    produced = reader.text()
    assert produced and len(produced) < 150  # cut short: the whole answer is ~45 tokens
    usage = [c for c in reader.events[:-1] if c.get("usage")]
    assert usage and usage[-1]["usage"]["completion_tokens"] > 0
    assert "drain deadline" in output
    assert open_holds(org.id) == NO_HOLDS
    flush_usage()
    gen = Generation.objects.get(pk=reader.gen_id)
    assert gen.status == "error" and "shutting down" in gen.error
    assert gen.cost_units > 0  # what was produced is charged
    org.refresh_from_db()
    assert org.balance_units == 5 * 10**12 - gen.cost_units
