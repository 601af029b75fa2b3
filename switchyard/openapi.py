"""The OpenAPI schema's hand-written parts: bearer-key security, the hot-path operations (served by the
raw ASGI gateway, not DRF), response and error shapes for every /api/ operation.

drf-spectacular builds the DRF views' paths; `postprocess` (a POSTPROCESSING_HOOK) then documents the
gateway's POST endpoints and the Stripe webhook, and gives every operation its real response schema and
the error shape as its `default` response. The fuzz tests (tests/security/test_fuzz.py) hold the server
to this document, so keep it exact: a response that does not match is a test failure.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

# --- shared pieces ---------------------------------------------------------------------------------

ERROR = {
    "type": "object",
    "description": "Every error under /api/ (except /messages, which answers in Anthropic's shape).",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer", "minimum": 400, "maximum": 599},
                "message": {"type": "string", "minLength": 1},
                "metadata": {"type": "object"},
            },
        }
    },
}
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "additionalProperties": False,
            "properties": {"type": {"type": "string"}, "message": {"type": "string", "minLength": 1}},
        },
    },
}
MONEY = {"type": "number", "description": "USD, rendered from the exact Decimal."}
NULLABLE_STRING = {"type": "string", "nullable": True}
USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens", "cost"],
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
        "cost": MONEY,
        "is_byok": {"type": "boolean"},
        "prompt_tokens_details": {"type": "object"},
        "completion_tokens_details": {"type": "object"},
    },
}
GEN_ID = {"type": "string", "pattern": "^gen-"}
MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "nullable": True,
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {"type": "string", "enum": ["text", "image_url"]},
                            "text": {"type": "string"},
                            "image_url": {"type": "object", "properties": {"url": {"type": "string"}}},
                        },
                    },
                },
            ],
        },
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
    },
}
PROVIDER_PREFS = {
    "type": "object",
    "description": "Routing preferences (OpenRouter's `provider` object).",
    "properties": {
        "order": {"type": "array", "items": {"type": "string"}},
        "allow_fallbacks": {"type": "boolean"},
        "require_parameters": {"type": "boolean"},
        "data_collection": {"type": "string", "enum": ["allow", "deny"]},
        "zdr": {"type": "boolean"},
        "only": {"type": "array", "items": {"type": "string"}},
        "ignore": {"type": "array", "items": {"type": "string"}},
        "quantizations": {"type": "array", "items": {"type": "string"}},
        "sort": {"type": "string", "enum": ["price", "throughput", "latency"]},
        "max_price": {"type": "object"},
    },
}
SAMPLING = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "max_tokens": {"type": "integer", "minimum": 1},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
    "seed": {"type": "integer"},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "user": {"type": "string"},
    "models": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
    "provider": PROVIDER_PREFS,
    "usage": {"type": "object", "properties": {"include": {"type": "boolean"}}},
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "description": "`author/name`, optionally with a variant (`:free`)."},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        **SAMPLING,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "enum": [1]},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string"}},
        },
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
    },
    "example": {
        "model": "switchyard/sim-1",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 16,
    },
}
CHAT_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created", "model", "provider", "choices", "usage"],
    "properties": {
        "id": GEN_ID,
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "provider": {"type": "string"},
        "system_fingerprint": NULLABLE_STRING,
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {"role": {"type": "string"}, "content": NULLABLE_STRING},
                    },
                    "finish_reason": NULLABLE_STRING,
                },
            },
        },
        "usage": USAGE,
    },
}
COMPLETION_REQUEST = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": {"type": "string"},
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        **SAMPLING,
    },
    "example": {"model": "switchyard/sim-1", "prompt": "Once upon a time", "max_tokens": 16},
}
COMPLETION_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created", "model", "provider", "choices", "usage"],
    "properties": {
        "id": GEN_ID,
        "object": {"type": "string", "enum": ["text_completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "provider": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "text", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "text": {"type": "string"},
                    "finish_reason": NULLABLE_STRING,
                },
            },
        },
        "usage": USAGE,
    },
}
CACHE_CONTROL = {"type": "object", "properties": {"type": {"type": "string", "enum": ["ephemeral"]}}}
ANTHROPIC_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {
        "type": {"type": "string", "enum": ["text"]},
        "text": {"type": "string"},
        "cache_control": CACHE_CONTROL,
    },
}
ANTHROPIC_SOURCE = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["base64", "url", "text", "content"]},
        "media_type": {"type": "string"},
        "data": {"type": "string"},
        "url": {"type": "string"},
    },
}
ANTHROPIC_BLOCK = {
    "type": "object",
    "required": ["type"],
    "description": "A content block: text, image, document, tool_use (assistant), tool_result (user), thinking.",
    "properties": {
        "type": {
            "type": "string",
            "enum": ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"],
        },
        "text": {"type": "string"},
        "source": ANTHROPIC_SOURCE,
        "id": {"type": "string"},
        "name": {"type": "string"},
        "input": {"type": "object"},
        "tool_use_id": {"type": "string"},
        "is_error": {"type": "boolean"},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": ANTHROPIC_TEXT_BLOCK}]},
        "cache_control": CACHE_CONTROL,
    },
}
MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": ANTHROPIC_TEXT_BLOCK}]},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant"]},
                    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": ANTHROPIC_BLOCK}]},
                },
            },
        },
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "minimum": 0},
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "input_schema"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "input_schema": {"type": "object"},
                    "cache_control": CACHE_CONTROL,
                },
            },
        },
        "tool_choice": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["auto", "any", "tool", "none"]},
                "name": {"type": "string"},
                "disable_parallel_tool_use": {"type": "boolean"},
            },
        },
        "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
        "thinking": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["enabled", "disabled"]},
                "budget_tokens": {"type": "integer", "minimum": 1024},
            },
        },
    },
    "example": {
        "model": "switchyard/sim-1",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hello!"}],
    },
}
MESSAGES_RESPONSE = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {
        "id": GEN_ID,
        "type": {"type": "string", "enum": ["message"]},
        "role": {"type": "string", "enum": ["assistant"]},
        "model": {"type": "string"},
        "provider": {"type": "string"},
        "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
        "stop_reason": NULLABLE_STRING,
        "stop_sequence": NULLABLE_STRING,
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {
                "input_tokens": {"type": "integer", "minimum": 0},
                "output_tokens": {"type": "integer", "minimum": 0},
            },
        },
    },
}
EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
        "provider": PROVIDER_PREFS,
    },
    "example": {"model": "switchyard/sim-embed", "input": "Hello!"},
}
EMBEDDINGS_RESPONSE = {
    "type": "object",
    "required": ["object", "id", "model", "data", "usage"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "id": GEN_ID,
        "model": {"type": "string"},
        "provider": {"type": "string"},
        "data": {"type": "array", "items": {"type": "object"}},
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "total_tokens", "cost"],
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
                "cost": MONEY,
            },
        },
    },
}
PRICING = {"type": "object", "additionalProperties": {"type": "string"}}
MODEL = {
    "type": "object",
    "required": ["id", "name", "context_length", "pricing", "architecture"],
    "properties": {
        "id": {"type": "string"},
        "canonical_slug": {"type": "string"},
        "name": {"type": "string"},
        "created": {"type": "integer"},
        "description": {"type": "string"},
        "context_length": {"type": "integer"},
        "architecture": {"type": "object"},
        "pricing": PRICING,
        "top_provider": {"type": "object"},
        "per_request_limits": {"type": "object", "nullable": True},
        "supported_parameters": {"type": "array", "items": {"type": "string"}},
    },
}
MODEL_ENDPOINTS = {
    "type": "object",
    "required": ["id", "name", "endpoints"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "created": {"type": "integer"},
        "description": {"type": "string"},
        "architecture": {"type": "object"},
        "endpoints": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["provider_name", "pricing", "context_length"],
                "properties": {
                    "name": {"type": "string"},
                    "provider_name": {"type": "string"},
                    "tag": {"type": "string"},
                    "context_length": {"type": "integer"},
                    "max_completion_tokens": {"type": "integer", "nullable": True},
                    "quantization": NULLABLE_STRING,
                    "pricing": PRICING,
                    "supported_parameters": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
GENERATION = {
    "type": "object",
    "required": [
        "id",
        "model",
        "provider_name",
        "tokens_prompt",
        "tokens_completion",
        "total_cost",
        "latency",
        "streamed",
        "cancelled",
        "created_at",
        "attempts",
    ],
    "properties": {
        "id": GEN_ID,
        "model": {"type": "string"},
        "provider_name": NULLABLE_STRING,
        "tokens_prompt": {"type": "integer"},
        "tokens_completion": {"type": "integer"},
        "native_tokens_prompt": {"type": "integer"},
        "native_tokens_completion": {"type": "integer"},
        "native_tokens_cached": {"type": "integer"},
        "native_tokens_reasoning": {"type": "integer"},
        "total_cost": MONEY,
        "latency": {"type": "integer", "nullable": True},
        "generation_time": {"type": "integer", "nullable": True},
        "finish_reason": NULLABLE_STRING,
        "streamed": {"type": "boolean"},
        "cancelled": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "attempts": {"type": "array", "items": {"type": "object"}},
        "is_byok": {"type": "boolean"},
    },
}
KEY = {
    "type": "object",
    "required": ["label", "limit", "usage", "limit_remaining", "is_free_tier", "rate_limit"],
    "properties": {
        "label": {"type": "string"},
        "name": {"type": "string"},
        "limit": {**MONEY, "nullable": True},
        "limit_reset": NULLABLE_STRING,
        "usage": MONEY,
        "usage_period": MONEY,
        "limit_remaining": {**MONEY, "nullable": True},
        "is_free_tier": {"type": "boolean"},
        "expires_at": {"type": "string", "nullable": True, "format": "date-time"},
        "rate_limit": {"type": "object"},
    },
}
CREDITS = {
    "type": "object",
    "required": ["total_credits", "total_usage"],
    "properties": {"total_credits": MONEY, "total_usage": MONEY},
}


def _data(ref: str, *, many: bool = False) -> dict[str, Any]:
    inner: dict[str, Any] = {"$ref": f"#/components/schemas/{ref}"}
    if many:
        inner = {"type": "array", "items": inner}
    return {"type": "object", "required": ["data"], "properties": {"data": inner}}


COMPONENTS: dict[str, Any] = {
    "Error": ERROR,
    "AnthropicError": ANTHROPIC_ERROR,
    "Usage": USAGE,
    "ChatCompletionRequest": CHAT_REQUEST,
    "ChatCompletion": CHAT_RESPONSE,
    "CompletionRequest": COMPLETION_REQUEST,
    "Completion": COMPLETION_RESPONSE,
    "MessagesRequest": MESSAGES_REQUEST,
    "Message": MESSAGES_RESPONSE,
    "EmbeddingsRequest": EMBEDDINGS_REQUEST,
    "Embeddings": EMBEDDINGS_RESPONSE,
    "Model": MODEL,
    "ModelEndpoints": MODEL_ENDPOINTS,
    "Generation": GENERATION,
    "Key": KEY,
    "Credits": CREDITS,
    "ModelList": _data("Model", many=True),
    "ModelEndpointsResponse": _data("ModelEndpoints"),
    "GenerationResponse": _data("Generation"),
    "KeyResponse": _data("Key"),
    "CreditsResponse": _data("Credits"),
}

# What each DRF operation answers with (drf-spectacular only sees a DictField).
DRF_RESPONSES = {
    "models_list": "ModelList",
    "model_endpoints": "ModelEndpointsResponse",
    "generation_get": "GenerationResponse",
    "key_get": "KeyResponse",
    "credits_get": "CreditsResponse",
}

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _error_responses(ref: str = "Error") -> dict[str, Any]:
    described = {
        "400": "Invalid request; the message names the field.",
        "401": "Missing, malformed, unknown, disabled, deleted or expired key.",
        "402": "The organisation's credit cannot cover the request's worst case.",
        "404": "Unknown model or object (another organisation's objects are 404 too).",
        "408": "Every provider timed out.",
        "413": "Body larger than SWITCHYARD_MAX_BODY_BYTES.",
        "429": "Rate limited; see Retry-After.",
        "502": "Every provider failed (metadata lists the attempts).",
        "503": "No endpoint can serve the request.",
    }
    out = {status: {"description": text, "content": _json(ref)} for status, text in described.items()}
    out["default"] = {"description": "Any other error, in the same shape.", "content": _json(ref)}
    return out


def _sse_event(events: list[str]) -> dict[str, Any]:
    """One server-sent event: JSON in `data` (or `[DONE]` to end an OpenAI-style stream)."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": events},
            "data": {"type": "string", "minLength": 1},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }


