"""`manage.py serve` with two worker processes: /metrics on any worker counts every worker's requests
(prometheus multiprocess mode), and each JSON log line of a request carries its generation id."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_key, make_org
from tests.production.procs import ROOT, Served

pytestmark = pytest.mark.django_db(transaction=True)


def _successes(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "switchyard_requests_total" and s.labels == {"kind": "chat", "outcome": "success"}:
                return s.value
    return 0.0


def test_two_workers_share_metrics_and_log_json_with_the_generation_id(sim_catalog, celery_worker_process):
    org = make_org(credits="5")
    _, key = make_key(org)
    server = Served(workers=2, args=("--access-log",), LOG_FORMAT="json").wait_ready()
    metrics_dir = Path(ROOT / "var" / "prometheus" / str(server.port))
    try:
        sent, gen_ids = 0, []
        # Fresh connections until both workers have served (each writes its own metrics files).
        while sent < 200:
            resp = httpx.post(
                server.api + "/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert resp.status_code == 200
            gen_ids.append(resp.headers["x-generation-id"])
            sent += 1
            pids = {p.stem.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
            if len(pids) >= 2 and sent >= 4:
                break
        assert len(pids) >= 2, "only one worker served every request"
        for _ in range(4):  # whichever worker answers the scrape reports all of them
            assert _successes(httpx.get(server.url + "/metrics").text) == sent
        output = server.output()
    finally:
        server.stop()

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines, output[:2000]
    assert all({"ts", "level", "logger", "message", "generation_id"} <= set(e) for e in lines)
    access = [e for e in lines if e["logger"] == "uvicorn.access" and "/chat/completions" in e["message"]]
    assert sorted(e["generation_id"] for e in access) == sorted(gen_ids)
    startup = [e for e in lines if "Application startup complete" in e["message"]]
    assert len(startup) == 2 and all(e["generation_id"] is None for e in startup)
    assert len({e["pid"] for e in startup}) == 2
