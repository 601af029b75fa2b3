"""What accounts announces to the apps above it (billing grants starter credits on `organization_created`
and moves a key's spend limit in Redis on `api_key_limit_changed`), so that accounts imports none of
them. Receivers connect in their AppConfig.ready (billing/hooks.py)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside organization_create's transaction, after the row and its audit entry: a receiver that
# raises rolls the organisation back. Arguments: organization.
organization_created = Signal()

# Sent once the transaction that changed a key's spend limit has committed. Arguments: key_id,
# limit_units (None when the limit was cleared).
api_key_limit_changed = Signal()