OPENAI_SSE = _sse_event(["message"])
ANTHROPIC_SSE = _sse_event(
    [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    ]
)


def _gateway_op(
    operation_id: str,
    summary: str,
    request: str,
    response: str,
    *,
    stream: dict[str, Any] | None,
    error: str = "Error",
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "The answer (an SSE stream when `stream` is true).", "content": {}}
    ok["content"].update(_json(response))
    if stream is not None:
        ok["content"]["text/event-stream"] = {"schema": stream}
    ok["headers"] = {"X-Generation-Id": {"schema": {"type": "string"}, "description": "The generation id."}}
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["inference"],
            "security": BEARER,
            "requestBody": {"required": True, "content": _json(request)},
            "responses": {"200": ok, **_error_responses(error)},
        }
    }


GATEWAY_PATHS: dict[str, Any] = {
    "/api/v1/chat/completions": _gateway_op(
        "chat_completions_create",
        "Chat completions (OpenAI/OpenRouter), streaming or not",
        "ChatCompletionRequest",
        "ChatCompletion",
        stream=OPENAI_SSE,
    ),
    "/api/v1/completions": _gateway_op(
        "completions_create", "Legacy text completions", "CompletionRequest", "Completion", stream=OPENAI_SSE
    ),
    "/api/v1/messages": _gateway_op(
        "messages_create",
        "Anthropic Messages-compatible (key as `x-api-key` or bearer); errors in Anthropic's shape",
        "MessagesRequest",
        "Message",
        stream=ANTHROPIC_SSE,
        error="AnthropicError",
    ),
    "/api/v1/embeddings": _gateway_op(
        "embeddings_create", "Embeddings", "EmbeddingsRequest", "Embeddings", stream=None
    ),
}
STRIPE_WEBHOOK_PATH = {
    "post": {
        "operationId": "stripe_webhook",
        "summary": "Stripe webhook (verified by the Stripe-Signature header, not by an API key)",
        "tags": ["billing"],
        "security": [{}],
        "parameters": [
            {"in": "header", "name": "Stripe-Signature", "required": False, "schema": {"type": "string"}}
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
            "200": {
                "description": "Recorded (or a duplicate of an event already recorded).",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["received", "id", "duplicate"],
                            "properties": {
                                "received": {"type": "boolean"},
                                "id": {"type": "string"},
                                "duplicate": {"type": "boolean"},
                            },
                        }
                    }
                },
            },
            **_error_responses(),
        },
    }
}


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer sk-sy-v1-...` for the DRF views."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "An API key: `sk-sy-v1-...`."}


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Add the gateway's operations and the real response and error shapes to the generated schema."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("Output", None)  # the DRF views' placeholder DictField serializers
    schemas.update(COMPONENTS)
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `sk-sy-v1-...`.",
    }
    paths = result.setdefault("paths", {})
    for item in paths.values():
        for operation in item.values():
            ref = DRF_RESPONSES.get(operation.get("operationId", ""))
            if ref is None:
                continue
            operation["responses"] = {
                "200": {"description": "OK", "content": _json(ref)},
                **_error_responses(),
            }
    paths.update(GATEWAY_PATHS)
    paths["/api/v1/stripe/webhook"] = STRIPE_WEBHOOK_PATH
    result["paths"] = dict(sorted(paths.items()))
    return result
