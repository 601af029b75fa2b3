"""Soak: a steady mixed load for SOAK_SECONDS against two web workers, a Celery worker and beat (full mode).

    DATABASE_URL=postgres://... REDIS_URL=redis://.../N SOAK_SECONDS=600 .venv/bin/python bench/soak.py

Starts `manage.py serve --workers 2`, `celery worker`, `celery beat` and a fake OpenAI upstream (the
test suite's FakeOpenAIUpstream, a real HTTP server on 127.0.0.1), then sends SOAK_RPS requests a second
(at most SOAK_CONCURRENCY at once): streaming and whole, to the simulator, to the fake upstream, to a
model whose only endpoint always fails (the injected fault: its 5xx are expected) and to a model that
fails over from that endpoint to a healthy one. Prints requests, status counts, 5xx besides the injected
faults, the RSS of each web worker at the start and the end, and the books auditor's findings after
the usage stream has drained. Give it its own PostgreSQL database and Redis DB: it clears Switchyard's
`sy:*` keys in that Redis DB first. Exits non-zero on an unexpected 5xx or an auditor finding.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
os.environ.setdefault(
    "DEBUG", "1"
)  # plain HTTP on 127.0.0.1 (no HTTPS redirect); the code paths are the same
os.environ.setdefault("SWITCHYARD_REDIS_ALLOW_VOLATILE", "1")  # the soak Redis is a throwaway

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RPS = float(os.environ.get("SOAK_RPS", "20"))
CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "16"))
WARMUP = float(os.environ.get("SOAK_WARMUP_SECONDS", "15"))
MOCK_KEY = "sk-soak-mock-" + "k" * 24
FAULTY = "soak/always-fails"
PROMPT = [{"role": "user", "content": "Count to ten."}]
# (model, share of requests)
MIX = [("switchyard/sim-1", 0.35), ("soak/upstream", 0.35), ("soak/failover", 0.2), (FAULTY, 0.1)]


def catalog_yaml(port: int) -> str:
    provider = """
  - slug: {slug}
    name: {slug}
    api_format: openai
    base_url: "http://127.0.0.1:{port}/v1"
    api_key_env: SOAK_MOCK_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}"""
    pricing = '{prompt: "0.10", completion: "0.40"}'
    return f"""
providers:
  - slug: simulated
    name: Switchyard Simulator
    api_format: simulated
    base_url: "sim://local"{provider.format(slug="soak-ok", port=port)}{provider.format(slug="soak-bad", port=port)}
models:
  - slug: switchyard/sim-1
    name: "Simulated 1"
    context_length: 32768
    endpoints:
      - {{provider: simulated, provider_model_id: sim-1, pricing: {pricing}, max_completion_tokens: 4096}}
  - slug: soak/upstream
    name: "Soak: upstream"
    context_length: 32768
    endpoints:
      - {{provider: soak-ok, provider_model_id: gpt-4o-mini, pricing: {pricing}}}
  - slug: soak/failover
    name: "Soak: failover"
    context_length: 32768
    endpoints:
      - {{provider: soak-bad, provider_model_id: "gpt-4o@fail_500", pricing: {pricing}}}
      - {{provider: soak-ok, provider_model_id: gpt-4o-mini, pricing: {pricing}}}
  - slug: {FAULTY}
    name: "Soak: always fails"
    context_length: 32768
    endpoints:
      - {{provider: soak-bad, provider_model_id: "gpt-4o-mini@fail_500", pricing: {pricing}}}
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def web_workers(serve_pid: int) -> list[int]:
    """uvicorn's worker processes (children of the supervisor that are Python processes)."""
    found = []
    for pid in children(serve_pid):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" not in cmd:
            found.append(pid)
    return found


def start(cmd: list[str], logdir: Path, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(logdir / f"{name}.log", "wb")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def load(api: str, key: str, stats: dict[str, collections.Counter[int]], latencies: list[float]) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)
    rng = random.Random(7)
    models = [m for m, _ in MIX]
    weights = [w for _, w in MIX]
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(model: str, stream: bool) -> None:
            async with sem:
                t0 = time.monotonic()
                body = {"model": model, "messages": PROMPT, "max_tokens": 16, "stream": stream}
                try:
                    async with client.stream(
                        "POST",
                        api + "/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    ) as r:
                        data = await r.aread()
                        status = r.status_code
                        if status == 200 and stream and not data.rstrip().endswith(b"data: [DONE]"):
                            status = 599  # a stream cut short: counted as a failure
                except httpx.HTTPError:
                    status = 598  # no answer at all
                stats[model][status] += 1
                latencies.append(time.monotonic() - t0)

        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < SECONDS:
            due = int(elapsed * RPS) + 1
            while sent < due:
                model = rng.choices(models, weights)[0]
                task = asyncio.ensure_future(one(model, rng.random() < 0.5))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.01)
        if tasks:
            await asyncio.wait(tasks)
    return sent


