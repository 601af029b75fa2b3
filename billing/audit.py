"""The books auditor: checks the ledger's invariants, records findings, repairs what is safe to repair.

Invariants: each organisation's cached balance equals the sum of its ledger; every generation that
succeeded or cost anything has exactly one usage entry of exactly its cost (a failed request that cost
nothing may have none), and no usage entry lacks its generation; in full mode
the Redis mirror equals the database; no hold outlives its expiry unreaped; no automatic top-up
stays pending. It also totals what providers reported beyond the holds (never charged: settlement
charges at most the hold), the platform's loss, which leaves the books balanced. Billing also records
what it saw go wrong with a payment (a Checkout paid another amount than asked: `checkout_mismatch`),
for a human to look at. The ledger is the truth, so drift in a cached copy (the balance column, the Redis
mirror) is repaired from it; a wrong ledger is only ever reported, for a human to adjust.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from accounts.models import Organization
from billing.holds import HOLDS_ZSET, USAGE_STREAM, holds_reap_expired, scripts
from billing.models import (
    AuditFinding,
    EntryKind,
    FindingKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    Purchase,
    PurchaseKind,
    PurchaseStatus,
    RedisEpoch,
)
from billing.parking import parked_mirrored_units_by_org, parked_usage_open, parked_usage_totals
from billing.records import usage_records
from switchyard import lua
from switchyard.durability import epoch_check_sync
from switchyard.shared import redis_enabled, sync_redis

logger = logging.getLogger("switchyard.audit")
MAX_FINDINGS_PER_KIND = 200
REAP_GRACE = timedelta(seconds=120)


@dataclass
class AuditReport:
    organizations: int = 0
    generations: int = 0
    total_charged_units: int = 0
    ledger_total_units: int = 0
    # What providers reported beyond the holds, never charged: the platform's loss, not a books error.
    uncharged_generations: int = 0
    uncharged_units: int = 0
    holds_open: int = 0
    holds_outstanding_units: int = 0
    usage_pending: int = 0
    balance_mismatches: int = 0
    usage_problems: int = 0
    mirror_checked: int = 0
    mirror_busy: int = 0
    mirror_drift: int = 0
    mirror_drift_units: int = 0
    mirror_unversioned: int = 0
    redis_losses: int = 0
    holds_stuck: int = 0
    purchases_stuck: int = 0
    usage_parked: int = 0
    usage_parked_units: int = 0
    repaired: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record(
    report: AuditReport,
    seen: set[tuple[str, str]],
    *,
    kind: str,
    subject: str,
    organization_id: int | None = None,
    expected: int | None = None,
    actual: int | None = None,
    detail: str = "",
    repaired: bool = False,
) -> None:
    seen.add((kind, subject))
    report.findings.append(f"{kind}:{subject}")
    report.repaired += int(repaired)
    finding_record(
        kind=kind,
        subject=subject,
        organization_id=organization_id,
        expected=expected,
        actual=actual,
        detail=detail,
        repaired=repaired,
    )


def finding_record(
    *,
    kind: str,
    subject: str,
    organization_id: int | None = None,
    expected: int | None = None,
    actual: int | None = None,
    detail: str = "",
    repaired: bool = False,
) -> None:
    """Open (or refresh) one finding; also for what billing sees outside an audit run, such as a
    Checkout paid a different amount than asked or usage a web process wrote again after Redis lost
    it (those stay open until someone resolves them)."""
    now = timezone.now()
    values = {
        "organization_id": organization_id,
        "expected_units": expected,
        "actual_units": actual,
        "detail": detail[:2000],
        "repaired": repaired,
        "last_seen_at": now,
    }
    updated = AuditFinding.objects.filter(kind=kind, subject=subject, resolved_at__isnull=True).update(
        **values
    )
    if not updated:
        try:
            with transaction.atomic():
                AuditFinding.objects.create(kind=kind, subject=subject, **values)
        except IntegrityError:
            pass  # another auditor recorded it a moment ago
    logger.warning("audit finding %s %s: %s", kind, subject, detail)


def _check_balances(report: AuditReport, seen: set[tuple[str, str]]) -> None:
    sums = (
        LedgerEntry.objects.filter(organization_id=OuterRef("pk"))
        .order_by()
        .values("organization_id")
        .annotate(s=Sum("amount_units"))
        .values("s")
    )
    orgs = Organization.objects.annotate(ledger_sum=Subquery(sums)).values_list(
        "pk", "balance_units", "ledger_sum"
    )
    for org_id, cached, ledger in orgs.iterator():
        report.organizations += 1
        ledger = ledger or 0
        report.ledger_total_units += ledger
        if cached == ledger:
            continue
        # Recheck under the row lock (a ledger write in flight updates the row in its own transaction).
        with transaction.atomic():
            org = Organization.objects.select_for_update().only("balance_units").get(pk=org_id)
            truth = (
                LedgerEntry.objects.filter(organization_id=org_id).aggregate(s=Sum("amount_units"))["s"] or 0
            )
            if org.balance_units == truth:
                continue
            Organization.objects.filter(pk=org_id).update(balance_units=truth)
        report.balance_mismatches += 1
        _record(
            report,
            seen,
            kind=FindingKind.BALANCE_MISMATCH,
            subject=f"org:{org_id}",
            organization_id=org_id,
            expected=truth,
            actual=org.balance_units,
            detail=f"cached balance {org.balance_units} != ledger sum {truth}; cached column reset to the ledger",
            repaired=True,
        )


def _check_usage(report: AuditReport, seen: set[tuple[str, str]]) -> None:
    records = usage_records()
    usage = LedgerEntry.objects.filter(kind=EntryKind.USAGE, source=OuterRef("pk"))
    agg = records.generations().aggregate(
        n=Count("pk"),
        cost=Sum("cost_units"),
        lossy=Count("pk", filter=Q(uncharged_units__gt=0)),
        uncharged=Sum("uncharged_units"),
    )
    report.generations = agg["n"] or 0
    report.total_charged_units = agg["cost"] or 0
    report.uncharged_generations = agg["lossy"] or 0
    report.uncharged_units = agg["uncharged"] or 0
    # A request every provider failed costs nothing and may leave no entry (billing.usage); anything
    # that succeeded or cost something must have exactly its one.
    billable = Q(status="success") | ~Q(cost_units=0)
    missing = (
        records.generations()
        .filter(billable)
        .filter(~Exists(usage))
        .values_list("pk", "organization_id", "cost_units")
    )
    for gen_id, org_id, cost in missing[:MAX_FINDINGS_PER_KIND]:
        report.usage_problems += 1
        _record(
            report,
            seen,
            kind=FindingKind.USAGE_MISSING,
            subject=gen_id,
            organization_id=org_id,
            expected=-cost,
            detail=f"generation {gen_id} (cost {cost}) has no usage ledger entry",
        )
    wrong = (
        records.generations()
        .annotate(charged=Subquery(usage.values("amount_units")[:1]))
        .filter(charged__isnull=False)
        .exclude(charged=-F("cost_units"))
        .values_list("pk", "organization_id", "cost_units", "charged")
    )
    for gen_id, org_id, cost, charged in wrong[:MAX_FINDINGS_PER_KIND]:
        report.usage_problems += 1
        _record(
            report,
            seen,
            kind=FindingKind.USAGE_MISMATCH,
            subject=gen_id,
            organization_id=org_id,
            expected=-cost,
            actual=charged,
            detail=f"generation {gen_id} cost {cost} but its usage entry is {charged}",
        )
    generation = records.generations().filter(pk=OuterRef("source"))
    orphans = (
        LedgerEntry.objects.filter(kind=EntryKind.USAGE)
        .filter(~Exists(generation))
        .values_list("source", "organization_id", "amount_units")
    )
    for source, org_id, amount in orphans[:MAX_FINDINGS_PER_KIND]:
        report.usage_problems += 1
        _record(
            report,
            seen,
            kind=FindingKind.USAGE_ORPHAN,
            subject=source,
            organization_id=org_id,
            actual=amount,
            detail=f"usage entry {source} ({amount}) has no generation",
        )


def _db_snapshot(org_id: int) -> tuple[int, int] | None:
    return Organization.objects.filter(pk=org_id).values_list("balance_units", "ledger_version").first()


def _mirror_sample(client: Any, org_id: int) -> tuple[bool, int, dict[str, int]]:
    """(stable, db balance, redis fields): stable when no ledger write landed around the Redis read."""
    before = _db_snapshot(org_id)
    raw = client.hgetall(f"sy:o:{org_id}")
    after = _db_snapshot(org_id)
    fields = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    stable = before is not None and before == after
    return stable, (after[0] if after else 0), fields


def _check_mirror(report: AuditReport, seen: set[tuple[str, str]], settle_seconds: float) -> None:
    """Redis `bal` must equal the database balance whenever nothing is between the two (no pending
    usage, no ledger write during the read). A difference must persist across two samples before it
    counts: a grant's mirror update runs just after its commit, so one sample can catch it mid-way."""
    client = sync_redis()
    suspects: dict[int, tuple[int, int]] = {}
    # A parked event's cost moved into the mirror when it was parked, not into the ledger: the mirror is
    # below the database by exactly the parked charges until they are written or dismissed.
    parked = parked_mirrored_units_by_org()
    for name in client.scan_iter(match="sy:o:*", count=1000):
        key = name.decode() if isinstance(name, bytes) else name
        try:
            org_id = int(key.rsplit(":", 1)[1])
        except ValueError:
            continue
        stable, db_balance, h = _mirror_sample(client, org_id)
        if not h:
            continue
        report.mirror_checked += 1
        if "initver" not in h:
            # Only what settlements or the drain left in a Redis that lost its data: the hold path
            # completes it on the organisation's next request; complete it here in case none comes.
            balance, version = _db_snapshot(org_id) or (0, 0)
            fixed = scripts.run_sync(lua.INIT, [key], [str(balance), str(version)]) == lua.InitReply.LOADED
            report.mirror_unversioned += 1
            _record(
                report,
                seen,
                kind=FindingKind.MIRROR_UNVERSIONED,
                subject=f"org:{org_id}",
                organization_id=org_id,
                actual=h.get("avail"),
                detail=f"Redis mirror without its version ({sorted(h)}): Redis lost its data; "
                + ("completed from the database" if fixed else "left for the hold path to complete"),
                repaired=fixed,
            )
            continue
        parts = h.get("bal", 0) - h.get("held", 0) - h.get("pending", 0)
        if h.get("avail") != parts:
            fixed = scripts.run_sync(lua.AVAIL_FIX, [key], [str(h.get("avail"))])
            report.mirror_drift += 1
            _record(
                report,
                seen,
                kind=FindingKind.MIRROR_DRIFT,
                subject=f"avail:{org_id}",
                organization_id=org_id,
                expected=parts,
                actual=h.get("avail"),
                detail="avail != bal - held - pending in the Redis mirror; recomputed",
                repaired=fixed,
            )
        if h.get("pending", 0) != 0 or not stable:
            report.mirror_busy += 1
            continue
        if h.get("bal") != db_balance - parked.get(org_id, 0):
            suspects[org_id] = (h["bal"], db_balance)
    if suspects and settle_seconds:
        time.sleep(settle_seconds)
    parked_now = parked_mirrored_units_by_org() if suspects else parked
    for org_id, (bal, db_balance) in suspects.items():
        stable, db_now, h = _mirror_sample(client, org_id)
        if not stable or h.get("pending", 0) != 0 or h.get("bal") != bal or db_now != db_balance:
            continue  # it moved: not drift, just timing
        if parked_now.get(org_id, 0) != parked.get(org_id, 0):
            continue  # a parked event was written or dismissed meanwhile
        expected = db_balance - parked.get(org_id, 0)
        diff = expected - bal
        fixed = scripts.run_sync(lua.MIRROR_FIX, [lua.org_hash(org_id)], [str(bal), str(diff)])
        report.mirror_drift += 1
        report.mirror_drift_units += abs(diff)
        _record(
            report,
            seen,
            kind=FindingKind.MIRROR_DRIFT,
            subject=f"org:{org_id}",
            organization_id=org_id,
            expected=expected,
            actual=bal,
            detail=f"Redis balance {bal} != database {db_balance} less parked {parked.get(org_id, 0)}; "
            f"moved by {diff}",
            repaired=fixed,
        )


