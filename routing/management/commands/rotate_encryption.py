"""Re-encrypt every stored provider key (BYOK) with the first SWITCHYARD_ENCRYPTION_KEYS key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from routing.services import provider_keys_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored provider key with the first key of SWITCHYARD_ENCRYPTION_KEYS. "
        "Rotate by putting a new key first, running this, then removing the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        done, failed = provider_keys_reencrypt()
        if failed:
            raise CommandError(
                f"Re-encrypted {done} provider key(s); {len(failed)} could not be decrypted with any "
                f"configured key (ids {', '.join(map(str, failed))}): keep the key that encrypted them "
                "in SWITCHYARD_ENCRYPTION_KEYS, or delete and re-enter them."
            )
        self.stdout.write(f"Re-encrypted {done} provider key(s) with the first encryption key.")
