"""The ASGI application: a lean async handler for the API's hot paths (each front door a module that
plugs into routing/gateway/pipeline.py), Django for everything else, and the process's lifespan.

Why not a Django view: on this box stock Django ASGI spends ~60% of a request in per-request thread
hops (sync middleware, DB signal receivers, response.close) and DRF buffers streams whole (see the
README's performance section). This handler never touches the ORM or sync code on a normal request:
the key, the catalog and the balance are answered from memory and Redis, with two Redis round trips
(place the hold; settle it and queue the usage event in one Lua call).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any
from urllib.parse import parse_qs

from billing.holds import liveness_start
from billing.recovery import watch_start
from routing import selectors
from routing.catalog.snapshot import catalog
from routing.gateway import pipeline
from routing.gateway.chat import CHAT, TEXT
from routing.gateway.embeddings import EMBEDDINGS
from routing.gateway.front import Front
from routing.gateway.messages import MESSAGES
from routing.gateway.upstream import close_upstream_pool
from routing.gateway.wire import send_json
from switchyard import durability
from switchyard.errors import SwitchyardError, error_body, store_unavailable
from switchyard.shared import async_redis, drain_detached, redis_enabled, setting

logger = logging.getLogger("switchyard.gateway")

# Every front door of the hot path (POST only). A new one is a module with its Front and one entry here.
FRONTS: tuple[Front, ...] = (CHAT, TEXT, MESSAGES, EMBEDDINGS)
ROUTES: dict[str, Front] = {front.path: front for front in FRONTS}


# The cyclic GC, not our code, was ~15% of a request's CPU at c=64: every 700 net allocations a young
# collection ran, and the older generations re-scanned the objects Django and the libraries
# leave behind at import (120k+). A web process frees almost everything by reference counting, so after
# start-up the survivors are frozen (never scanned again) and young collections run 14x less often.
GC_GEN0_THRESHOLD = 10_000


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gen0), gen1, gen2)


MODELS_PATH = "/api/v1/models"


async def handle_models_list(scope: dict[str, Any], send: Any) -> None:
    """`GET /api/v1/models` straight from the catalog snapshot. SDK clients and load balancers' readiness
    probes call it all the time; answered here it costs no thread hop and a worker that serves only the
    API never loads Django's URLconf, DRF and the admin (~12 MB). The DRF view in routing/apis.py
    documents it (OpenAPI) and answers the other methods; both use `selectors.model_list`, and a test
    checks they return the same document."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    search = query["search"][-1] if query.get("search") else None
    data = selectors.model_list(snapshot=await catalog.get(), search=search)
    await send_json(send, 200, {"data": data}, [(b"vary", b"Accept")])


API_PREFIX = "/api/"
HTTPS_REQUIRED = (
    "This API is served over HTTPS only: call it with https:// (through the TLS proxy in front of "
    "Switchyard). A server on a private network without TLS sets SWITCHYARD_PLAIN_HTTP=1."
)


def _plain_http(scope: dict[str, Any]) -> bool:
    """An insecure call as Django's SECURE_PROXY_SSL_HEADER sees it: neither TLS to this process (or a
    trusted proxy uvicorn already applied) nor `X-Forwarded-Proto: https` from the proxy."""
    if scope.get("scheme") == "https":
        return False
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-proto":
            return value.split(b",", 1)[0].strip().lower() != b"https"
    return True


class GatewayApp:
    """Routes the hot-path paths to their async handlers and everything else to Django."""

    def __init__(self, django_app: Any) -> None:
        self.django_app = django_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope.get("path", "").startswith(API_PREFIX)
            and setting("SECURE_SSL_REDIRECT")
            and _plain_http(scope)
        ):
            # One answer for the whole API where production redirects browsers to HTTPS.
            await send_json(send, 403, error_body(403, HTTPS_REQUIRED))
            return
        front = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if front is None and scope["type"] == "http" and scope["method"] == "GET":
            if scope["path"] == MODELS_PATH:
                await handle_models_list(scope, send)
                return
        if front is not None:
            if scope["method"] != "POST":
                await send_json(
                    send,
                    405,
                    error_body(405, f"Method {scope['method']} not allowed. Use POST."),
                    [(b"allow", b"POST")],
                )
                return
            try:
                await pipeline.handle(front, scope, receive, send)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                down = store_unavailable(exc)
                if down is None:
                    logger.exception("unhandled error on %s", scope["path"])
                failure: SwitchyardError = down or SwitchyardError(
                    "Internal server error.", status=500, code="internal"
                )
                try:
                    await front.send_error(send, failure)  # in the front door's own error shape
                except Exception:
                    pass  # the response had already started; the client sees a truncated stream
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.django_app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await catalog.get()
                except Exception:
                    logger.exception("catalog could not be loaded at start-up; will retry on first request")
                _tune_gc()
                refused = await _redis_refused()
                watch_start()
                liveness_start()
                if refused:
                    await send({"type": "lifespan.startup.failed", "message": refused})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await drain_detached()
                await close_upstream_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _redis_refused() -> str | None:
    """Full mode will not start on a Redis that keeps no append-only file unless the risk is accepted
    (switchyard/durability.py); an unreachable Redis is left to /readyz and the failure policy."""
    if not redis_enabled():
        return None
    try:
        kept = await asyncio.wait_for(durability.check(async_redis()), 5.0)
    except Exception:
        logger.warning("could not check Redis persistence at start-up; /readyz keeps checking", exc_info=True)
        return None
    if kept["problem"]:
        logger.error("refusing to start: %s", kept["problem"])
    return kept["problem"]