def _check_holds(report: AuditReport, seen: set[tuple[str, str]]) -> None:
    now = timezone.now()
    if redis_enabled():
        client = sync_redis()
        report.holds_open = int(client.zcard(HOLDS_ZSET))
        report.usage_pending = int(client.xlen(USAGE_STREAM))
        for name in client.scan_iter(match="sy:o:*", count=1000):
            report.holds_outstanding_units += int(client.hget(name, "held") or 0)
        stuck = client.zrangebyscore(
            HOLDS_ZSET, "-inf", time.time() - REAP_GRACE.total_seconds(), start=0, num=1000
        )
        subjects = [s.decode() if isinstance(s, bytes) else s for s in stuck]
    else:
        open_holds = Hold.objects.filter(status=HoldStatus.OPEN, expires_at__gt=now)
        agg = open_holds.aggregate(n=Count("pk"), s=Sum("amount_units"))
        report.holds_open = agg["n"] or 0
        report.holds_outstanding_units = agg["s"] or 0
        subjects = list(
            Hold.objects.filter(status=HoldStatus.OPEN, expires_at__lt=now - REAP_GRACE).values_list(
                "pk", flat=True
            )[:1000]
        )
    if subjects:
        holds_reap_expired()
        for hold_id in subjects[:MAX_FINDINGS_PER_KIND]:
            report.holds_stuck += 1
            _record(
                report,
                seen,
                kind=FindingKind.HOLD_STUCK,
                subject=hold_id,
                detail="hold past its expiry was not reaped (is beat running?); reaped now",
                repaired=True,
            )