def main() -> None:
    if not (settings.REDIS_URL and os.environ.get("DATABASE_URL")):
        sys.exit("soak runs in full mode only: set DATABASE_URL (PostgreSQL) and REDIS_URL")
    from accounts.models import Organization
    from accounts.services import api_key_create
    from billing.audit import books_audit_run
    from billing.holds import USAGE_STREAM
    from billing.services import credits_grant
    from routing.catalog.snapshot import catalog
    from switchyard.shared import sync_redis
    from tests.fakes.openai_upstream import FakeOpenAIUpstream
    from tests.live import free_port

    logging.getLogger("httpx").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    # A soak wants its own database and Redis DB: Switchyard's keys left there by earlier runs or tests
    # (mirrors of other organisations with the same ids) would read as drift.
    client = sync_redis()
    for name in client.scan_iter(match="sy:*", count=1000):
        client.delete(name)
    upstream = FakeOpenAIUpstream().start()
    # Raw outputs go with the other benchmarks' (bench/results/, ignored by git).
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="soak-", dir=results))
    cat = logdir / "catalog.yaml"
    cat.write_text(catalog_yaml(int(upstream.base_url.rsplit(":", 1)[1].split("/")[0])))
    call_command("load_catalog", str(cat), verbosity=0)
    catalog.clear()
    tag = os.urandom(3).hex()
    org = Organization.objects.create(slug=f"soak-{tag}", name=f"soak {tag}")
    credits_grant(organization=org, amount_usd=Decimal("100000"), reason="soak")
    _, key = api_key_create(organization=org, name="soak")

    env = {**os.environ, "SOAK_MOCK_KEY": MOCK_KEY}
    port = free_port()
    py = sys.executable
    procs = {
        "web": start(
            [py, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            logdir,
            "web",
            env,
        ),
        "worker": start(
            [py, "-m", "celery", "-A", "switchyard", "worker", "--pool", "solo", "--loglevel", "WARNING"],
            logdir,
            "worker",
            env,
        ),
        "beat": start(
            [
                py,
                "-m",
                "celery",
                "-A",
                "switchyard",
                "beat",
                "--loglevel",
                "WARNING",
                "-s",
                str(logdir / "beat"),
            ],
            logdir,
            "beat",
            env,
        ),
    }
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or procs["web"].poll() is not None:
                sys.exit(f"the web workers did not start; see {logdir}/web.log")
            time.sleep(0.2)
        workers = web_workers(procs["web"].pid)
        # Warm up (imports, connection pools, catalog) before the first RSS reading.
        warm = {m: collections.Counter[int]() for m, _ in MIX}
        saved = SECONDS
        globals()["SECONDS"] = WARMUP
        asyncio.run(load(base + "/api/v1", key, warm, []))
        globals()["SECONDS"] = saved
        rss_start = {pid: rss_kb(pid) for pid in workers}
        print(
            f"soak: {SECONDS:.0f} s at {RPS:g} req/s (concurrency <= {CONCURRENCY}); web workers {workers}; logs {logdir}"
        )
        stats = {m: collections.Counter[int]() for m, _ in MIX}
        latencies: list[float] = []
        samples: list[list[int]] = []  # RSS of each worker, every tenth of the run
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(SECONDS / 10):
                samples.append([rss_kb(pid) for pid in workers])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        sent = asyncio.run(load(base + "/api/v1", key, stats, latencies))
        sampling.set()
        took = time.monotonic() - t0
        rss_end = {pid: rss_kb(pid) if Path(f"/proc/{pid}").exists() else 0 for pid in workers}
        drain_deadline = time.monotonic() + 120
        while client.xlen(USAGE_STREAM) and time.monotonic() < drain_deadline:
            time.sleep(0.5)
        left = client.xlen(USAGE_STREAM)
        time.sleep(2)
        report = books_audit_run(mirror_settle_seconds=2.0)
    finally:
        for proc in procs.values():
            stop(proc)
        upstream.stop()

    totals: collections.Counter[int] = collections.Counter()
    for counter in stats.values():
        totals.update(counter)
    unexpected = sum(n for m, c in stats.items() if m != FAULTY for s, n in c.items() if s >= 500)
    injected = sum(n for s, n in stats[FAULTY].items() if s >= 500)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(
        f"requests: {sent} in {took:.0f} s ({sent / took:.1f}/s); p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms"
    )
    print(f"status counts: {dict(sorted(totals.items()))}")
    for model, counter in stats.items():
        print(f"  {model}: {dict(sorted(counter.items()))}")
    print(
        f"5xx from the injected always-failing model: {injected}; 5xx besides injected faults: {unexpected}"
    )
    for pid in workers:
        print(
            f"web worker {pid}: RSS {rss_start[pid] / 1024:.1f} MiB at start, {rss_end[pid] / 1024:.1f} MiB at end"
        )
    series = [" ".join(f"{row[i] / 1024:.0f}" for row in samples) for i in range(len(workers))]
    for pid, line in zip(workers, series, strict=True):
        print(f"web worker {pid}: RSS every {SECONDS / 10:.0f} s (MiB): {line}")
    print(f"usage stream left undrained: {left}")
    print(
        f"auditor: {len(report.findings)} findings; generations {report.generations}, "
        f"mirror drift {report.mirror_drift}, balance mismatches {report.balance_mismatches}, "
        f"usage problems {report.usage_problems}, holds stuck {report.holds_stuck}"
    )
    for finding in report.findings:
        print(f"  finding: {finding}")
    if unexpected or report.findings or left:
        sys.exit(1)


if __name__ == "__main__":
    main()
