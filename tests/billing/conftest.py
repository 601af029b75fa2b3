"""Billing fixtures: one fake Stripe for the session, settings pointing at it, and waiting helpers.

The full-mode Celery worker is a separate process started once per session from `os.environ`, so the
Stripe settings it needs (key and API base; never the webhook secret, which only the web process
uses) are put in the environment when this directory is collected, before any worker starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from tests.fakes.stripe_upstream import FakeStripe
from tests.live import free_port

STRIPE_KEY = "sk_test_switchyard_billing"
WEBHOOK_SECRET = "whsec_test_switchyard_billing"
STRIPE_PORT = int(os.environ.get("SWITCHYARD_TEST_STRIPE_PORT") or free_port())
os.environ["SWITCHYARD_TEST_STRIPE_PORT"] = str(STRIPE_PORT)
if os.environ.get("REDIS_URL"):  # only full mode has a worker process to configure
    os.environ["STRIPE_API_KEY"] = STRIPE_KEY  # never a real key: the worker must only reach the fake
    os.environ["STRIPE_API_BASE"] = f"http://127.0.0.1:{STRIPE_PORT}"


@pytest.fixture
def billing_catalog(transactional_db: Any) -> None:
    """Simulated models whose cost is dominated by a flat $0.001 request fee (and a slow one for crashes)."""
    from pathlib import Path

    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    catalog_load([Path(__file__).parent / "data" / "billing_catalog.yaml"])
    catalog.clear()


@pytest.fixture(scope="session")
def fake_stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=STRIPE_KEY, port=STRIPE_PORT) as fake:
        yield fake


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripe, settings: Any) -> FakeStripe:
    """Stripe configured (this process) and pointed at the fake; card outcomes reset per test."""
    settings.STRIPE_API_KEY = STRIPE_KEY
    settings.STRIPE_API_BASE = fake_stripe_server.base_url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    fake_stripe_server.card_outcomes.clear()
    fake_stripe_server.latency = 0.0
    return fake_stripe_server


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy (the Celery worker applies webhooks asynchronously in full mode)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def owner_client(org: Any) -> tuple[Client, Any]:
    from accounts.models import Membership, Role
    from tests.factories import UserFactory

    user = UserFactory()
    Membership.objects.create(user=user, organization=org, role=Role.OWNER)
    client = Client()
    client.force_login(user)
    return client, user
