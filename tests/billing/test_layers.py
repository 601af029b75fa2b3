"""What billing reaches above itself through, instead of importing: registered models and tasks by name."""

from __future__ import annotations

from billing import enqueue
from billing.records import usage_records
from routing.models import Endpoint, Generation
from switchyard.celery import app


def test_routing_registers_its_usage_records_with_billing() -> None:
    records = usage_records()
    assert records.generation is Generation
    assert records.endpoint is Endpoint
    assert records.generations().model is Generation


def test_every_task_billing_queues_by_name_is_registered() -> None:
    for name in (enqueue.STRIPE_EVENT_PROCESS, enqueue.AUTO_TOPUP):
        assert name in app.tasks
