"""`GET /api/v1/credits`: the calling key's organisation's credits and spend."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from billing.money import json_number
from billing.selectors import credits_totals


class CreditsGetApi(APIView):
    class OutputSerializer(serializers.Serializer):
        data = serializers.DictField()  # type: ignore[assignment]

    @extend_schema(operation_id="credits_get", responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        credits, usage = credits_totals(organization_id=principal(request).org_id)
        return Response({"data": {"total_credits": json_number(credits), "total_usage": json_number(usage)}})
