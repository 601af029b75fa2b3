"""Input limits on the completion endpoints: JSON nesting depth, string lengths, message count and
`max_tokens` bounds, each a 400 in the error shape naming the field (the body size limit, 413, is
enforced while the body is read: routing.gateway.app.read_body).

One iterative walk over the parsed body checks depth and strings, so a hostile body can neither
recurse the validator nor make later stages (token counting, scrubbing, upstream translation) chew on
a giant string.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from switchyard.errors import BadRequest
from switchyard.shared import setting

TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "body"


def _fail(field: str, message: str, **metadata: Any) -> BadRequest:
    return BadRequest(f"{field}: {message}", metadata={"field": field, **metadata})


def parse_body(raw: bytes) -> Any:
    """The request body as JSON, or a 400 (orjson itself refuses nesting deeper than 1024)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc).lower():
            limit = settings.SWITCHYARD_MAX_JSON_DEPTH
            raise BadRequest(
                f"body: JSON nested deeper than {limit} levels", metadata={"field": "body", "limit": limit}
            )
        raise BadRequest(f"Request body is not valid JSON: {exc}")


def check_input(body: Any) -> None:
    """Raise a 400 naming the first field over a limit."""
    max_depth = setting("SWITCHYARD_MAX_JSON_DEPTH")
    max_chars = setting("SWITCHYARD_MAX_STRING_CHARS")
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = (
        [(body, 1, ())] if isinstance(body, dict | list) else []
    )
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise _fail(_path(path), f"JSON nested deeper than {max_depth} levels", limit=max_depth)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(key, str) and len(key) > max_chars:
                raise _fail(_path(path), f"a key is longer than {max_chars} characters", limit=max_chars)
            if isinstance(value, str):
                if len(value) > max_chars:
                    raise _fail(
                        _path((*path, key)),
                        f"longer than {max_chars} characters ({len(value)})",
                        limit=max_chars,
                    )
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1, (*path, key)))
    if not isinstance(body, dict):
        return
    messages = body.get("messages")
    max_messages = setting("SWITCHYARD_MAX_MESSAGES")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise _fail("messages", f"at most {max_messages} messages, got {len(messages)}", limit=max_messages)
    max_output = setting("SWITCHYARD_MAX_OUTPUT_TOKENS")
    for field in TOKEN_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= max_output:
            raise _fail(field, f"must be between 1 and {max_output}, got {value}", limit=max_output)
