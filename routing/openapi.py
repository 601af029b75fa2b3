"""The gateway's wire formats as serializers, for the OpenAPI document only.

`/chat/completions`, `/completions`, `/messages` and `/embeddings` are served by the raw-ASGI gateway
(routing/gateway), not by DRF: these serializers never validate a request (the gateway's own parse
does), they describe it. `add_gateway_operations` (a drf-spectacular PREPROCESSING_HOOK) adds one
schema-only view per route to the endpoints drf-spectacular documents, so the gateway's operations come
out of the same generator as the DRF views'. Nothing here is imported by the hot path.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from switchyard.openapi import MoneyField, OneOf, error_responses

GEN_ID = r"^gen-"


def _strings(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), **kwargs)


def _string_or_strings(**kwargs: Any) -> OneOf:
    return OneOf(serializers.CharField(), _strings(), **kwargs)


# --- shared ------------------------------------------------------------------------------------


class ProviderPreferencesSerializer(serializers.Serializer):
    """Routing preferences (OpenRouter's `provider` object)."""

    order = _strings(required=False)
    allow_fallbacks = serializers.BooleanField(required=False)
    require_parameters = serializers.BooleanField(required=False)
    data_collection = serializers.ChoiceField(["allow", "deny"], required=False)
    zdr = serializers.BooleanField(required=False)
    only = _strings(required=False)
    ignore = _strings(required=False)
    quantizations = _strings(required=False)
    sort = serializers.ChoiceField(["price", "throughput", "latency"], required=False)
    max_price = serializers.DictField(required=False)


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)
    cost = MoneyField(help_text="USD charged.")
    is_byok = serializers.BooleanField(required=False)
    prompt_tokens_details = serializers.DictField(required=False)
    completion_tokens_details = serializers.DictField(required=False)


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False)


class UsageOptionSerializer(serializers.Serializer):
    include = serializers.BooleanField(required=False)


class SamplingSerializer(serializers.Serializer):
    """The parameters chat and text completions share."""

    temperature = serializers.FloatField(min_value=0, max_value=2, required=False)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False)
    top_k = serializers.IntegerField(min_value=0, required=False)
    frequency_penalty = serializers.FloatField(min_value=-2, max_value=2, required=False)
    presence_penalty = serializers.FloatField(min_value=-2, max_value=2, required=False)
    max_tokens = serializers.IntegerField(min_value=1, required=False)
    stop = OneOf(serializers.CharField(), _strings(max_length=4), required=False)
    seed = serializers.IntegerField(required=False)
    stream = serializers.BooleanField(required=False)
    stream_options = StreamOptionsSerializer(required=False)
    user = serializers.CharField(required=False)
    models = _strings(max_length=10, required=False, help_text="Fallback models, tried in order.")
    provider = ProviderPreferencesSerializer(required=False)
    usage = UsageOptionSerializer(required=False)


class SseEventSerializer(serializers.Serializer):
    """One server-sent event: JSON in `data` (`[DONE]` ends an OpenAI-style stream)."""

    event = serializers.ChoiceField(["message"], required=False)
    data = serializers.CharField(min_length=1)  # type: ignore[assignment]
    id = serializers.CharField(required=False)
    retry = serializers.IntegerField(required=False)


class AnthropicSseEventSerializer(SseEventSerializer):
    event = serializers.ChoiceField(
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "ping",
            "error",
        ],
        required=False,
    )


# --- chat and text completions -----------------------------------------------------------------


class ImageUrlSerializer(serializers.Serializer):
    url = serializers.CharField(required=False)


class ContentPartSerializer(serializers.Serializer):
    type = serializers.ChoiceField(["text", "image_url"])
    text = serializers.CharField(required=False)
    image_url = ImageUrlSerializer(required=False)


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(["system", "developer", "user", "assistant", "tool"])
    content = OneOf(
        serializers.CharField(),
        serializers.ListField(child=ContentPartSerializer()),
        required=False,
        allow_null=True,
    )
    name = serializers.CharField(required=False)
    tool_call_id = serializers.CharField(required=False)
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False)


class ResponseFormatSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="`json_object` or `json_schema` (with `json_schema`).")


