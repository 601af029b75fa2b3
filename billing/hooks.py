"""What billing adds to the core's operations endpoints and shutdown, registered in BillingConfig.ready
so that switchyard/ (the core) imports no app: its /metrics figures (billing/metrics.py), the parked
usage count /readyz reports, and the embedded usage writer's flush at exit."""

from __future__ import annotations

from billing import metrics  # noqa: F401  (registers billing's /metrics state)
from billing.parking import parked_usage_totals
from billing.usage import embedded_writer_flush
from switchyard import drain, health


def _parked_events() -> int:
    return parked_usage_totals()[0]


health.database_report("usage_parked", _parked_events)
drain.on_exit_flush(embedded_writer_flush)
