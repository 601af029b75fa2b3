"""Usage that cannot be written never blocks other usage: a batch that fails is retried event by event,
an event that still fails is parked (dead-letter table, logged with its generation id, in admin, in
/metrics and /readyz, reported by the auditor) and the rest lands. A database outage parks nothing.

Full mode drives the real hot path, Redis stream and Celery worker; the embedded writer is driven
directly (its own instance, so no other test's events ride along)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from io import StringIO
from typing import Any

import httpx
import orjson
import pytest
from django.core.management import call_command
from django.db import InterfaceError, OperationalError
from django.test import Client

from accounts.models import Organization
from billing.audit import books_audit_run
from billing.models import AuditFinding, LedgerEntry
from billing.usage import EmbeddedWriter
from routing.models import Generation
from switchyard.money import from_units, to_units
from tests.billing.conftest import wait_for
from tests.conftest import flush_usage
from tests.factories import UserFactory, make_key, make_org
from tests.live import free_port

pytestmark = pytest.mark.django_db(transaction=True)
FULL = bool(os.environ.get("REDIS_URL"))
HELLO = [{"role": "user", "content": "hi"}]


def _event(gen: str, org_id: int, *, cost: int = 0, key: int | None = None, **over: Any) -> dict[str, Any]:
    """A usage event as the hot path builds it (routing/gateway/settlement.py settlement_of)."""
    ev = {
        "gen": gen,
        "org": org_id,
        "key": key,
        "hold": None,
        "embedded": not FULL,
        "model": "billing/flat",
        "provider": "sim-billing",
        "endpoint": None,
        "byok": False,
        "kind": "chat",
        "status": "success",
        "streamed": False,
        "cancelled": False,
        "finish_reason": "stop",
        "native_finish_reason": "stop",
        "tokens": {"prompt": 3, "completion": 4},
        "estimated": False,
        "cost": cost,
        "latency_ms": 12,
        "ttft_ms": 5,
        "generation_time_ms": 7,
        "error": "",
        "attempts": [],
        "created": int(time.time()),
    }
    ev.update(over)
    return ev


# ---- embedded writer -----------------------------------------------------------------------------


def test_embedded_writer_parks_what_it_cannot_write_and_moves_on(caplog):
    gone = make_org(credits=None)
    gone_id = gone.pk
    gone.delete()  # a test's database flush (or an admin) removed the organisation mid-flight
    org = make_org(credits="1")
    key, _ = make_key(org)
    events = [
        _event("gen-gone", gone_id, cost=5),
        _event("gen-negative", org.pk, cost=7, key=key.pk, tokens={"prompt": -1, "completion": 2}),
        *[_event(f"gen-ok-{i}", org.pk, cost=11, key=key.pk) for i in range(3)],
    ]
    writer = EmbeddedWriter()
    caplog.set_level(logging.WARNING, logger="switchyard.usage")
    started = time.monotonic()
    for ev in events:
        writer.put(orjson.dumps(ev), ev["gen"])
    writer.put(b"{not json", None)
    assert writer.flush(timeout=60), "the writer never finished the batch"
    assert time.monotonic() - started < 60

    assert set(Generation.objects.values_list("pk", flat=True)) == {"gen-ok-0", "gen-ok-1", "gen-ok-2"}
    org.refresh_from_db()
    assert org.balance_units == to_units("1") - 33
    from billing.models import ParkedUsageEvent, ParkedUsageStatus

    parked = {p.generation_id: p for p in ParkedUsageEvent.objects.all()}
    assert set(parked) == {"gen-gone", "gen-negative", ""}
    assert parked["gen-gone"].org_id == gone_id and parked["gen-gone"].cost_units == 5
    assert parked["gen-negative"].org_id == org.pk and parked["gen-negative"].cost_units == 7
    assert all(p.status == ParkedUsageStatus.PARKED and p.attempts >= 1 for p in parked.values())
    assert orjson.loads(parked["gen-negative"].raw)["tokens"]["prompt"] == -1  # kept as received
    assert parked[""].raw == "{not json"
    assert all(p.reason for p in parked.values())
    assert not any(gen in writer.pending for gen in ("gen-gone", "gen-negative"))
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "switchyard.usage")
    assert "gen-gone" in logged and "gen-negative" in logged

    # The writer is free: the next event lands at once.
    writer.put(orjson.dumps(_event("gen-after", org.pk, cost=1)), "gen-after")
    assert writer.flush(timeout=30)
    assert Generation.objects.filter(pk="gen-after").exists()


def test_an_outage_is_not_a_data_error():
    """Money is never parked because the database was away: only the event's own faults park it."""
    from billing.usage import is_outage

    assert is_outage(OperationalError("server closed the connection unexpectedly"))
    assert is_outage(InterfaceError("connection already closed"))
    from django.db import DataError, IntegrityError

    assert not is_outage(IntegrityError("violates foreign key constraint"))
    assert not is_outage(DataError("value too long for type character varying(128)"))
    assert not is_outage(ValueError("bad field"))