def _check_purchases(report: AuditReport, seen: set[tuple[str, str]]) -> None:
    old = timezone.now() - timedelta(minutes=15)
    stuck = Purchase.objects.filter(
        Q(kind=PurchaseKind.AUTO_TOPUP), status=PurchaseStatus.PENDING, created_at__lt=old
    ).values_list("pk", "organization_id", "credits_units")
    for pk, org_id, units in stuck[:MAX_FINDINGS_PER_KIND]:
        report.purchases_stuck += 1
        _record(
            report,
            seen,
            kind=FindingKind.PURCHASE_STUCK,
            subject=f"purchase:{pk}",
            organization_id=org_id,
            expected=units,
            detail="automatic top-up pending for over 15 minutes (the retry sweep resumes it)",
        )


def _check_parked(report: AuditReport, seen: set[tuple[str, str]]) -> None:
    """Usage the writers parked is money the ledger does not have yet: never a silent "balance"."""
    report.usage_parked, report.usage_parked_units = parked_usage_totals()
    rows = list(parked_usage_open()[:MAX_FINDINGS_PER_KIND])
    existing = set(
        Organization.objects.filter(pk__in={r.org_id for r in rows if r.org_id}).values_list("pk", flat=True)
    )
    for row in rows:
        _record(
            report,
            seen,
            kind=FindingKind.USAGE_PARKED,
            subject=row.generation_id or f"parked:{row.pk}",
            organization_id=row.org_id if row.org_id in existing else None,
            expected=-row.cost_units,
            detail=f"usage event parked since {row.first_seen_at:%Y-%m-%d %H:%M:%S} "
            f"(org {row.org_id}, {row.attempts} attempt(s)): {row.reason}",
        )


