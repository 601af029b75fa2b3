"""Usage-writer throughput: how many usage events per second the batch writer puts into the ledger.

Runs billing.usage.usage_events_apply (what the Celery drain and the embedded writer call) on synthetic
events for a few organisations, in batches like the drain's, against the configured database:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/switchyard_bench .venv/bin/python bench/drain.py
Prints events/s and checks the books (balance moved by exactly the sum of the costs).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from accounts.models import Organization  # noqa: E402
from billing.usage import usage_events_apply  # noqa: E402


def main() -> None:
    call_command("migrate", verbosity=0)
    n, batch = int(os.environ.get("DRAIN_EVENTS", "20000")), int(os.environ.get("DRAIN_BATCH", "500"))
    tag = uuid.uuid4().hex[:8]
    orgs = [Organization.objects.create(slug=f"drain-{tag}-{i}", name=f"drain {i}") for i in range(4)]
    events = [
        {
            "gen": f"gen-drain-{tag}-{i}",
            "org": orgs[i % len(orgs)].pk,
            "key": None,
            "model": "switchyard/sim-1",
            "provider": "simulated",
            "status": "success",
            "tokens": {"prompt": 11, "completion": 42},
            "cost": 17_900_000 + i,
            "created": time.time(),
        }
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        usage_events_apply(events[i : i + batch])
    elapsed = time.perf_counter() - t0
    t1 = time.perf_counter()
    again = sum(usage_events_apply(events[i : i + batch]) for i in range(0, n, batch))  # redelivery
    replay = time.perf_counter() - t1
    expected = -sum(int(str(e["cost"])) for e in events)
    got = sum(
        Organization.objects.filter(pk__in=[o.pk for o in orgs]).values_list("balance_units", flat=True)
    )
    print(f"{n} events in batches of {batch}: {elapsed:.2f} s = {n / elapsed:,.0f} events/s")
    print(f"redelivering all of them: {replay:.2f} s, {again} new rows (must be 0)")
    print(f"books: balances moved by {got}, costs sum to {expected}: {'OK' if got == expected else 'DRIFT'}")


if __name__ == "__main__":
    main()