def test_a_parked_event_is_in_admin_and_can_be_retried_once_fixed():
    from billing.models import ParkedUsageEvent, ParkedUsageStatus

    gone = make_org(credits=None, slug="restored-later")
    gone_id = gone.pk
    gone.delete()
    writer = EmbeddedWriter()
    writer.put(orjson.dumps(_event("gen-orphaned", gone_id, cost=to_units("0.25"))), "gen-orphaned")
    assert writer.flush(timeout=60)
    parked = ParkedUsageEvent.objects.get(generation_id="gen-orphaned")

    admin = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/billing/parkedusageevent/")
    assert page.status_code == 200 and "gen-orphaned" in page.content.decode()
    assert client.get(f"/admin/billing/parkedusageevent/{parked.pk}/change/").status_code == 200
    assert client.post("/admin/billing/parkedusageevent/add/", {}).status_code == 403

    # Retrying before the cause is fixed fails again and says so; nothing is lost.
    client.post(
        "/admin/billing/parkedusageevent/",
        {"action": "retry_parked", "_selected_action": [parked.pk]},
    )
    parked.refresh_from_db()
    assert parked.status == ParkedUsageStatus.PARKED and parked.attempts >= 2

    # The organisation is restored (from a backup): the retry writes the usage, exactly once.
    org = Organization.objects.create(pk=gone_id, slug="restored-later", name="Restored")
    for _ in range(2):
        client.post(
            "/admin/billing/parkedusageevent/",
            {"action": "retry_parked", "_selected_action": [parked.pk]},
        )
    parked.refresh_from_db()
    assert parked.status == ParkedUsageStatus.WRITTEN and parked.resolved_at is not None
    assert Generation.objects.filter(pk="gen-orphaned", organization=org).exists()
    org.refresh_from_db()
    assert org.balance_units == -to_units("0.25")
    assert LedgerEntry.objects.filter(source="gen-orphaned").count() == 1


def test_the_auditor_reports_parked_usage_instead_of_saying_the_books_balance():
    from billing.models import FindingKind, ParkedUsageEvent
    from billing.parking import parked_usage_dismiss

    org = make_org(credits="1")
    writer = EmbeddedWriter()
    bad = _event("gen-unwritable", org.pk, cost=to_units("0.0005"), tokens={"prompt": -3})
    writer.put(orjson.dumps(bad), "gen-unwritable")
    assert writer.flush(timeout=60)

    out = StringIO()
    call_command("audit_books", stdout=out)
    text = out.getvalue()
    assert "books balance" not in text
    assert "usage_parked: 1" in text and "usage_parked_units: 0.0005 USD" in text
    finding = AuditFinding.objects.get(kind=FindingKind.USAGE_PARKED, resolved_at__isnull=True)
    assert finding.subject == "gen-unwritable" and finding.organization_id == org.pk
    assert finding.expected_units == -to_units("0.0005")

    # Written off by an operator: the finding resolves and the books balance again.
    parked_usage_dismiss(parked_ids=[ParkedUsageEvent.objects.get().pk], user=None, note="test")
    out = StringIO()
    call_command("audit_books", stdout=out)
    assert "books balance" in out.getvalue()


# ---- full mode: the hot path, the Redis stream, the Celery worker ---------------------------------


@pytest.fixture
def poison_catalog(billing_catalog, tmp_path):
    """billing/flat plus billing/dead, whose only provider is a closed port (a fallback that fails)."""
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    path = tmp_path / "dead.yaml"
    path.write_text(
        f"""
providers:
  - slug: dead
    name: Dead
    api_format: openai
    base_url: "http://127.0.0.1:{free_port()}/v1"
    timeouts: {{connect: 1, first_byte: 2, between_chunks: 2, total: 4}}
models:
  - slug: billing/dead
    name: "Billing: dead"
    context_length: 8192
    endpoints:
      - provider: dead
        provider_model_id: dead
        pricing: {{prompt: "0.10", completion: "0.40"}}
        max_completion_tokens: 64
"""
    )
    catalog_load([path])
    catalog.clear()


