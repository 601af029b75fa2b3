"""Queue billing's Celery tasks by their registered name.

The code that queues work (usage, services, admin) sits below billing.tasks, whose thin task wrappers
import that code; looking the task up by name through the Celery app keeps the dependency one way.
billing.tasks declares its tasks with these names, and billing's AppConfig.ready imports it, so the
names are registered in every process (web, worker, commands) before anything is queued. In embedded
mode the app is eager, so `delay` still runs the task in place.
"""

from __future__ import annotations

from switchyard.celery import app

STRIPE_EVENT_PROCESS = "billing.tasks.stripe_event_process_task"
AUTO_TOPUP = "billing.tasks.auto_topup_task"


def stripe_event_process_later(event_id: str) -> None:
    """Apply a recorded Stripe event in a worker (retried there with backoff)."""
    app.tasks[STRIPE_EVENT_PROCESS].delay(event_id)


def auto_topup_later(organization_id: int) -> None:
    """Charge the organisation's saved card in a worker if its balance is below the threshold."""
    app.tasks[AUTO_TOPUP].delay(organization_id)
