"""What every operation of the OpenAPI document shares: the bearer-key scheme, the error shape, money.

drf-spectacular builds the document from the DRF views' serializers (each view's OutputSerializer is
what it answers with) and, for the raw-ASGI gateway's routes, from the wire-format serializers in
routing/openapi.py. The fuzz tests (tests/security/test_fuzz.py) hold the server to that document.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema_field, extend_schema_serializer
from rest_framework import serializers


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer sk-sy-v1-...` for the DRF views."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "An API key: `sk-sy-v1-...`."}


class OneOf(serializers.Field):
    """A value that matches exactly one of `options` (serializer fields or serializers): what the wire
    formats' string-or-list fields are. Documentation only (the gateway validates the wire formats)."""

    def __init__(self, *options: serializers.Field, **kwargs: Any) -> None:
        self.options = options
        super().__init__(**kwargs)


class OneOfScheme(OpenApiSerializerFieldExtension):
    target_class = OneOf

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        options = self.target.options
        return {"oneOf": [auto_schema._map_serializer_field(option, direction) for option in options]}


@extend_schema_field({"type": "number", "description": "USD, rendered from the exact Decimal."})
class MoneyField(serializers.Field):
    """Money as a JSON number written digit for digit from the Decimal (the renderers' `json_default`)."""

    def to_representation(self, value: Decimal) -> Decimal:
        return value.normalize()


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.IntegerField(min_value=400, max_value=599, help_text="The HTTP status.")
    message = serializers.CharField(min_length=1)
    metadata = serializers.DictField(required=False)


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """Every error under /api/ (except /messages, which answers in Anthropic's shape)."""

    error = ErrorBodySerializer()


ERROR_STATUSES = {
    400: "Invalid request; the message names the field.",
    401: "Missing, malformed, unknown, disabled, deleted or expired key.",
    402: "The organisation's credit cannot cover the request's worst case.",
    404: "Unknown model or object (another organisation's objects are 404 too).",
    408: "Every provider timed out.",
    413: "Body larger than SWITCHYARD_MAX_BODY_BYTES.",
    429: "Rate limited; see Retry-After.",
    502: "Every provider failed (metadata lists the attempts).",
    503: "No endpoint can serve the request.",
}


def error_responses(serializer: Any = ErrorSerializer) -> dict[int | str, OpenApiResponse]:
    """The `responses=` entries for the error shape: each documented status, and `default` for the rest."""
    out: dict[int | str, OpenApiResponse] = {
        status: OpenApiResponse(serializer, description=text) for status, text in ERROR_STATUSES.items()
    }
    out["default"] = OpenApiResponse(serializer, description="Any other error, in the same shape.")
    return out