def _metric(live: Any, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(live.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.skipif(not FULL, reason="the Redis stream and Celery drain are full mode")
def test_poisoned_usage_never_blocks_another_organisations(live, poison_catalog):
    from billing.holds import hold_place, hold_settle
    from billing.models import ParkedUsageEvent
    from switchyard.shared import sync_redis

    a, b = make_org(credits="1", slug="poisoner"), make_org(credits="1", slug="bystander")
    a_key, a_secret = make_key(a)
    _, b_secret = make_key(b)

    def post(secret: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            live.api + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )

    def settle(event: dict[str, Any]) -> None:
        """Queue an event through the settlement the hot path uses (an older build, or a field the
        front door does not check, could queue it)."""

        async def go() -> None:
            hold = await hold_place(org_id=a.pk, key_id=a_key.pk, amount_units=event["cost"])
            await hold_settle(
                hold, cost_units=event["cost"], event=orjson.dumps(event), generation_id=event["gen"]
            )

        assert live.loop is not None
        asyncio.run_coroutine_threadsafe(go(), live.loop).result(timeout=15)

    poison = [
        {"model": "billing/flat\x00evil", "models": ["billing/dead"], "messages": HELLO, "max_tokens": 4},
        {"model": "billing/" + "x" * 192, "models": ["billing/dead"], "messages": HELLO, "max_tokens": 4},
    ]
    ordinary = {"model": "billing/flat", "messages": HELLO, "max_tokens": 4}
    unwritable = _event(
        "gen-poison-tokens", a.pk, cost=to_units("0.0005"), key=a_key.pk, tokens={"prompt": -1}
    )
    raw_ids = [
        _event("gen-poison-nul", a.pk, cost=to_units("0.0001"), key=a_key.pk, model="billing/flat\x00evil"),
        _event("gen-poison-long", a.pk, cost=to_units("0.0001"), key=a_key.pk, model="b/" + "y" * 198),
    ]
    settle(unwritable)
    with ThreadPoolExecutor(max_workers=8) as pool:
        hostile = [pool.submit(post, a_secret, body) for body in poison]
        normal = [pool.submit(post, b_secret, ordinary) for _ in range(5)]
        for ev in raw_ids:
            settle(ev)
        b_responses = [f.result() for f in normal]
        a_responses = [f.result() for f in hostile]
    assert [r.status_code for r in b_responses] == [200] * 5
    b_cost = sum(Decimal(str(r.json()["usage"]["cost"])) for r in b_responses)
    assert b_cost > 0

    # B's usage lands promptly in /credits and the ledger while A's bad event is parked.
    def b_credits() -> Decimal:
        resp = httpx.get(live.api + "/credits", headers={"Authorization": f"Bearer {b_secret}"})
        return Decimal(str(resp.json()["data"]["total_usage"]))

    wait_for(lambda: b_credits() == b_cost, timeout=20, what="B's usage in /credits")
    assert LedgerEntry.objects.filter(organization=b, kind="usage").count() == 5
    parked = wait_for(
        lambda: ParkedUsageEvent.objects.filter(generation_id="gen-poison-tokens").first(),
        timeout=20,
        what="A's unwritable event parked",
    )
    assert parked.org_id == a.pk and parked.cost_units == to_units("0.0005") and parked.mirrored
    flush_usage(timeout=20)  # the stream empties: nothing is re-claimed forever
    assert sync_redis().xlen("sy:usage") == 0

    # The front door refuses the malformed ids (400 naming the field) before any event exists.
    for resp in a_responses:
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["metadata"]["field"] == "model"
    # Ids already queued raw are cleaned and bounded on the way in, and their charge lands.
    nul, long = (Generation.objects.get(pk=ev["gen"]) for ev in raw_ids)
    assert "\x00" not in nul.model and nul.model.startswith("billing/flat")
    assert len(long.model) <= 128
    assert LedgerEntry.objects.filter(organization=a, kind="usage").count() == 2

    # Surfaced: /metrics, /readyz and the auditor (whose mirror check allows for the parked charge).
    assert _metric(live, "switchyard_usage_parked_events") == 1
    assert _metric(live, "switchyard_usage_parked_usd") == pytest.approx(0.0005)
    ready = httpx.get(live.url + "/readyz").json()
    assert ready["checks"]["usage_parked"] == 1

    report = books_audit_run(mirror_settle_seconds=0.2)
    assert report.usage_parked == 1 and report.usage_parked_units == to_units("0.0005")
    assert report.findings == ["usage_parked:gen-poison-tokens"], report.findings
    a.refresh_from_db()
    mirror = int(sync_redis().hget(f"sy:o:{a.pk}", "bal"))
    assert mirror == a.balance_units - to_units("0.0005")  # the parked charge stays unspendable
    assert from_units(a.balance_units) == Decimal("1") - Decimal("0.0002")
