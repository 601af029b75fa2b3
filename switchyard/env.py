"""Strict readers for settings that come from environment variables."""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation
from typing import Any

import dj_database_url
import redis.connection
from django.core.exceptions import ImproperlyConfigured

from switchyard.fastredis import UnsupportedRedisOption, connection_options

_MISSING = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, default: object) -> str | None:
    value = os.environ.get(name)
    if value is None:
        if default is _MISSING:
            raise ImproperlyConfigured(f"The environment variable {name} is required but not set.")
        return None
    return value


def env_str(name: str, default: object = _MISSING) -> str:
    value = _raw(name, default)
    return default if value is None else value  # type: ignore[return-value]


def env_bool(name: str, default: object = _MISSING) -> bool:
    value = _raw(name, default)
    if value is None:
        return bool(default)
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}.")


def env_int(name: str, default: object = _MISSING) -> int:
    value = _raw(name, default)
    if value is None:
        return default  # type: ignore[return-value]
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.")


def env_decimal(name: str, default: object = _MISSING) -> Decimal:
    value = _raw(name, default)
    if value is None:
        return Decimal(str(default))
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, got {value!r}.")


def env_list(name: str, default: object = _MISSING) -> list[str]:
    value = _raw(name, default)
    if value is None:
        return list(default)  # type: ignore[call-overload]
    return [item.strip() for item in value.split(",") if item.strip()]


def env_json(name: str, default: object = _MISSING) -> object:
    """A JSON value (its shape is for the caller to check); malformed JSON names the variable."""
    value = _raw(name, default)
    if value is None:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be valid JSON ({exc.msg} at character {exc.pos}).")


# Django's engine per accepted DATABASE_URL scheme: the two databases Switchyard is built and tested on.
_DATABASE_SCHEMES = {"postgres", "postgresql", "pgsql", "sqlite"}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}


def _scheme(value: str) -> str:
    return value.split("://", 1)[0].lower() if "://" in value else ""


def env_database(name: str, **options: Any) -> dict[str, Any] | None:
    """The Django DATABASES entry for a `postgres://` or `sqlite://` URL; None when the variable is empty."""
    value = env_str(name, "").strip()
    if not value:
        return None
    scheme = _scheme(value)
    if not scheme:
        raise ImproperlyConfigured(
            f"{name} is not a URL ({value[:40]!r}): use postgres://USER:PASSWORD@HOST:PORT/DB "
            "or sqlite:////absolute/path.sqlite3, or unset it for embedded SQLite."
        )
    if scheme not in _DATABASE_SCHEMES:
        raise ImproperlyConfigured(
            f"{name} uses {scheme}://, which Switchyard does not support: use postgres://USER@HOST:PORT/DB "
            "(PostgreSQL) or sqlite:////absolute/path.sqlite3."
        )
    try:
        config = dict(dj_database_url.parse(value, **options))
    except (ValueError, dj_database_url.ParseError) as exc:
        raise ImproperlyConfigured(
            f"{name} is malformed ({exc}): expected postgres://USER:PASSWORD@HOST:PORT/DB "
            "(quote special characters in the password with urllib.parse.quote)."
        )
    return config


def env_redis_url(name: str) -> str:
    """A Redis URL (redis://, rediss:// or unix://) that redis-py can parse; "" when the variable is empty."""
    value = env_str(name, "").strip()
    if not value:
        return ""
    if _scheme(value) not in _REDIS_SCHEMES:
        raise ImproperlyConfigured(
            f"{name} must be a redis://HOST:PORT/DB (or rediss://, unix://) URL, got {value[:40]!r}."
        )
    try:
        redis.connection.parse_url(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is malformed ({exc}): expected redis://HOST:PORT/DB.")
    try:  # the hot path's own connection honours every option, or start-up says which it cannot
        connection_options(value)
    except UnsupportedRedisOption as exc:
        raise ImproperlyConfigured(f"{name}: {exc}.")
    return value


def config_error_line(exc: ImproperlyConfigured) -> str:
    """The one line an entry point prints for a configuration mistake (the message names the variable)."""
    return "Configuration error: " + " ".join(str(exc).split())
