#!/usr/bin/env python
"""Django's command-line utility for Switchyard."""

import os
import sys

# `runserver` serves the dashboard but not the gateway (the completion hot path lives in the ASGI app),
# so a chat completion against it would be a silent 404; this flag is for dashboard/template work only.
RUNSERVER_FLAG = "--dashboard-only"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from switchyard.env import config_error_line

    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] == "runserver":
        if RUNSERVER_FLAG not in argv:
            sys.exit(
                "runserver does not serve the API gateway (/api/v1/chat/completions would answer 404): "
                "use `make run` (embedded) or `python manage.py serve`; "
                f"`runserver {RUNSERVER_FLAG}` serves only the dashboard and admin."
            )
        argv.remove(RUNSERVER_FLAG)
    try:
        # Load the settings here, not lazily inside the command, so that a configuration mistake is one
        # line naming the variable instead of a traceback (or Django's "Unknown command" for ours).
        settings.INSTALLED_APPS  # noqa: B018
        execute_from_command_line(argv)
    except ImproperlyConfigured as exc:
        sys.exit(config_error_line(exc))


if __name__ == "__main__":
    main()
