"""Create one more API key for an organisation; prints the key last, alone on its line."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from accounts.models import Organization
from switchyard.errors import SwitchyardError


class Command(BaseCommand):
    help = "Create an API key for an organisation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True)
        parser.add_argument("--name", default="CLI key")
        parser.add_argument("--limit", default=None, help="credit limit in USD")
        parser.add_argument("--limit-reset", default="none", choices=["none", "daily", "weekly", "monthly"])

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organisation with slug {options['org']!r}.")
        try:
            limit = Decimal(options["limit"]) if options["limit"] is not None else None
        except InvalidOperation:
            raise CommandError(f"--limit must be a decimal amount, got {options['limit']!r}")
        try:
            _, secret = services.api_key_create(
                organization=org, name=options["name"], limit_usd=limit, limit_reset=options["limit_reset"]
            )
        except (SwitchyardError, ValueError) as exc:
            raise CommandError(str(exc))
        self.stdout.write(secret)
