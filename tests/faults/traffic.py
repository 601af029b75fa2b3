"""Steady chat traffic against a served gateway, and the books checks every fault test ends with."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
from django.db.models import Sum

from billing.audit import books_audit_run
from billing.models import EntryKind, LedgerEntry
from routing.models import Generation
from switchyard.money import to_units

PROMPT = [{"role": "user", "content": "Count to ten."}]
BOUND_SECONDS = 15.0  # no request may take longer than this, whatever the fault


@dataclass
class Result:
    status: int | None
    seconds: float
    generation: str | None = None
    body: bytes = b""
    retry_after: str | None = None
    error: str = ""


def chat(api: str, key: str, *, stream: bool, model: str = "switchyard/sim-1") -> Result:
    started = time.monotonic()
    payload = {"model": model, "messages": PROMPT, "max_tokens": 20, "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.stream("POST", api + "/chat/completions", json=payload, headers=headers, timeout=30) as r:
            body = r.read()
            return Result(
                r.status_code,
                time.monotonic() - started,
                r.headers.get("x-generation-id"),
                body,
                r.headers.get("retry-after"),
            )
    except httpx.HTTPError as exc:
        return Result(None, time.monotonic() - started, error=repr(exc))


@dataclass
class Traffic:
    """`threads` clients sending alternating streaming and whole requests until stopped."""

    api: str
    key: str
    threads: int = 4
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            self.results.append(chat(self.api, self.key, stream=i % 2 == 1))
            i += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60)


def wait_for(check, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {seconds} s")


def assert_clean_answers(results: list[Result]) -> None:
    """Every request was answered within the bound: a success, or a 503 in the error shape with Retry-After."""
    for r in results:
        assert r.status is not None, f"a request got no answer: {r.error}"
        assert r.seconds < BOUND_SECONDS, f"a request took {r.seconds:.1f} s"
        if r.status == 200:
            assert r.generation
            if b"data:" in r.body[:10]:
                assert r.body.rstrip().endswith(b"data: [DONE]"), r.body[-200:]
        else:
            import orjson

            assert r.status == 503, (r.status, r.body[:300])
            error = orjson.loads(r.body)["error"]
            assert error["code"] == 503 and error["message"], error
            assert r.retry_after, "a 503 must say when to retry"


def assert_books(org, granted_usd: str, answered: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Every answered generation is recorded and charged exactly once; nothing else is; the auditor agrees."""
    gens = dict(Generation.objects.filter(organization=org).values_list("id", "cost_units"))
    assert set(gens) == answered, (len(gens), len(answered), set(gens) ^ answered)
    entries = list(
        LedgerEntry.objects.filter(organization=org, kind=EntryKind.USAGE).values_list(
            "source", "amount_units"
        )
    )
    assert sorted(s for s, _ in entries) == sorted(answered)  # one entry per generation, none twice
    assert all(-amount == gens[source] for source, amount in entries)
    charged = sum(gens.values())
    assert charged > 0
    assert (
        -(
            LedgerEntry.objects.filter(organization=org, kind=EntryKind.USAGE).aggregate(
                s=Sum("amount_units")
            )["s"]
        )
        == charged
    )
    org.refresh_from_db()
    assert org.balance_units == to_units(granted_usd) - charged
    report = books_audit_run(mirror_settle_seconds=0.5)
    assert report.findings == [], report.findings
