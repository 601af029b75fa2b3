"""compose.yaml, Dockerfile and Procfile describe the documented deployment (checked without Docker;
CI also runs `docker compose config` and `docker build` where Docker answers)."""

from __future__ import annotations

import re

import yaml
from django.conf import settings

from tests.production.procs import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))


def test_compose_runs_the_whole_deployment_with_health_checks():
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "beat", "lb"} <= set(services)
    for name in ("postgres", "redis", "web", "worker", "beat", "lb"):
        assert services[name]["healthcheck"]["test"], name
    web = services["web"]
    assert web["deploy"]["replicas"] >= 2
    assert web["command"][:3] == ["python", "manage.py", "serve"]
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    # Docker's SIGKILL must come after the drain deadline.
    assert _seconds(web["stop_grace_period"]) > int(web["environment"]["SWITCHYARD_SHUTDOWN_DRAIN_SECONDS"])
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["beat"]["command"][:4] == ["celery", "-A", "switchyard", "beat"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "switchyard", "worker"]
    env = web["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")
    assert "--appendonly" in services["redis"]["command"]  # holds and unbilled usage survive a restart
    nginx = _compose()["configs"]["nginx"]["content"]
    assert "proxy_buffering off" in nginx and "server web:8000" in nginx


def test_compose_requires_the_secrets_instead_of_shipping_defaults():
    env = _compose()["services"]["web"]["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert env["SWITCHYARD_ENCRYPTION_KEYS"].startswith("${SWITCHYARD_ENCRYPTION_KEYS:?")


def test_dockerfile_is_multi_stage_slim_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2
    final = stages[-1]
    assert "slim" in text.split("ARG PYTHON_IMAGE=", 1)[1].splitlines()[0]
    assert re.search(r"^USER (?!root)\w+", final, flags=re.M)
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final)
    assert "collectstatic" in stages[0]
    assert "HEALTHCHECK" in final and "/healthz" in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored)


def test_procfile_names_the_documented_processes():
    lines = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line and ":" in line
    )
    assert "manage.py serve" in lines["web"]
    assert lines["worker"].strip().startswith("celery -A switchyard worker")
    assert lines["beat"].strip().startswith("celery -A switchyard beat")
    assert "migrate" in lines["release"]


def test_the_beat_scheduler_enforces_one_leader():
    assert settings.CELERY_BEAT_SCHEDULER == "switchyard.beat:SingleBeatScheduler"
