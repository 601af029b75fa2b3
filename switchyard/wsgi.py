"""WSGI entry point (admin and dashboard only; the API hot path needs ASGI)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
application = get_wsgi_application()
