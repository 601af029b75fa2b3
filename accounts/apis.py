"""`GET /api/v1/key`: the calling key's limit and usage."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from accounts.selectors import key_summary
from switchyard.openapi import MoneyField, error_responses


class RateLimitSerializer(serializers.Serializer):
    """The limits on the key (null: no limit), per `interval`."""

    requests = serializers.IntegerField(allow_null=True)
    tokens = serializers.IntegerField(allow_null=True)
    interval = serializers.CharField()
    organization_requests = serializers.IntegerField(allow_null=True)
    organization_tokens = serializers.IntegerField(allow_null=True)
    free_requests_per_minute = serializers.IntegerField(allow_null=True)
    free_requests_per_day = serializers.IntegerField(allow_null=True)


class KeySerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]
    name = serializers.CharField()
    limit = MoneyField(allow_null=True)
    limit_reset = serializers.CharField(allow_null=True)
    usage = MoneyField()
    usage_period = MoneyField(help_text="Usage since the limit last reset (all usage when it never resets).")
    limit_remaining = MoneyField(allow_null=True)
    is_free_tier = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)
    rate_limit = RateLimitSerializer()


class KeyGetApi(APIView):
    @extend_schema_serializer(component_name="KeyResponse")
    class OutputSerializer(serializers.Serializer):
        data = KeySerializer()  # type: ignore[assignment]

    @extend_schema(
        operation_id="key_get",
        responses={200: OpenApiResponse(OutputSerializer, description="OK"), **error_responses()},
    )
    def get(self, request: Request) -> Response:
        summary = key_summary(key_id=principal(request).key.id)
        return Response(self.OutputSerializer({"data": summary}).data)
