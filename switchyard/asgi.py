"""ASGI entry point: the completion hot path is a lean async handler in front of Django's app."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
django_app = get_asgi_application()

from routing.gateway.app import GatewayApp  # noqa: E402  (needs Django set up first)

application = GatewayApp(django_app)
