"""Read-side catalog and generation endpoints (DRF); the completion hot path lives in routing/gateway.

Each view answers through its OutputSerializer, which is also what drf-spectacular documents."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import principal
from routing import health, selectors
from routing.catalog.snapshot import catalog
from switchyard.errors import BadRequest, NotFound
from switchyard.openapi import MoneyField, error_responses


class PricingSerializer(serializers.Serializer):
    """Prices in USD per token (per request, per image), as decimal strings."""

    prompt = serializers.CharField()
    completion = serializers.CharField()
    request = serializers.CharField()
    image = serializers.CharField()
    web_search = serializers.CharField(required=False)
    internal_reasoning = serializers.CharField(required=False)
    input_cache_read = serializers.CharField(required=False)
    input_cache_write = serializers.CharField(required=False)


class ArchitectureSerializer(serializers.Serializer):
    modality = serializers.CharField(help_text="`text+image->text`")
    input_modalities = serializers.ListField(child=serializers.CharField())
    output_modalities = serializers.ListField(child=serializers.CharField())
    tokenizer = serializers.CharField()
    instruct_type = serializers.CharField(allow_null=True)


class TopProviderSerializer(serializers.Serializer):
    context_length = serializers.IntegerField()
    max_completion_tokens = serializers.IntegerField(allow_null=True)
    is_moderated = serializers.BooleanField()


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    canonical_slug = serializers.CharField()
    name = serializers.CharField()
    created = serializers.IntegerField()
    description = serializers.CharField(allow_blank=True)
    context_length = serializers.IntegerField()
    architecture = ArchitectureSerializer()
    pricing = PricingSerializer(help_text="The cheapest endpoint's prices.")
    top_provider = TopProviderSerializer()
    per_request_limits = serializers.DictField(allow_null=True)
    supported_parameters = serializers.ListField(child=serializers.CharField())
    available = serializers.BooleanField(help_text="Whether this server can answer for the model.")
    unavailable_reason = serializers.CharField(allow_null=True)


class EndpointSerializer(serializers.Serializer):
    name = serializers.CharField()
    model_name = serializers.CharField()
    provider_name = serializers.CharField()
    tag = serializers.CharField()
    context_length = serializers.IntegerField()
    max_completion_tokens = serializers.IntegerField(allow_null=True)
    max_prompt_tokens = serializers.IntegerField(allow_null=True)
    quantization = serializers.CharField(allow_null=True)
    pricing = PricingSerializer()
    supported_parameters = serializers.ListField(child=serializers.CharField())
    supports_implicit_caching = serializers.BooleanField()
    supports_explicit_caching = serializers.BooleanField()
    data_policy = serializers.DictField()
    status = serializers.IntegerField()
    uptime_last_30m = serializers.FloatField(allow_null=True, help_text="Percent.")
    latency_last_30m = serializers.IntegerField(allow_null=True, help_text="Milliseconds.")
    throughput_last_30m = serializers.FloatField(allow_null=True, help_text="Tokens per second.")
    ttft_last_30m = serializers.IntegerField(allow_null=True, help_text="Milliseconds.")
    requests_last_30m = serializers.IntegerField()
    circuit = serializers.CharField()
    available = serializers.BooleanField()
    unavailable_reason = serializers.CharField(allow_null=True)


class ModelEndpointsSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    created = serializers.IntegerField()
    description = serializers.CharField(allow_blank=True)
    architecture = ArchitectureSerializer()
    endpoints = EndpointSerializer(many=True)


class AttemptSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    endpoint_id = serializers.IntegerField()
    status = serializers.IntegerField(help_text="The upstream status (0: no answer).")
    latency_ms = serializers.IntegerField()
    error = serializers.CharField(required=False)
    reason = serializers.CharField(required=False)
    byok = serializers.BooleanField(required=False)


class GenerationSerializer(serializers.Serializer):
    id = serializers.RegexField(r"^gen-")
    model = serializers.CharField()
    provider_name = serializers.CharField(allow_null=True)
    api_type = serializers.CharField()
    status = serializers.CharField()
    tokens_prompt = serializers.IntegerField()
    tokens_completion = serializers.IntegerField()
    native_tokens_prompt = serializers.IntegerField()
    native_tokens_completion = serializers.IntegerField()
    native_tokens_cached = serializers.IntegerField()
    native_tokens_reasoning = serializers.IntegerField()
    usage_estimated = serializers.BooleanField()
    total_cost = MoneyField()
    usage = MoneyField()
    latency = serializers.IntegerField(allow_null=True)
    moderation_latency = serializers.IntegerField(allow_null=True)
    generation_time = serializers.IntegerField(allow_null=True)
    time_to_first_token = serializers.IntegerField(allow_null=True)
    finish_reason = serializers.CharField(allow_null=True)
    native_finish_reason = serializers.CharField(allow_null=True)
    streamed = serializers.BooleanField()
    cancelled = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    attempts = AttemptSerializer(many=True, help_text="Every provider tried, in order.")
    is_byok = serializers.BooleanField()


class ModelsListApi(APIView):
    # Documents `GET /api/v1/models` and answers its other methods: through the ASGI server the gateway
    # answers GET from the catalog snapshot (routing.gateway.app.handle_models_list), with the same data.

    # Public, like OpenRouter's: a key (even a bad one) is neither needed nor checked.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="ModelList")
    class OutputSerializer(serializers.Serializer):
        data = ModelSerializer(many=True)  # type: ignore[assignment]

    @extend_schema(
        operation_id="models_list",
        parameters=[OpenApiParameter("search", str, description="Filter by slug or name")],
        responses={200: OpenApiResponse(OutputSerializer, description="OK"), **error_responses()},
    )
    def get(self, request: Request) -> Response:
        search = request.query_params.get("search")
        models = selectors.model_list(snapshot=catalog.get_sync(), search=search)
        return Response(self.OutputSerializer({"data": models}).data)


class ModelEndpointsApi(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="ModelEndpointsResponse")
    class OutputSerializer(serializers.Serializer):
        data = ModelEndpointsSerializer()  # type: ignore[assignment]

    @extend_schema(
        operation_id="model_endpoints",
        responses={200: OpenApiResponse(OutputSerializer, description="OK"), **error_responses()},
    )
    def get(self, request: Request, author: str, slug: str) -> Response:
        snapshot = catalog.get_sync()
        model = snapshot.models.get(f"{author}/{slug}")
        endpoint_ids = [ep.id for ep in model.endpoints] if model else []
        data = selectors.model_endpoints(
            snapshot=snapshot, slug=f"{author}/{slug}", health=health.stats_sync(endpoint_ids)
        )
        if data is None:
            raise NotFound(f"Model {author}/{slug} does not exist.")
        return Response(self.OutputSerializer({"data": data}).data)


class GenerationGetApi(APIView):
    @extend_schema_serializer(component_name="GenerationResponse")
    class OutputSerializer(serializers.Serializer):
        data = GenerationSerializer()  # type: ignore[assignment]

    @extend_schema(
        operation_id="generation_get",
        parameters=[OpenApiParameter("id", str, required=True, description="Generation id (gen-...)")],
        responses={200: OpenApiResponse(OutputSerializer, description="OK"), **error_responses()},
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
        return Response(self.OutputSerializer({"data": selectors.generation_data(gen)}).data)
