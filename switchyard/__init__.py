"""Switchyard project package (named so because a top-level `platform` package would shadow the stdlib).

The Celery app (`switchyard.celery`) is imported on first use, not here: a web process only needs it
when it queues a task (billing.tasks imports it), and importing Celery, kombu and their dependencies
costs every web worker ~6 MB. `celery -A switchyard` finds it in `switchyard.celery`."""

from typing import Any

__all__ = ["celery_app"]


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        from switchyard.celery import app

        return app
    raise AttributeError(f"module 'switchyard' has no attribute {name!r}")