def redis_epoch_record(*, epoch: str) -> None:
    """Store an epoch of Redis's data (switchyard/durability.py); idempotent."""
    RedisEpoch.objects.get_or_create(value=epoch)


def _check_redis_epoch(report: AuditReport, seen: set[tuple[str, str]]) -> None:
    """Every epoch stored after the first means Redis lost its data once: reported once each (kept
    open until a human resolves it: what was lost is usage answered and never charged)."""
    redis_epoch_record(epoch=epoch_check_sync(sync_redis()))
    first = RedisEpoch.objects.order_by("pk").first()
    if first is None:
        return
    for row in RedisEpoch.objects.filter(reported=False, pk__gt=first.pk).order_by("pk"):
        if not RedisEpoch.objects.filter(pk=row.pk, reported=False).update(reported=True):
            continue  # another auditor reported it
        report.redis_losses += 1
        _record(
            report,
            seen,
            kind=FindingKind.REDIS_LOST,
            subject=f"epoch:{row.value}",
            detail=f"Redis lost its data (its epoch became {row.value}, first seen {row.first_seen_at:%Y-%m-%d %H:%M:%S}Z): "
            "usage settled before the loss and not yet drained was never charged; holds and mirrors "
            "were rebuilt from the database. Is Redis persisting (appendonly yes)?",
        )


def books_audit_run(*, mirror_settle_seconds: float = 1.0) -> AuditReport:
    """Run every check; findings not seen again are marked resolved. Returns the figures."""
    report = AuditReport()
    seen: set[tuple[str, str]] = set()
    checked = [
        FindingKind.BALANCE_MISMATCH,
        FindingKind.USAGE_MISSING,
        FindingKind.USAGE_MISMATCH,
        FindingKind.USAGE_ORPHAN,
        FindingKind.HOLD_STUCK,
        FindingKind.PURCHASE_STUCK,
        FindingKind.USAGE_PARKED,
    ]
    _check_balances(report, seen)
    _check_parked(report, seen)
    _check_usage(report, seen)
    _check_holds(report, seen)
    _check_purchases(report, seen)
    if redis_enabled():
        checked += [FindingKind.MIRROR_DRIFT, FindingKind.MIRROR_UNVERSIONED]
        _check_redis_epoch(report, seen)
        _check_mirror(report, seen, mirror_settle_seconds)
    now = timezone.now()
    for finding in AuditFinding.objects.filter(resolved_at__isnull=True, kind__in=checked).only(
        "kind", "subject"
    ):
        if (finding.kind, finding.subject) not in seen:
            AuditFinding.objects.filter(pk=finding.pk).update(resolved_at=now)
    logger.info("books audit: %s", {k: v for k, v in report.as_dict().items() if k != "findings"})
    return report