class ChatCompletionRequestSerializer(SamplingSerializer):
    model = serializers.CharField(
        required=False, help_text="`author/name`, optionally with a variant (`:free`)."
    )
    messages = ChatMessageSerializer(many=True, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(min_value=1, required=False)
    n = serializers.ChoiceField([1], required=False, help_text="Only 1.")
    tools = serializers.ListField(child=serializers.DictField(), required=False)
    tool_choice = OneOf(serializers.CharField(), serializers.DictField(), required=False)
    parallel_tool_calls = serializers.BooleanField(required=False)
    response_format = ResponseFormatSerializer(required=False)
    logprobs = serializers.BooleanField(required=False)
    top_logprobs = serializers.IntegerField(min_value=0, max_value=20, required=False)


class AssistantMessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField(allow_null=True, required=False)


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = AssistantMessageSerializer()
    finish_reason = serializers.CharField(allow_null=True)


class ChatCompletionSerializer(serializers.Serializer):
    id = serializers.RegexField(GEN_ID, help_text="The generation id (also the X-Generation-Id header).")
    object = serializers.ChoiceField(["chat.completion"])
    created = serializers.IntegerField()
    model = serializers.CharField(help_text="The model that answered.")
    provider = serializers.CharField(help_text="The provider that served it.")
    system_fingerprint = serializers.CharField(allow_null=True, required=False)
    choices = ChatChoiceSerializer(many=True)
    usage = UsageSerializer()


class CompletionRequestSerializer(SamplingSerializer):
    model = serializers.CharField(required=False)
    prompt = _string_or_strings()


class CompletionChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    text = serializers.CharField(allow_blank=True)
    finish_reason = serializers.CharField(allow_null=True)


class CompletionSerializer(serializers.Serializer):
    id = serializers.RegexField(GEN_ID)
    object = serializers.ChoiceField(["text_completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    provider = serializers.CharField()
    choices = CompletionChoiceSerializer(many=True)
    usage = UsageSerializer()


# --- Anthropic Messages ------------------------------------------------------------------------


class CacheControlSerializer(serializers.Serializer):
    type = serializers.ChoiceField(["ephemeral"], required=False)


class AnthropicTextBlockSerializer(serializers.Serializer):
    type = serializers.ChoiceField(["text"])
    text = serializers.CharField()
    cache_control = CacheControlSerializer(required=False)


class AnthropicSourceSerializer(serializers.Serializer):
    type = serializers.ChoiceField(["base64", "url", "text", "content"])
    media_type = serializers.CharField(required=False)
    data = serializers.CharField(required=False)  # type: ignore[assignment]
    url = serializers.CharField(required=False)


class AnthropicBlockSerializer(serializers.Serializer):
    """A content block: text, image, document, tool_use (assistant), tool_result (user), thinking."""

    type = serializers.ChoiceField(
        ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"]
    )
    text = serializers.CharField(required=False)
    source = AnthropicSourceSerializer(required=False)  # type: ignore[assignment]
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    input = serializers.DictField(required=False)
    tool_use_id = serializers.CharField(required=False)
    is_error = serializers.BooleanField(required=False)
    content = OneOf(
        serializers.CharField(), serializers.ListField(child=AnthropicTextBlockSerializer()), required=False
    )
    cache_control = CacheControlSerializer(required=False)


class AnthropicMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(["user", "assistant"])
    content = OneOf(serializers.CharField(), serializers.ListField(child=AnthropicBlockSerializer()))


class AnthropicToolSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False)
    input_schema = serializers.DictField()
    cache_control = CacheControlSerializer(required=False)


class AnthropicToolChoiceSerializer(serializers.Serializer):
    type = serializers.ChoiceField(["auto", "any", "tool", "none"])
    name = serializers.CharField(required=False)
    disable_parallel_tool_use = serializers.BooleanField(required=False)


class AnthropicMetadataSerializer(serializers.Serializer):
    user_id = serializers.CharField(required=False)


class ThinkingSerializer(serializers.Serializer):
    type = serializers.ChoiceField(["enabled", "disabled"])
    budget_tokens = serializers.IntegerField(min_value=1024, required=False)


class MessagesRequestSerializer(serializers.Serializer):
    model = serializers.CharField()
    max_tokens = serializers.IntegerField(min_value=1)
    system = OneOf(
        serializers.CharField(), serializers.ListField(child=AnthropicTextBlockSerializer()), required=False
    )
    messages = AnthropicMessageSerializer(many=True, allow_empty=False)
    stop_sequences = _strings(required=False)
    stream = serializers.BooleanField(required=False)
    temperature = serializers.FloatField(min_value=0, max_value=1, required=False)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False)
    top_k = serializers.IntegerField(min_value=0, required=False)
    tools = AnthropicToolSerializer(many=True, required=False)
    tool_choice = AnthropicToolChoiceSerializer(required=False)
    metadata = AnthropicMetadataSerializer(required=False)
    thinking = ThinkingSerializer(required=False)


class AnthropicResponseBlockSerializer(serializers.Serializer):
    type = serializers.CharField()


class AnthropicUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField(min_value=0)
    output_tokens = serializers.IntegerField(min_value=0)


class MessageSerializer(serializers.Serializer):
    id = serializers.RegexField(GEN_ID)
    type = serializers.ChoiceField(["message"])
    role = serializers.ChoiceField(["assistant"])
    model = serializers.CharField()
    provider = serializers.CharField(required=False)
    content = AnthropicResponseBlockSerializer(many=True)
    stop_reason = serializers.CharField(allow_null=True)
    stop_sequence = serializers.CharField(allow_null=True, required=False)
    usage = AnthropicUsageSerializer()


class AnthropicErrorBodySerializer(serializers.Serializer):
    type = serializers.CharField()
    message = serializers.CharField(min_length=1)


class AnthropicErrorSerializer(serializers.Serializer):
    """Errors on /messages, in Anthropic's shape."""

    type = serializers.ChoiceField(["error"])
    error = AnthropicErrorBodySerializer()


# --- embeddings --------------------------------------------------------------------------------


class EmbeddingsRequestSerializer(serializers.Serializer):
    model = serializers.CharField()
    input = _string_or_strings()
    encoding_format = serializers.ChoiceField(["float", "base64"], required=False)
    dimensions = serializers.IntegerField(min_value=1, required=False)
    user = serializers.CharField(required=False)
    provider = ProviderPreferencesSerializer(required=False)


class EmbeddingsUsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = MoneyField()


class EmbeddingsSerializer(serializers.Serializer):
    object = serializers.ChoiceField(["list"])
    id = serializers.RegexField(GEN_ID)
    model = serializers.CharField()
    provider = serializers.CharField(required=False)
    data = serializers.ListField(child=serializers.DictField())  # type: ignore[assignment]
    usage = EmbeddingsUsageSerializer()


# --- the schema-only views ---------------------------------------------------------------------

GENERATION_ID_HEADER = OpenApiParameter(
    "X-Generation-Id",
    str,
    location=OpenApiParameter.HEADER,
    response=[200],
    description="The generation id.",
)
OK = "The answer (an SSE stream when `stream` is true)."


def _inference(
    operation_id: str,
    summary: str,
    request: type[serializers.Serializer],
    response: type[serializers.Serializer],
    example: dict[str, Any],
    *,
    stream: type[serializers.Serializer] | None = SseEventSerializer,
    error: type[serializers.Serializer] | None = None,
) -> Any:
    ok: dict[Any, Any] = {(200, "application/json"): OpenApiResponse(response, description=OK)}
    if stream is not None:
        ok[(200, "text/event-stream")] = OpenApiResponse(stream, description=OK)
    errors = error_responses(error) if error is not None else error_responses()
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        tags=["inference"],
        request=request,
        responses={**ok, **errors},
        parameters=[GENERATION_ID_HEADER],
        examples=[OpenApiExample("hello", value=example, request_only=True)],
    )


