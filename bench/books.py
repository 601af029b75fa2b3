"""Drain the usage stream in-process (billing.tasks.drain_once) and check the books. Prints one JSON line.

Run with the bench environment (DATABASE_URL, REDIS_URL, ...), after the gateway has stopped:
    BENCH_BOOKS='{"org": "bench", "keys": {"wrk": "sk-sy-v1-...", "exact": "sk-sy-v1-..."}}' python bench/books.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")

import django  # noqa: E402

django.setup()

from django.db.models import Count, Q, Sum  # noqa: E402

from accounts.keys import key_hash  # noqa: E402
from accounts.models import ApiKey, Organization  # noqa: E402
from billing.holds import HOLDS_ZSET, USAGE_STREAM, org_hash  # noqa: E402
from billing.models import EntryKind, Hold, HoldStatus, LedgerEntry  # noqa: E402
from billing.tasks import drain_once  # noqa: E402
from routing.models import Generation  # noqa: E402
from switchyard.shared import sync_redis  # noqa: E402


def main() -> None:
    spec = json.loads(os.environ["BENCH_BOOKS"])
    org = Organization.objects.get(slug=spec["org"])
    r = sync_redis()

    t0 = time.monotonic()
    drained = 0
    idle = 0
    for _ in range(10_000):  # bounded: 10k x 10k events
        n = drain_once()
        drained += n
        if n == 0 and r.xlen(USAGE_STREAM) == 0:
            idle += 1
            if idle >= 2:
                break
            time.sleep(0.2)
        else:
            idle = 0
    drain_s = time.monotonic() - t0

    gens = Generation.objects.filter(organization_id=org.pk)
    per_key = {}
    for label, secret in spec["keys"].items():
        key = ApiKey.objects.get(key_hash=key_hash(secret))
        rows = gens.filter(api_key_id=key.pk).values("status").annotate(n=Count("id"))
        per_key[label] = {row["status"]: row["n"] for row in rows}
    gen_cost = gens.aggregate(s=Sum("cost_units"))["s"] or 0
    ledger_usage = (
        LedgerEntry.objects.filter(organization_id=org.pk, kind=EntryKind.USAGE).aggregate(
            s=Sum("amount_units")
        )["s"]
        or 0
    )
    usage_entries = LedgerEntry.objects.filter(organization_id=org.pk, kind=EntryKind.USAGE).count()
    mirror = {k.decode(): int(v) for k, v in r.hgetall(org_hash(org.pk)).items() if k != b"initver"}
    org.refresh_from_db()
    out = {
        "drained": drained,
        "drain_seconds": round(drain_s, 2),
        "generations": gens.count(),
        # Every charged generation (a cost, or a success even at $0) has exactly one usage entry;
        # a request that failed everywhere produced nothing and leaves none.
        "charged_generations": gens.filter(Q(cost_units__gt=0) | Q(status="success")).count(),
        "per_key": per_key,
        "usage_entries": usage_entries,
        "sum_generation_cost_units": gen_cost,
        "sum_usage_ledger_units": -ledger_usage,
        "open_holds_redis": r.zcard(HOLDS_ZSET),
        "open_holds_db": Hold.objects.filter(status=HoldStatus.OPEN).count(),
        "stream_left": r.xlen(USAGE_STREAM),
        "mirror": mirror,
        "balance_units": org.balance_units,
        "mirror_bal_matches_db": mirror.get("bal") == org.balance_units,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
