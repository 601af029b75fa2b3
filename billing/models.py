"""The append-only credit ledger and credit holds."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from switchyard.money import cents_str


class EntryKind(models.TextChoices):
    PURCHASE = "purchase", "Purchase"
    GRANT = "grant", "Grant"
    USAGE = "usage", "Usage"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"
    # Credits held while a payment dispute is open (negative), and released when it closes (positive).
    DISPUTE = "dispute", "Dispute hold"


class LedgerEntry(models.Model):
    """One movement of money. Never updated or deleted: a balance is the sum of its entries.

    `source` is the natural key of what caused it (a generation id, a Stripe event id, a grant
    request id) and is unique per kind, so replaying the cause can never apply it twice.
    """

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount_units = models.BigIntegerField(
        help_text="Signed picodollars: positive adds credit, negative spends it."
    )
    source = models.CharField(max_length=120)
    reason = models.CharField(max_length=300, blank=True)
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        constraints = [models.UniqueConstraint(fields=["kind", "source"], name="ledger_kind_source_unique")]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["api_key", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_units} ({self.source})"


class HoldStatus(models.TextChoices):
    OPEN = "open", "Open"
    SETTLED = "settled", "Settled (cost known, ledger entry pending)"
    CHARGED = "charged", "Charged"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class Hold(models.Model):
    """A reservation of worst-case cost while a request runs (embedded mode's store; full mode uses Redis)."""

    id = models.CharField(primary_key=True, max_length=40)
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="holds")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="+")
    amount_units = models.BigIntegerField()
    settled_units = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["organization", "status"]),
            models.Index(fields=["status", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


# ---- Stripe purchases, auto top-up and the auditor ------------------------------------------------


class BillingProfile(models.Model):
    """An organisation's payment set-up: its Stripe customer, saved card and auto top-up rule."""

    organization = models.OneToOneField(
        "accounts.Organization", primary_key=True, on_delete=models.CASCADE, related_name="billing"
    )
    stripe_customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    payment_method_id = models.CharField(
        max_length=64, blank=True, help_text="Saved by a paid checkout for off-session top-ups."
    )
    auto_topup_enabled = models.BooleanField(default=False)
    auto_topup_threshold_units = models.BigIntegerField(null=True, blank=True)
    auto_topup_amount_units = models.BigIntegerField(null=True, blank=True)
    auto_topup_failures = models.PositiveIntegerField(default=0)
    auto_topup_last_attempt_at = models.DateTimeField(null=True, blank=True)
    auto_topup_notice = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the last automatic top-up failed (shown on the credits page).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"billing of org {self.organization_id}"


class PurchaseKind(models.TextChoices):
    CHECKOUT = "checkout", "Checkout"
    AUTO_TOPUP = "auto_topup", "Auto top-up"


class PurchaseStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


class Purchase(models.Model):
    """One payment for credits: a Checkout Session or an off-session auto top-up PaymentIntent."""

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, related_name="purchases"
    )
    kind = models.CharField(max_length=16, choices=PurchaseKind.choices)
    status = models.CharField(max_length=16, choices=PurchaseStatus.choices, default=PurchaseStatus.PENDING)
    credits_units = models.BigIntegerField(help_text="Credits added when paid (picodollars).")
    fee_units = models.BigIntegerField(default=0)
    amount_cents = models.BigIntegerField(help_text="What the card is charged: credits + fee, in cents.")
    currency = models.CharField(max_length=3, default="usd")
    stripe_checkout_session_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=80, unique=True)
    refunded_cents = models.BigIntegerField(default=0, help_text="Cumulative, as Stripe reports it.")
    refunded_units = models.BigIntegerField(default=0, help_text="Credits taken back so far.")
    disputed = models.BooleanField(default=False)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one automatic top-up in flight per organisation: concurrent triggers lose the insert.
            models.UniqueConstraint(
                fields=["organization"],
                condition=models.Q(kind="auto_topup", status="pending"),
                name="purchase_one_pending_auto_topup",
            )
        ]
        indexes = [models.Index(fields=["organization", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {cents_str(self.amount_cents)} {self.currency} ({self.status})"


class Refund(models.Model):
    """Credits taken back because Stripe reported a (partial or full) refund of a purchase's charge."""

    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="refunds")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="+")
    stripe_charge_id = models.CharField(max_length=255, db_index=True)
    stripe_event_id = models.CharField(max_length=255)
    cumulative_cents = models.BigIntegerField(help_text="charge.amount_refunded when this was applied.")
    amount_units = models.BigIntegerField(help_text="Credits removed by this step (picodollars).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["purchase", "cumulative_cents"], name="refund_purchase_cumulative"
            )
        ]

    def __str__(self) -> str:
        return f"refund of {self.stripe_charge_id} to {self.cumulative_cents} cents"


