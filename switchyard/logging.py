"""Structured logs: one JSON object per line, carrying the generation id of the request that logged it.

The hot path sets `generation_id` (a contextvar) once per request; every record logged while that
request (or a task it spawned for itself, such as its settlement) runs carries it, uvicorn's access
line included; work a request merely starts for the whole process (switchyard.shared.start_shared)
carries none. Select with `LOG_FORMAT=json` (the default when DEBUG is off) or `plain`.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from typing import Any

import orjson

generation_id: ContextVar[str | None] = ContextVar("generation_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Stamps each record with the current request's generation id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "generation_id"):
            record.generation_id = generation_id.get()
        return True


# Credentials that must never reach a log line: our keys and providers' (`sk-...`, Google's `AIza...`),
# bearer tokens and `key=` query parameters. Short prefixes (`sk-sy-v1-abc123`) stay readable.
SECRET_RE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{20,}|AIza[0-9A-Za-z_\-]{20,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}|key=[^&\s\"']{8,})"
)


def redact(text: str) -> str:
    return SECRET_RE.sub("[redacted]", text)


class RedactFilter(logging.Filter):
    """Last line of defence: scrubs anything shaped like a credential from a record's message and
    traceback before any handler writes it (callers should never log one in the first place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "generation_id", ...extra, "exc_info"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "generation_id": getattr(record, "generation_id", None) or generation_id.get(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if (
                key not in _STANDARD
                and key not in entry
                and not key.startswith("_")
                and key != "color_message"
            ):
                entry[key] = value
        if record.exc_text:  # already formatted (and redacted) by RedactFilter
            entry["exc_info"] = record.exc_text
        elif record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(*, fmt: str, level: str, access: bool = False) -> dict[str, Any]:
    """The dictConfig for Django's LOGGING and for uvicorn's own loggers (so both write the same lines)."""
    formatter: dict[str, Any] = (
        {"()": "switchyard.logging.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(generation_id)s] %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "switchyard.logging.ContextFilter"},
            "redact": {"()": "switchyard.logging.RedactFilter"},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["context", "redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.request": {"level": "ERROR"},
            # uvicorn's loggers write through the root handler, in the same format.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            # Access lines only when asked (`serve --access-log`): Django applies this config after
            # uvicorn has applied --no-access-log, and a propagating logger would undo it (a log
            # record per request costs ~3% of the hot path's CPU).
            "uvicorn.access": {"handlers": [], "level": "INFO", "propagate": access},
        },
    }
