"""/healthz, /readyz and /metrics on the real ASGI app (served by uvicorn), and `serve`'s start-up checks."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_key, make_org
from tests.production.procs import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_answers_without_touching_anything(live):
    resp = httpx.get(live.url + "/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}
    assert httpx.post(live.url + "/healthz").status_code == 405


def test_readyz_checks_database_redis_and_migrations(live):
    from switchyard.shared import redis_enabled

    resp = httpx.get(live.url + "/readyz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == "ok" and checks["migrations"] == "ok" and checks["draining"] is False
    assert checks["redis"] == ("ok" if redis_enabled() else "not used (embedded mode)")


def test_metrics_count_requests_tokens_cost_and_shared_state(live, sim_catalog):
    org = make_org(credits="5")
    _, key = make_key(org)
    before = _samples(httpx.get(live.url + "/metrics").text)
    ok = httpx.post(
        live.api + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200
    bad = httpx.post(
        live.api + "/chat/completions", headers={"Authorization": "Bearer sk-sy-v1-nope"}, json={}
    )
    assert bad.status_code == 401
    usage = ok.json()["usage"]

    resp = httpx.get(live.url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    after = _samples(resp.text)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("switchyard_requests_total", kind="chat", outcome="success") == 1
    assert delta("switchyard_requests_total", kind="chat", outcome="401") == 1
    assert delta("switchyard_request_duration_seconds_count", kind="chat") == 1
    assert delta("switchyard_time_to_first_token_seconds_count", provider="simulated") == 1
    assert delta("switchyard_tokens_total", provider="simulated", type="prompt") == usage["prompt_tokens"]
    assert (
        delta("switchyard_tokens_total", provider="simulated", type="completion")
        == usage["completion_tokens"]
    )
    assert delta("switchyard_cost_usd_total", provider="simulated") == pytest.approx(usage["cost"])
    # Deployment-wide state, read at scrape time.
    assert _value(after, "switchyard_holds_outstanding") == 0
    assert ("switchyard_usage_queue_depth", ()) in after
    endpoint_states = [k for k in after if k[0] == "switchyard_circuit_state"]
    assert any(("model", "switchyard/sim-1") in labels for _, labels in endpoint_states)
    assert all(after[k] == 0 for k in endpoint_states)  # all closed


def test_metrics_need_the_token_or_an_allowed_network(live, settings):
    settings.SWITCHYARD_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # the test client (127.0.0.1) is outside
    settings.SWITCHYARD_METRICS_TOKEN = "scrape-secret"
    refused = httpx.get(live.url + "/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == 403
    assert "SWITCHYARD_METRICS_TOKEN" in refused.json()["error"]["message"]
    wrong = httpx.get(live.url + "/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    right = httpx.get(live.url + "/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert right.status_code == 200 and "switchyard_requests_total" in right.text
    settings.SWITCHYARD_METRICS_TOKEN = ""
    assert (
        httpx.get(live.url + "/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 403
    )
    settings.SWITCHYARD_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert httpx.get(live.url + "/metrics").status_code == 200


def test_serve_refuses_to_start_with_unapplied_migrations(tmp_path):
    env = subprocess_env(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    env.pop("REDIS_URL", None)
    res = subprocess.run(
        [sys.executable, "manage.py", "serve", "--check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 1
    assert "Refusing to start" in res.stderr and "unapplied migration" in res.stderr
    assert "contenttypes.0001_initial" in res.stderr and "python manage.py migrate" in res.stderr


def test_serve_check_passes_on_a_migrated_database():
    res = subprocess.run(
        [sys.executable, "manage.py", "serve", "--check", "--workers", "3"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "ready to serve" in res.stdout and "3 worker(s)" in res.stdout
