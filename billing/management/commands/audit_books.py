"""`python manage.py audit_books`: run the books auditor now and print its figures."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing.audit import books_audit_run
from switchyard.money import from_units


class Command(BaseCommand):
    help = "Check the ledger invariants (balances, usage entries, Redis mirror, holds), repair caches, print figures."

    def handle(self, *args: Any, **options: Any) -> None:
        report = books_audit_run()
        usd = {
            "total_charged_units",
            "ledger_total_units",
            "uncharged_units",
            "holds_outstanding_units",
            "mirror_drift_units",
            "usage_parked_units",
        }
        for name, value in report.as_dict().items():
            if name == "findings":
                continue
            shown = f"{from_units(value).normalize():f} USD" if name in usd else value
            self.stdout.write(f"{name}: {shown}")
        for finding in report.findings:
            self.stdout.write(f"finding: {finding}")
        if report.usage_parked:
            self.stdout.write(
                f"{report.usage_parked} usage event(s) parked, "
                f"{from_units(report.usage_parked_units).normalize():f} USD not in the ledger "
                "(admin: Parked usage events; docs/operations-usage.md)"
            )
        self.stdout.write("books balance" if report.clean else f"{len(report.findings)} finding(s)")
