"""Domain errors and their one mapping to the API error shape (DRF views and plain Django responses)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

if TYPE_CHECKING:
    from rest_framework.response import Response

logger = logging.getLogger("switchyard.errors")


class SwitchyardError(Exception):
    """A domain error with an HTTP status and a stable machine code."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.metadata = metadata or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.metadata)


class BadRequest(SwitchyardError):
    status, code = 400, "bad_request"


class Unauthorized(SwitchyardError):
    status, code = 401, "unauthorized"


class InsufficientCredits(SwitchyardError):
    status, code = 402, "insufficient_credits"


class Forbidden(SwitchyardError):
    status, code = 403, "forbidden"


class NotFound(SwitchyardError):
    status, code = 404, "not_found"


class RequestTimeout(SwitchyardError):
    status, code = 408, "timeout"


class PayloadTooLarge(SwitchyardError):
    status, code = 413, "payload_too_large"


class RateLimited(SwitchyardError):
    status, code = 429, "rate_limited"


class UpstreamError(SwitchyardError):
    status, code = 502, "provider_error"


class NoProviderAvailable(SwitchyardError):
    status, code = 503, "no_provider_available"


class ServiceUnavailable(SwitchyardError):
    status, code = 503, "service_unavailable"


UNAVAILABLE_RETRY_AFTER = "2"


def store_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """Redis or the database unreachable (refused, reset, timed out): a 503 the client may retry, never
    a 500 or a hang (the clients' socket timeouts bound the wait). See README "Failure policy"."""
    from django.db import InterfaceError, OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        store = "Redis"
    elif isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
        # uvloop's error for a write on a connection the peer reset (redis-py drops the connection and
        # passes it on instead of a ConnectionError): the store went away under the request.
        store = "Redis"
    elif isinstance(exc, OperationalError | InterfaceError):
        store = "the database"
    else:
        return None
    logger.warning("%s unavailable: %s", store, type(exc).__name__)
    return ServiceUnavailable(
        "The service is temporarily unavailable; retry shortly.",
        headers={"Retry-After": UNAVAILABLE_RETRY_AFTER},
    )


def error_body(status: int, message: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "message": message}
    if metadata:
        body["metadata"] = metadata
    return {"error": body}


def _flatten_detail(detail: Any, prefix: str = "") -> tuple[str, dict[str, Any]]:
    """Turn DRF's nested validation detail into one readable message naming the field."""
    if isinstance(detail, dict):
        parts = []
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            msg, _ = _flatten_detail(value, name)
            parts.append(msg)
        return "; ".join(parts), {"fields": detail}
    if isinstance(detail, list):
        msgs = [_flatten_detail(item, prefix)[0] for item in detail]
        return "; ".join(msgs), {}
    text = str(detail)
    return (f"{prefix}: {text}" if prefix and prefix != "non_field_errors" else text), {}


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # DRF is imported here, not at module level: the gateway's hot path uses this module's errors and
    # never needs DRF (its import costs a web worker several MB until the first API view runs).
    from rest_framework import exceptions as drf_exceptions
    from rest_framework.response import Response
    from rest_framework.views import exception_handler as drf_default_handler

    if isinstance(exc, RequestDataTooBig):  # a view that reads the raw body (the Stripe webhook)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(f"Request body is larger than {limit} bytes.", metadata={"limit": limit})
    if isinstance(exc, SwitchyardError):
        return Response(exc.body(), status=exc.status, headers=exc.headers)
    response = drf_default_handler(exc, context)
    if response is None and (down := store_unavailable(exc)) is not None:
        return Response(down.body(), status=down.status, headers=down.headers)
    if response is None:
        logger.exception("unhandled error in API view", exc_info=exc)
        return Response(error_body(500, "Internal server error."), status=500)
    if isinstance(exc, drf_exceptions.ValidationError):
        message, meta = _flatten_detail(exc.detail)
        response.data = error_body(400, message or "Invalid request.", meta)
        response.status_code = 400
    elif isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        response.data = error_body(401, str(exc.detail))
        response.status_code = 401
    else:
        detail = exc.detail if isinstance(exc, drf_exceptions.APIException) else str(exc)
        response.data = error_body(response.status_code, str(detail))
    return response


_STATUS_MESSAGES = {
    400: "Bad request.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
    500: "Internal server error.",
}


def json_error(
    status: int, message: str | None = None, metadata: dict[str, Any] | None = None
) -> JsonResponse:
    return JsonResponse(
        error_body(status, message or _STATUS_MESSAGES.get(status, "Error."), metadata), status=status
    )


def _no_api_route(request: HttpRequest) -> str:
    return f"No API route matches {request.path}."


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: JSON under /api/ without rendering the HTML page first (which needs the static files
    manifest: a deployment that has not run `collectstatic` would turn every unknown API path into a 500)."""
    if request.path.startswith("/api/"):
        return json_error(404, _no_api_route(request))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


class ApiErrorMiddleware:
    """Under /api/, never answer with an HTML error page: unknown paths, wrong methods and crashes become JSON."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not request.path.startswith("/api/") or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        message = None
        if response.status_code == 405:
            allowed = response.get("Allow", "")
            message = f"Method {request.method} not allowed." + (f" Allowed: {allowed}." if allowed else "")
        elif response.status_code == 404:
            message = _no_api_route(request)
        converted = json_error(response.status_code, message)
        if response.has_header("Allow"):
            converted["Allow"] = response["Allow"]
        return converted

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, SwitchyardError):
            return JsonResponse(exception.body(), status=exception.status)
        if isinstance(exception, RequestDataTooBig):  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return json_error(413, f"Request body is larger than {limit} bytes.", {"limit": limit})
        if isinstance(exception, SuspiciousOperation):  # what Django itself would answer with a 400
            return json_error(400, str(exception) or None)
        if (down := store_unavailable(exception)) is not None:
            response = JsonResponse(down.body(), status=down.status)
            response["Retry-After"] = UNAVAILABLE_RETRY_AFTER
            return response
        logger.exception("unhandled error on %s", request.path, exc_info=exception)
        return json_error(500)


def parse_json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}")
