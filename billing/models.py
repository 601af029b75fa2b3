"""The append-only credit ledger and credit holds."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class EntryKind(models.TextChoices):
    PURCHASE = "purchase", "Purchase"
    GRANT = "grant", "Grant"
    USAGE = "usage", "Usage"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"


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
