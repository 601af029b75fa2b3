"""Validation of OpenAI/OpenRouter completion requests: a clear 400 naming the field, or a clean dict."""

from __future__ import annotations

from typing import Any

from routing.gateway.tokens import PromptBound
from routing.request import Request, completion_request
from switchyard.errors import BadRequest
from switchyard.text import has_control

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
PART_TYPES = {"text", "image_url", "input_audio", "file"}
MAX_MESSAGES = 5000
MAX_TOKENS_CAP = 1_000_000
MAX_STOP = 4
MAX_TOOLS = 256
MAX_MODELS = 10
# The generation record's `model` column (routing.models.Generation): an id that long is also longer
# than any catalog slug (Model.slug is 128), so no real model is refused.
MAX_MODEL_ID = 128


def field_error(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", metadata={"field": field})


def _number(body: dict[str, Any], field: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_error(field, f"must be a number, got {type(value).__name__}")
    if value > hi or value < lo or (lo_open and value == lo):
        raise field_error(field, f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {value}")


def _integer(body: dict[str, Any], field: str, lo: int, hi: int) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(field, f"must be an integer, got {value!r}")
    if value < lo or value > hi:
        raise field_error(field, f"must be between {lo} and {hi}, got {value}")
    return value


def _bool(body: dict[str, Any], field: str) -> None:
    if field in body and body[field] is not None and not isinstance(body[field], bool):
        raise field_error(field, "must be true or false")


def _content(field: str, content: Any, *, role: str, has_tool_calls: bool) -> bool:
    """Check one message's content; True when a part carries `cache_control`."""
    if content is None:
        if role == "assistant" and has_tool_calls:
            return False
        if role == "assistant":
            return False
        raise field_error(field, "is required")
    if isinstance(content, str):
        return False
    if not isinstance(content, list):
        raise field_error(field, "must be a string or a list of content parts")
    for j, part in enumerate(content):
        where = f"{field}[{j}]"
        if (
            not isinstance(part, dict)
            or not isinstance(part.get("type"), str)
            or part["type"] not in PART_TYPES
        ):
            raise field_error(f"{where}.type", f"must be one of {', '.join(sorted(PART_TYPES))}")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise field_error(f"{where}.text", "must be a string")
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise field_error(f"{where}.image_url.url", "must be a URL or a data: URI")
    return any("cache_control" in part for part in content)


def _messages(messages: Any) -> bool:
    """Check the messages; True when a content part carries `cache_control`."""
    if not isinstance(messages, list) or not messages:
        raise field_error("messages", "must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise field_error("messages", f"at most {MAX_MESSAGES} messages")
    cache_control = False
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise field_error(where, "must be an object")
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise field_error(f"{where}.role", f"must be one of {', '.join(sorted(ROLES))}, got {role!r}")
        tool_calls = m.get("tool_calls")
        if tool_calls is not None:
            if role != "assistant" or not isinstance(tool_calls, list):
                raise field_error(f"{where}.tool_calls", "only assistant messages carry a list of tool_calls")
            for j, call in enumerate(tool_calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise field_error(f"{where}.tool_calls[{j}].function.name", "is required")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise field_error(f"{where}.tool_call_id", "is required for tool messages")
        if _content(f"{where}.content", m.get("content"), role=role, has_tool_calls=bool(tool_calls)):
            cache_control = True
    return cache_control


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise field_error("tools", f"must be a list of at most {MAX_TOOLS} tools")
    names = set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise field_error(f"tools[{i}]", 'must be {"type": "function", "function": {...}}')
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise field_error(f"tools[{i}].function.name", "is required")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise field_error(f"tools[{i}].function.parameters", "must be a JSON schema object")
        names.add(fn["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise field_error("tool_choice", 'must be "none", "auto", "required" or a function choice')
    elif isinstance(choice, dict):
        name = (
            (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        )
        if choice.get("type") != "function" or not isinstance(name, str) or name not in names:
            raise field_error("tool_choice.function.name", "must name one of the tools")
    else:
        raise field_error("tool_choice", "must be a string or an object")


def _response_format(body: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise field_error("response_format.type", 'must be "text", "json_object" or "json_schema"')
    if fmt["type"] == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise field_error("response_format.json_schema", "must be an object with a name and a schema")


def _stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) for s in stop):
        raise field_error("stop", f"must be a string or a list of at most {MAX_STOP} strings")


def _model_id(field: str, value: Any) -> str:
    """One model id: a non-empty string without control characters, at most MAX_MODEL_ID long."""
    if not isinstance(value, str) or not value.strip():
        raise field_error(field, "must be a model id such as openai/gpt-4o-mini")
    if has_control(value):
        raise field_error(field, "must not contain control characters")
    model = value.strip()
    if len(model) > MAX_MODEL_ID:
        raise field_error(field, f"must be at most {MAX_MODEL_ID} characters, got {len(model)}")
    return model


def model_ids(body: dict[str, Any]) -> list[str]:
    model = body.get("model")
    fallbacks = body.get("models")
    out: list[str] = []
    if model is not None:
        out.append(_model_id("model", model))
    if fallbacks is not None:
        if not isinstance(fallbacks, list):
            raise field_error("models", "must be a list of model ids")
        if len(fallbacks) > MAX_MODELS:
            raise field_error("models", f"at most {MAX_MODELS} models")
        for i, entry in enumerate(fallbacks):
            if not isinstance(entry, str) or not entry:
                raise field_error("models", "must be a list of model ids")
            checked = _model_id(f"models[{i}]", entry)
            if checked not in out:
                out.append(checked)
    if not out:
        raise field_error("model", "is required")
    return out


def validate_completion(
    body: Any,
    *,
    kind: str,
    passthrough: dict[str, Any] | None = None,
    passthrough_bound: PromptBound | None = None,
    native_only: str | None = None,
) -> Request:
    """Check a chat (`kind="chat"`) or legacy text completion request; return it as a Request (the
    `passthrough` arguments: a /messages body that rides along, see routing.request)."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    req = dict(body)
    models = model_ids(body)
    cache_control = False
    if kind == "chat":
        # Marks requests whose cache_control an endpoint without explicit caching must not be sent.
        cache_control = _messages(body.get("messages")) or any(
            isinstance(t, dict) and "cache_control" in t for t in body.get("tools") or ()
        )
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) > 1:
                raise field_error("prompt", "only one prompt per request is supported")
            req["prompt"] = prompt[0]
        elif not isinstance(prompt, str) or not prompt:
            raise field_error("prompt", "must be a non-empty string")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1, lo_open=True)
    _integer(body, "top_k", 0, 100_000)
    _number(body, "min_p", 0, 1)
    _number(body, "frequency_penalty", -2, 2)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "repetition_penalty", 0, 2, lo_open=True)
    max_tokens = _integer(body, "max_completion_tokens", 1, MAX_TOKENS_CAP)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, MAX_TOKENS_CAP)
    req.pop("max_completion_tokens", None)
    req["max_tokens"] = max_tokens
    _integer(body, "seed", -(2**63), 2**63 - 1)
    n = _integer(body, "n", 1, 128)
    if n is not None and n != 1:
        raise field_error("n", "only n=1 is supported: send several requests for several answers")
    req.pop("n", None)
    _stop(body)
    for flag in ("stream", "parallel_tool_calls", "logprobs"):
        _bool(body, flag)
    _integer(body, "top_logprobs", 0, 20)
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool)
    ):
        raise field_error("stream_options.include_usage", "must be true or false")
    usage = body.get("usage")
    if usage is not None and (
        not isinstance(usage, dict) or not isinstance(usage.get("include", False), bool)
    ):
        raise field_error("usage.include", "must be true or false")
    if "user" in body and body["user"] is not None and not isinstance(body["user"], str):
        raise field_error("user", "must be a string")
    if kind == "chat":
        _tools(body)
        _response_format(body)
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, dict):
        raise field_error("provider", "must be an object of routing preferences")
    req["stream"] = bool(body.get("stream"))
    return completion_request(
        req,
        kind=kind,
        models=models,
        cache_control=cache_control,
        passthrough=passthrough,
        passthrough_bound=passthrough_bound,
        native_only=native_only,
    )
