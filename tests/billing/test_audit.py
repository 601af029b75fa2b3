"""The books auditor finds planted discrepancies, repairs cached copies from the ledger, and stays quiet on
clean books. Run in-process and, in full mode, by the real Celery worker."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Organization
from billing.audit import books_audit_run
from billing.models import AuditFinding, EntryKind, FindingKind
from billing.services import ledger_append, usage_charge
from routing.models import Generation
from switchyard.money import to_units
from switchyard.shared import redis_enabled, sync_redis
from tests.billing.conftest import wait_for
from tests.factories import UserFactory, make_org

pytestmark = pytest.mark.django_db(transaction=True)


def _generation(gen_id: str, org: Organization, cost: int) -> Generation:
    return Generation.objects.create(
        id=gen_id, organization=org, model="m", status="success", cost_units=cost, created_at=timezone.now()
    )


def _open(kind: str) -> list[AuditFinding]:
    return list(AuditFinding.objects.filter(kind=kind, resolved_at__isnull=True))


def test_clean_books_have_no_findings():
    org = make_org(credits="3")
    _generation("gen-clean", org, 123)
    usage_charge(
        organization_id=org.pk, generation_id="gen-clean", cost_units=123, api_key_id=None, model="m"
    )
    report = books_audit_run(mirror_settle_seconds=0.1)
    assert report.findings == [] and report.clean
    assert report.generations == 1 and report.total_charged_units == 123
    assert not AuditFinding.objects.exists()


def test_planted_ledger_discrepancies_are_found():
    org = make_org(credits="3")
    # 1. the cached balance drifts from the ledger (repaired: the ledger is the truth)
    Organization.objects.filter(pk=org.pk).update(balance_units=to_units("4"))
    # 2. a finished generation with no usage entry
    _generation("gen-missing", org, 500)
    # 3. a usage entry that disagrees with its generation's cost
    _generation("gen-wrong", org, 700)
    ledger_append(organization_id=org.pk, kind=EntryKind.USAGE, amount_units=-699, source="gen-wrong")
    # 4. a usage entry without a generation
    ledger_append(organization_id=org.pk, kind=EntryKind.USAGE, amount_units=-5, source="gen-orphan")

    report = books_audit_run(mirror_settle_seconds=0.1)
    assert sorted(report.findings) == sorted(
        [
            f"balance_mismatch:org:{org.pk}",
            "usage_missing:gen-missing",
            "usage_mismatch:gen-wrong",
            "usage_orphan:gen-orphan",
        ]
    )
    (balance,) = _open(FindingKind.BALANCE_MISMATCH)
    assert balance.repaired and balance.expected_units == to_units("3") - 704
    assert balance.actual_units == to_units("4") - 704
    assert Organization.objects.get(pk=org.pk).balance_units == to_units("3") - 704
    (wrong,) = _open(FindingKind.USAGE_MISMATCH)
    assert wrong.expected_units == -700 and wrong.actual_units == -699 and not wrong.repaired

    # A second run does not duplicate open findings; the repaired balance is resolved.
    again = books_audit_run(mirror_settle_seconds=0.1)
    assert f"balance_mismatch:org:{org.pk}" not in again.findings
    assert AuditFinding.objects.filter(kind=FindingKind.USAGE_MISSING).count() == 1
    assert AuditFinding.objects.get(kind=FindingKind.BALANCE_MISMATCH).resolved_at is not None


@pytest.mark.skipif(not redis_enabled(), reason="the Redis mirror exists in full mode only")
def test_redis_mirror_drift_is_found_and_repaired():
    from asgiref.sync import async_to_sync

    from billing.holds import _redis_init

    org = make_org(credits="2")
    async_to_sync(_redis_init)(org.pk)
    client = sync_redis()
    client.hincrby(f"sy:o:{org.pk}", "bal", 12345)
    client.hincrby(f"sy:o:{org.pk}", "avail", 12345)
    report = books_audit_run(mirror_settle_seconds=0.1)
    assert report.findings == [f"mirror_drift:org:{org.pk}"]
    assert report.mirror_drift_units == 12345
    assert int(client.hget(f"sy:o:{org.pk}", "bal")) == to_units("2")
    assert int(client.hget(f"sy:o:{org.pk}", "avail")) == to_units("2")
    (finding,) = _open(FindingKind.MIRROR_DRIFT)
    assert finding.repaired and finding.expected_units == to_units("2")
    # avail that disagrees with its parts is recomputed too
    client.hincrby(f"sy:o:{org.pk}", "avail", -7)
    report = books_audit_run(mirror_settle_seconds=0.1)
    assert f"mirror_drift:avail:{org.pk}" in report.findings
    assert int(client.hget(f"sy:o:{org.pk}", "avail")) == to_units("2")
    assert books_audit_run(mirror_settle_seconds=0.1).findings == []


def test_the_worker_runs_the_auditor_and_admin_shows_findings(live):
    from billing.tasks import books_audit

    org = make_org(credits="1")
    _generation("gen-unbilled", org, 42)
    books_audit.delay()  # the Celery worker in full mode, eagerly in embedded mode
    finding = wait_for(lambda: AuditFinding.objects.filter(subject="gen-unbilled").first(), what="the audit")
    assert finding.kind == FindingKind.USAGE_MISSING and finding.organization_id == org.pk

    admin = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/billing/auditfinding/", {"q": "gen-unbilled"})
    assert page.status_code == 200 and "gen-unbilled" in page.content.decode()
    assert client.get(f"/admin/billing/auditfinding/{finding.pk}/change/").status_code == 200
    assert client.post("/admin/billing/auditfinding/add/", {}).status_code == 403


def test_expired_hold_left_unreaped_is_reported_and_reaped():
    """A hold whose expiry passed long ago (beat not running) is reported, and reaped by the auditor."""
    from datetime import timedelta

    from billing.holds import HOLDS_ZSET, _org_snapshot, hold_hash, org_hash, scripts
    from billing.models import Hold

    org = make_org(credits="1")
    hold_id = "hold-planted-stuck"
    expired = int(time.time()) - 600
    if redis_enabled():
        balance, version = _org_snapshot(org.pk)
        scripts.sync("INIT_LUA")(keys=[org_hash(org.pk)], args=[str(balance), str(version)])
        scripts.sync("PLACE_LUA")(
            keys=[org_hash(org.pk), hold_hash(hold_id), HOLDS_ZSET, "sy:k:0"],
            args=["1000", str(expired), str(org.pk), hold_id, "", ""],
        )
        assert int(sync_redis().hget(org_hash(org.pk), "held")) == 1000
    else:
        Hold.objects.create(
            id=hold_id, organization=org, amount_units=1000, expires_at=timezone.now() - timedelta(minutes=10)
        )
    report = books_audit_run(mirror_settle_seconds=0.1)
    assert f"hold_stuck:{hold_id}" in report.findings
    if redis_enabled():
        assert int(sync_redis().hget(org_hash(org.pk), "held")) == 0
        assert int(sync_redis().hget(org_hash(org.pk), "avail")) == to_units("1")
    else:
        assert Hold.objects.get(pk=hold_id).status == "expired"
    assert books_audit_run(mirror_settle_seconds=0.1).findings == []
