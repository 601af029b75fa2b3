"""A `DATABASE_URL` naming a SQLite file gets the embedded database's options (WAL, IMMEDIATE
transactions, a 20 s busy timeout): concurrent requests through real server processes never see
"database is locked"."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.factories import make_key, make_org
from tests.production.procs import ROOT, Served

SCRIPT = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "d = s.DATABASES['default']; print(json.dumps({'ENGINE': d['ENGINE'], 'NAME': str(d['NAME']), "
    "'OPTIONS': d.get('OPTIONS', {}), 'CONN_MAX_AGE': d.get('CONN_MAX_AGE')}))"
)


def test_a_sqlite_database_url_gets_the_embedded_options(tmp_path: Path):
    path = tmp_path / "db.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTEST_CURRENT_TEST")}
    env.update(DATABASE_URL=f"sqlite:///{path}", DEBUG="1", DJANGO_SETTINGS_MODULE="switchyard.settings")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    db = json.loads(result.stdout.strip().splitlines()[-1])
    assert db["ENGINE"] == "django.db.backends.sqlite3" and db["NAME"] == str(path)
    options = db["OPTIONS"]
    assert "journal_mode=WAL" in options["init_command"]
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] == 20


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"), reason="embedded (SQLite) runs only"
)
def test_forty_concurrent_chats_against_a_sqlite_url_get_no_503(sim_catalog):
    org = make_org(credits="10")
    _, secret = make_key(org)
    # Two processes, so writers contend across processes as well as across threads.
    server = Served(workers=2)
    try:
        server.wait_ready()

        async def run() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                body = {"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "hi"}]}
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{server.api}/chat/completions",
                            json={**body, "max_tokens": 8 + i % 5},
                            headers={"Authorization": f"Bearer {secret}"},
                        )
                        for i in range(40)
                    )
                )

        for _round in range(2):
            responses = asyncio.run(run())
            statuses = [r.status_code for r in responses]
            locked = [r.text for r in responses if r.status_code != 200]
            assert statuses == [200] * 40, locked[:3]
        assert "database is locked" not in server.output()
    finally:
        server.stop()
