"""Switchyard project package (named so because a top-level `platform` package would shadow the stdlib)."""

from switchyard.celery import app as celery_app

__all__ = ["celery_app"]
