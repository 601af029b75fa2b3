"""switchyard/ids.py: generation and hold ids from pooled CSPRNG bytes."""

from __future__ import annotations

import os

from billing.holds import new_hold_id
from routing.gateway.wire import new_generation_id
from switchyard import ids


def test_ids_are_unique_and_well_formed() -> None:
    gens = [new_generation_id() for _ in range(5000)]  # crosses several 4 KiB pool refills
    holds = [new_hold_id() for _ in range(5000)]
    assert len(set(gens)) == 5000 and len(set(holds)) == 5000
    for g in gens[:50]:
        prefix, millis, rand = g.split("-", 2)
        assert prefix == "gen" and len(millis) == 13 and len(rand) == 20  # 15 bytes, URL-safe base64
    assert all(h.startswith("hold-") and len(h) == 5 + 24 for h in holds[:50])


def test_generation_ids_sort_by_creation_time() -> None:
    first = new_generation_id()
    later = [new_generation_id() for _ in range(100)]
    assert all(first[:17] <= g[:17] for g in later)


def test_no_bytes_are_handed_out_twice() -> None:
    seen = set()
    for _ in range(3000):
        chunk = ids.random_bytes(12)
        assert len(chunk) == 12
        seen.add(chunk)
    assert len(seen) == 3000


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    ids.random_bytes(1)  # the pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, ids.random_bytes(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.waitpid(pid, 0)
    os.close(read)
    assert child != ids.random_bytes(32)
