"""Create an organisation, its owner and one API key; prints the key last, alone on its line."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts import services
from billing.services import credits_grant
from switchyard.errors import SwitchyardError


class Command(BaseCommand):
    help = "Create an organisation with an owner (unusable password until reset) and one API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--owner", required=True, help="owner's email")
        parser.add_argument("--credits", default=None, help="USD to grant")
        parser.add_argument("--name", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            credits = Decimal(options["credits"]) if options["credits"] is not None else None
        except InvalidOperation:
            raise CommandError(f"--credits must be a decimal amount, got {options['credits']!r}")
        try:
            with transaction.atomic():
                owner, _ = services.user_get_or_create(email=options["owner"])
                org = services.organization_create(slug=options["slug"], name=options["name"], owner=owner)
                if credits:
                    credits_grant(organization=org, amount_usd=credits, reason="create_org initial credits")
                _, secret = services.api_key_create(organization=org, name="Default key", created_by=owner)
        except SwitchyardError as exc:
            raise CommandError(exc.message)
        self.stderr.write(f"Created organisation {org.slug} (owner {owner.email}).")
        self.stdout.write(secret)
