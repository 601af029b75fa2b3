"""Read-side catalog and generation endpoints (DRF); the completion hot path lives in routing/gateway."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes  # the real shapes: switchyard/openapi.py
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from routing import health, selectors
from routing.catalog.snapshot import catalog
from switchyard.errors import BadRequest, NotFound


class ModelsListApi(APIView):
    # Public, like OpenRouter's: a key (even a bad one) is neither needed nor checked.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        data = serializers.ListField(child=serializers.DictField())  # type: ignore[assignment]

    @extend_schema(
        operation_id="models_list",
        parameters=[OpenApiParameter("search", str, description="Filter by slug or name")],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        search = request.query_params.get("search")
        return Response({"data": selectors.model_list(snapshot=catalog.get_sync(), search=search)})


class ModelEndpointsApi(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        data = serializers.DictField()  # type: ignore[assignment]

    @extend_schema(operation_id="model_endpoints", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, author: str, slug: str) -> Response:
        snapshot = catalog.get_sync()
        model = snapshot.models.get(f"{author}/{slug}")
        endpoint_ids = [ep.id for ep in model.endpoints] if model else []
        data = selectors.model_endpoints(
            snapshot=snapshot, slug=f"{author}/{slug}", health=health.stats_sync(endpoint_ids)
        )
        if data is None:
            raise NotFound(f"Model {author}/{slug} does not exist.")
        return Response({"data": data})


class GenerationGetApi(APIView):
    class OutputSerializer(serializers.Serializer):
        data = serializers.DictField()  # type: ignore[assignment]

    @extend_schema(
        operation_id="generation_get",
        parameters=[OpenApiParameter("id", str, required=True, description="Generation id (gen-...)")],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        gen_id = request.query_params.get("id", "").strip()
        if not gen_id:
            raise BadRequest("Query parameter `id` is required.", metadata={"field": "id"})
        org_id = principal(request).org_id
        gen = selectors.generation_get(organization_id=org_id, generation_id=gen_id)
        if gen is None:
            gen = selectors.generation_pending(organization_id=org_id, generation_id=gen_id)
        if gen is None:
            raise NotFound(f"Generation {gen_id} not found (it may still be on its way: retry in a second).")
        return Response({"data": selectors.generation_data(gen)})
