"""`GET /api/v1/credits` (the calling key's organisation's credits and spend) and the Stripe webhook."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from billing.selectors import credits_totals
from billing.services import stripe_webhook_receive
from switchyard.openapi import MoneyField, error_responses


class CreditsSerializer(serializers.Serializer):
    total_credits = MoneyField(help_text="Purchased and granted.")
    total_usage = MoneyField(help_text="Spent.")


class CreditsGetApi(APIView):
    @extend_schema_serializer(component_name="CreditsResponse")
    class OutputSerializer(serializers.Serializer):
        data = CreditsSerializer()  # type: ignore[assignment]

    @extend_schema(
        operation_id="credits_get",
        responses={200: OpenApiResponse(OutputSerializer, description="OK"), **error_responses()},
    )
    def get(self, request: Request) -> Response:
        credits, usage = credits_totals(organization_id=principal(request).org_id)
        return Response(
            self.OutputSerializer({"data": {"total_credits": credits, "total_usage": usage}}).data
        )


class StripeWebhookApi(APIView):
    """`POST /api/v1/stripe/webhook`: verify, record once, queue; answers before any heavy work.

    Authenticated by the `Stripe-Signature` header over the raw body, not by an API key; the body is
    read as bytes (never parsed here), so the signature is checked over exactly what Stripe sent."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="StripeWebhookReceipt")
    class OutputSerializer(serializers.Serializer):
        received = serializers.BooleanField()
        id = serializers.CharField(help_text="The Stripe event id.")
        duplicate = serializers.BooleanField(help_text="The event had already been recorded.")

    @extend_schema(
        operation_id="stripe_webhook",
        summary="Stripe webhook (verified by the Stripe-Signature header, not by an API key)",
        tags=["billing"],
        parameters=[OpenApiParameter("Stripe-Signature", str, location=OpenApiParameter.HEADER)],
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiResponse(
                OutputSerializer, description="Recorded (or a duplicate of an event already recorded)."
            ),
            **error_responses(),
        },
    )
    def post(self, request: Request) -> Response:
        event_id, recorded = stripe_webhook_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
        return Response(
            self.OutputSerializer({"received": True, "id": event_id, "duplicate": not recorded}).data
        )
