"""`GET /api/v1/key`: the calling key's limit and usage."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes  # the real shapes: switchyard/openapi.py
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from accounts.selectors import key_summary


class KeyGetApi(APIView):
    class OutputSerializer(serializers.Serializer):
        data = serializers.DictField()  # type: ignore[assignment]

    @extend_schema(operation_id="key_get", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"data": key_summary(key_id=principal(request).key.id)})