class Dispute(models.Model):
    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    organization = models.ForeignKey(
        "accounts.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="disputes"
    )
    purchase = models.ForeignKey(Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    stripe_charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount_cents = models.BigIntegerField(default=0)
    reason = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=64, blank=True)
    held_units = models.BigIntegerField(
        default=0, help_text="Credits held against spending while the dispute is open (picodollars)."
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.stripe_dispute_id


class StripeEventStatus(models.TextChoices):
    RECEIVED = "received", "Received (queued)"
    PROCESSED = "processed", "Processed"
    DEFERRED = "deferred", "Deferred (waiting for an earlier event)"
    IGNORED = "ignored", "Ignored"
    FAILED = "failed", "Failed"


class StripeEvent(models.Model):
    """A verified webhook delivery. The primary key is Stripe's event id, so a replay is one failed insert."""

    id = models.CharField(primary_key=True, max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=StripeEventStatus.choices, default=StripeEventStatus.RECEIVED
    )
    ref = models.CharField(
        max_length=255, blank=True, db_index=True, help_text="What a deferred event waits for."
    )
    error = models.TextField(blank=True)
    stripe_created = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.type} ({self.status})"


class FindingKind(models.TextChoices):
    BALANCE_MISMATCH = "balance_mismatch", "Cached balance ≠ ledger sum"
    USAGE_MISSING = "usage_missing", "Generation without its usage entry"
    USAGE_MISMATCH = "usage_mismatch", "Usage entry ≠ generation cost"
    USAGE_ORPHAN = "usage_orphan", "Usage entry without a generation"
    MIRROR_DRIFT = "mirror_drift", "Redis mirror ≠ database"
    HOLD_STUCK = "hold_stuck", "Hold past expiry not reaped"
    PURCHASE_STUCK = "purchase_stuck", "Purchase pending too long"
    CHECKOUT_MISMATCH = "checkout_mismatch", "Checkout paid ≠ purchase price"
    USAGE_PARKED = "usage_parked", "Usage event parked (not in the ledger)"
    MIRROR_UNVERSIONED = "mirror_unversioned", "Redis mirror without its version"
    REDIS_LOST = "redis_lost", "Redis lost its data"
    USAGE_UNRECORDED = "usage_unrecorded", "Usage settled, lost with Redis before the ledger"


class AuditFinding(models.Model):
    """Something the auditor found wrong with the books; open until an audit sees it fixed."""

    kind = models.CharField(max_length=32, choices=FindingKind.choices)
    organization = models.ForeignKey(
        "accounts.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    subject = models.CharField(max_length=255, help_text="What is wrong: an org, a generation id, a hold id.")
    expected_units = models.BigIntegerField(null=True, blank=True)
    actual_units = models.BigIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)
    repaired = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=models.Q(resolved_at__isnull=True),
                name="finding_open_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}"


class ParkedUsageStatus(models.TextChoices):
    PARKED = "parked", "Parked (not in the ledger)"
    WRITTEN = "written", "Written on retry"
    DISMISSED = "dismissed", "Dismissed (written off)"


class ParkedUsageEvent(models.Model):
    """A usage event the writer could not store even on its own (dead-letter table).

    Written instead of blocking the batch it arrived in: the raw event is kept exactly as received
    (JSON text; orjson escapes control characters, so it always fits a text column), with why it
    failed. Its charge is not in the ledger until a retry writes it. `mirrored`: full mode moved the
    cost into the Redis mirror's balance when parking (so the organisation cannot spend it meanwhile),
    which the auditor allows for.
    """

    generation_id = models.CharField(max_length=64, blank=True, db_index=True)
    org_id = models.BigIntegerField(
        null=True, blank=True, help_text="The event's organisation (no foreign key: it may be gone)."
    )
    cost_units = models.BigIntegerField(default=0, help_text="The event's charge (picodollars).")
    raw = models.TextField(help_text="The event as received.")
    reason = models.TextField()
    status = models.CharField(
        max_length=16, choices=ParkedUsageStatus.choices, default=ParkedUsageStatus.PARKED
    )
    mirrored = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-first_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["generation_id"],
                condition=models.Q(status="parked") & ~models.Q(generation_id=""),
                name="parked_usage_open_unique",
            )
        ]
        indexes = [models.Index(fields=["status", "org_id"])]

    def __str__(self) -> str:
        return f"{self.generation_id or 'unnamed event'} ({self.status})"


class RedisEpoch(models.Model):
    """An epoch of Redis's data (switchyard/durability.py) as workers and the auditor saw it: a second
    one means Redis lost its data in between; the auditor reports each such loss once."""

    value = models.CharField(max_length=64, unique=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    reported = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.value
