"""The Celery app: eager in embedded mode, Redis-brokered in full mode (see settings), and its beat schedule."""

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")

app = Celery("switchyard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _beat_schedule(sender: Celery, **kwargs: Any) -> None:
    """Periodic billing work (one `celery -A switchyard beat` per deployment runs it)."""
    from django.conf import settings

    sender.add_periodic_task(
        settings.SWITCHYARD_USAGE_DRAIN_SECONDS,
        sender.signature("billing.tasks.usage_drain"),
        name="usage-drain",
    )
    sender.add_periodic_task(
        float(settings.SWITCHYARD_HOLDS_REAP_SECONDS),
        sender.signature("billing.tasks.holds_reap"),
        name="holds-reap",
    )
    sender.add_periodic_task(
        60.0, sender.signature("billing.tasks.stripe_events_retry"), name="stripe-events-retry"
    )
    sender.add_periodic_task(
        float(settings.SWITCHYARD_AUDIT_INTERVAL_SECONDS),
        sender.signature("billing.tasks.books_audit"),
        name="books-audit",
    )
