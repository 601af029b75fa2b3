"""Grant credits to an organisation (a ledger entry); prints the new balance."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organization
from billing.selectors import balance_get
from billing.services import credits_grant
from switchyard.errors import SwitchyardError


class Command(BaseCommand):
    help = "Grant credits (USD) to an organisation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True)
        parser.add_argument("--amount", required=True, help="USD")
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organisation with slug {options['org']!r}.")
        try:
            amount = Decimal(options["amount"])
        except InvalidOperation:
            raise CommandError(f"--amount must be a decimal amount, got {options['amount']!r}")
        try:
            credits_grant(organization=org, amount_usd=amount, reason=options["reason"])
        except SwitchyardError as exc:
            raise CommandError(exc.message)
        self.stdout.write(f"{balance_get(organization=org).normalize():f}")
