"""Holds under concurrency and crashes, through the live server: no burst overspends an organisation or a
key limit, and a hold left by a killed web process expires, is reaped, and leaves the books balanced."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from django.conf import settings

from accounts.models import Organization
from billing.audit import books_audit_run
from billing.models import EntryKind, Hold, HoldStatus, LedgerEntry
from billing.selectors import ledger_balance_units
from routing.models import Generation
from switchyard.money import to_units
from switchyard.shared import redis_enabled, sync_redis
from tests.billing.conftest import wait_for
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
BODY = {
    "model": "billing/flat",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Count to three."}],
}
REQUEST_FEE = to_units("0.001")


def _worst_case() -> int:
    """What one BODY request reserves (prompt bytes + max_tokens at 1 picodollar each, plus the fee)."""
    from routing.request import completion_request

    req = completion_request(dict(BODY), kind="chat", models=[BODY["model"]])  # type: ignore[list-item]
    return REQUEST_FEE + req.bound.size + BODY["max_tokens"]  # type: ignore[operator]


def _burst(url: str, secret: str, n: int) -> list[int]:
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def one() -> int:
                r = await client.post(
                    f"{url}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}
                )
                if r.status_code == 402:
                    assert r.json()["error"]["code"] == 402
                return r.status_code

            return await asyncio.gather(*(one() for _ in range(n)))

    return asyncio.run(run())


class AvailSampler:
    """Full mode: watch the organisation's available credit in Redis while the burst runs."""

    def __init__(self, org_id: int) -> None:
        self.org_id, self.lowest, self._stop = org_id, None, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = sync_redis()
        while not self._stop.is_set():
            value = client.hget(f"sy:o:{self.org_id}", "avail")
            if value is not None:
                self.lowest = int(value) if self.lowest is None else min(self.lowest, int(value))
            time.sleep(0.002)

    def __enter__(self) -> AvailSampler:
        if redis_enabled():
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join()


def _assert_books_balance(org: Organization) -> None:
    flush_usage()
    balance = Organization.objects.values_list("balance_units", flat=True).get(pk=org.pk)
    assert balance >= 0
    assert balance == ledger_balance_units(organization_id=org.pk)
    report = books_audit_run(mirror_settle_seconds=0.2)
    assert report.findings == []
    for gen in Generation.objects.filter(organization=org):
        assert LedgerEntry.objects.get(kind=EntryKind.USAGE, source=gen.pk).amount_units == -gen.cost_units


def test_fifty_concurrent_requests_against_a_balance_for_five(live, billing_catalog):
    worst = _worst_case()
    org = make_org(credits=None)
    from billing.services import credits_grant
    from switchyard.money import from_units

    credits_grant(organization=org, amount_usd=from_units(5 * worst + worst // 2), reason="covers five")
    _, secret = make_key(org)
    with AvailSampler(org.pk) as sampler:
        statuses = _burst(live.api, secret, 50)
    assert statuses.count(200) == 5, statuses
    assert statuses.count(402) == 45
    if redis_enabled():
        assert sampler.lowest is not None and sampler.lowest >= 0
    _assert_books_balance(org)
    charged = -sum(
        LedgerEntry.objects.filter(organization=org, kind=EntryKind.USAGE).values_list(
            "amount_units", flat=True
        )
    )
    assert 5 * REQUEST_FEE < charged <= 5 * worst


def test_fifty_concurrent_requests_against_a_key_limit_for_five(live, billing_catalog):
    from switchyard.money import from_units

    worst = _worst_case()
    org = make_org(credits="100")
    key, secret = make_key(org, limit_usd=from_units(5 * worst + worst // 2))
    statuses = _burst(live.api, secret, 50)
    assert statuses.count(200) == 5, statuses
    assert statuses.count(402) == 45
    _assert_books_balance(org)
    spent = -sum(
        LedgerEntry.objects.filter(api_key=key, kind=EntryKind.USAGE).values_list("amount_units", flat=True)
    )
    assert spent <= key.limit_units
    assert Organization.objects.get(pk=org.pk).balance_units == to_units("100") - spent


def _server_env(ttl: int) -> dict[str, str]:
    db = settings.DATABASES["default"]
    env = {**os.environ, "DEBUG": "1", "SWITCHYARD_TESTING": "1", "SWITCHYARD_HOLD_TTL_SECONDS": str(ttl)}
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return env


def test_a_web_process_killed_mid_stream_leaves_a_hold_that_expires_and_is_reaped(billing_catalog, live):
    # One slow request reserves ~$0.000026 (64 tokens at $0.40/M + the prompt): the balance covers one.
    org = make_org(credits="0.00004")
    _, secret = make_key(org)
    slow = {"model": "billing/slow", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "switchyard.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=_server_env(ttl=2),
    )
    try:
        wait_for(lambda: _up(port), timeout=30, what="the subprocess server")
        body = {**slow, "stream": True}
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/api/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            os.kill(proc.pid, signal.SIGKILL)  # between hold and settle
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # The dead worker's hold is still reserving credit...
    if redis_enabled():
        client = sync_redis()
        assert int(client.hget(f"sy:o:{org.pk}", "held")) > 0
    else:
        assert Hold.objects.filter(organization=org, status=HoldStatus.OPEN).count() == 1
    refused = httpx.post(
        f"{live.api}/chat/completions", json=slow, headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 402
    # ...until it expires and the reaper (the real Celery worker in full mode) releases it.
    time.sleep(2.5)
    from billing.tasks import holds_reap

    holds_reap.delay()
    if redis_enabled():
        wait_for(lambda: int(client.hget(f"sy:o:{org.pk}", "held")) == 0, what="the reaper")
        assert int(client.hget(f"sy:o:{org.pk}", "avail")) == to_units("0.00004")
    else:
        assert Hold.objects.get(organization=org).status == HoldStatus.EXPIRED
    assert not LedgerEntry.objects.filter(organization=org, kind=EntryKind.USAGE).exists()
    # The whole balance is available again: the same request now goes through.
    r = httpx.post(
        f"{live.api}/chat/completions", json=slow, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    _assert_books_balance(org)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
