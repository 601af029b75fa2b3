"""The ASGI application: completion hot path in front of Django (filled in next)."""

from __future__ import annotations

from typing import Any


class GatewayApp:
    def __init__(self, django_app: Any) -> None:
        self.django_app = django_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.django_app(scope, receive, send)
