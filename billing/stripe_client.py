"""The one configured Stripe client (STRIPE_API_KEY, and STRIPE_API_BASE to point it at a local fake)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from switchyard.errors import SwitchyardError

if TYPE_CHECKING:
    import stripe


class PaymentsUnavailable(SwitchyardError):
    status, code = 503, "payments_unavailable"


_lock = threading.Lock()
_client: tuple[tuple[str, str], stripe.StripeClient] | None = None


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_API_KEY)


def stripe_client() -> stripe.StripeClient:
    """A StripeClient for the current settings (rebuilt if they change, e.g. between tests)."""
    global _client
    import stripe  # lazily: most processes never talk to Stripe, and the library is large

    if not settings.STRIPE_API_KEY:
        raise PaymentsUnavailable("Purchases are not configured (set STRIPE_API_KEY).")
    config = (settings.STRIPE_API_KEY, settings.STRIPE_API_BASE)
    with _lock:
        if _client is None or _client[0] != config:
            base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
            # Retries are the library's (with its own idempotency keys); every create we make also
            # carries our own key, so a retried call can never charge twice.
            client = stripe.StripeClient(settings.STRIPE_API_KEY, base_addresses=base, max_network_retries=2)  # type: ignore[arg-type]
            _client = (config, client)
        return _client[1]