def _not_served(request: Request) -> Response:
    raise AssertionError("schema-only view: the gateway serves this route")


class ChatCompletionsSchema(APIView):
    @_inference(
        "chat_completions_create",
        "Chat completions (OpenAI/OpenRouter), streaming or not",
        ChatCompletionRequestSerializer,
        ChatCompletionSerializer,
        {"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16},
    )
    def post(self, request: Request) -> Response:
        return _not_served(request)


class CompletionsSchema(APIView):
    @_inference(
        "completions_create",
        "Legacy text completions",
        CompletionRequestSerializer,
        CompletionSerializer,
        {"model": "switchyard/sim-1", "prompt": "Once upon a time", "max_tokens": 16},
    )
    def post(self, request: Request) -> Response:
        return _not_served(request)


class MessagesSchema(APIView):
    @_inference(
        "messages_create",
        "Anthropic Messages-compatible (key as `x-api-key` or bearer); errors in Anthropic's shape",
        MessagesRequestSerializer,
        MessageSerializer,
        {"model": "switchyard/sim-1", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello!"}]},
        stream=AnthropicSseEventSerializer,
        error=AnthropicErrorSerializer,
    )
    def post(self, request: Request) -> Response:
        return _not_served(request)


class EmbeddingsSchema(APIView):
    @_inference(
        "embeddings_create",
        "Embeddings",
        EmbeddingsRequestSerializer,
        EmbeddingsSerializer,
        {"model": "switchyard/sim-embed", "input": "Hello!"},
        stream=None,
    )
    def post(self, request: Request) -> Response:
        return _not_served(request)


GATEWAY_VIEWS: dict[str, type[APIView]] = {
    "/api/v1/chat/completions": ChatCompletionsSchema,
    "/api/v1/completions": CompletionsSchema,
    "/api/v1/messages": MessagesSchema,
    "/api/v1/embeddings": EmbeddingsSchema,
}


def add_gateway_operations(endpoints: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str, Any]]:
    """PREPROCESSING_HOOK: the gateway's routes, as drf-spectacular endpoints of the schema-only views."""
    added = [
        (path, "^" + re.escape(path) + "$", "POST", view.as_view()) for path, view in GATEWAY_VIEWS.items()
    ]
    return [*endpoints, *added]
