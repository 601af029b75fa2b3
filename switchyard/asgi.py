"""ASGI entry point: operations endpoints, then the completion hot path, then Django for everything else."""

import os
from typing import Any

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

from switchyard.env import config_error_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
try:
    django_app = get_asgi_application()
except ImproperlyConfigured as exc:
    # One line naming the variable, not a traceback through the ASGI server's import machinery.
    raise SystemExit(config_error_line(exc))

# These need Django set up first (get_asgi_application above).
from routing.gateway.app import GatewayApp
from switchyard import drain
from switchyard.health import healthz_endpoint, readyz_endpoint
from switchyard.metrics import metrics_endpoint

OPS_ROUTES: dict[str, Any] = {
    "/healthz": healthz_endpoint,
    "/readyz": readyz_endpoint,
    "/metrics": metrics_endpoint,
}


class OpsApp:
    """Serves /healthz, /readyz and /metrics without Django, and hooks graceful shutdown at start-up."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handler = OPS_ROUTES.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            drain.install_signal_hook()

            async def send_lifespan(message: dict[str, Any]) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    await drain.flush_usage_writer()
                await send(message)

            await self.inner(scope, receive, send_lifespan)
            return
        await self.inner(scope, receive, send)


application = OpsApp(GatewayApp(django_app))
