"""`GET /api/v1/credits` (the calling key's organisation's credits and spend) and the Stripe webhook."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.types import OpenApiTypes  # the real shapes: switchyard/openapi.py
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from billing.money import json_number
from billing.selectors import credits_totals
from billing.services import stripe_webhook_receive
from switchyard.errors import SwitchyardError


class CreditsGetApi(APIView):
    class OutputSerializer(serializers.Serializer):
        data = serializers.DictField()  # type: ignore[assignment]

    @extend_schema(operation_id="credits_get", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        credits, usage = credits_totals(organization_id=principal(request).org_id)
        return Response({"data": {"total_credits": json_number(credits), "total_usage": json_number(usage)}})


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/stripe/webhook`: verify, record once, queue; answers before any heavy work."""
    try:
        event_id, recorded = stripe_webhook_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except SwitchyardError as exc:
        return JsonResponse(exc.body(), status=exc.status)
    return JsonResponse({"received": True, "id": event_id, "duplicate": not recorded})
