"""Idempotent demo: an admin user, a demo organisation with credits and one new demo key (printed last)."""

from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts import services
from accounts.models import Membership, Organization, Role
from billing.services import credits_grant

ADMIN_EMAIL = "admin@switchyard.local"
ADMIN_PASSWORD = "switchyard-admin"
DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Create (or reuse) the demo admin and organisation, and print a new demo API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet", action="store_true", help="print only the key")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            admin, created = services.user_get_or_create(
                email=ADMIN_EMAIL, password=ADMIN_PASSWORD, is_staff=True
            )
            org = Organization.objects.filter(slug=DEMO_SLUG).first()
            if org is None:
                org = services.organization_create(slug=DEMO_SLUG, name="Demo", owner=admin)
                # The natural key makes the demo grant happen once, however often seed_demo runs.
                credits_grant(
                    organization=org,
                    amount_usd=settings.SWITCHYARD_DEMO_CREDITS,
                    reason="Demo credits",
                    source="seed_demo:initial",
                )
            Membership.objects.get_or_create(user=admin, organization=org, defaults={"role": Role.OWNER})
            # The dashboard (allauth) requires a verified address; the demo admin's is taken as verified.
            EmailAddress.objects.get_or_create(
                user=admin, email=admin.email, defaults={"verified": True, "primary": True}
            )
            _, secret = services.api_key_create(organization=org, name="Demo key", created_by=admin)
        if not options["quiet"]:
            self.stderr.write(f"Admin: {ADMIN_EMAIL} / {ADMIN_PASSWORD}" + (" (created)" if created else ""))
            self.stderr.write(f"Demo organisation: {org.slug}")
        self.stdout.write(secret)
