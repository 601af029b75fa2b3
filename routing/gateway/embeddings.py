"""`POST /api/v1/embeddings` (OpenAI's format): routed, held, metered and recorded like completions."""

from __future__ import annotations

from typing import Any

from routing.adapters.base import Embeddings, Usage
from routing.byok import charged_units
from routing.catalog.snapshot import EndpointInfo
from routing.gateway.front import Front
from routing.gateway.run import Run
from routing.gateway.validate import field_error, model_ids
from routing.request import Request, embedding_request
from switchyard.errors import BadRequest
from switchyard.money import from_units, json_number

MAX_INPUTS = 2048


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def validate_embeddings(body: Any) -> Request:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    models = model_ids(body)
    req: dict[str, Any] = {}
    value = body.get("input")
    if isinstance(value, str):
        if not value:
            raise field_error("input", "must not be empty")
    elif _is_tokens(value):
        pass
    elif isinstance(value, list) and value and len(value) <= MAX_INPUTS:
        for i, item in enumerate(value):
            if not (isinstance(item, str) and item) and not _is_tokens(item):
                raise field_error(f"input[{i}]", "must be a non-empty string or a list of token ids")
    else:
        raise field_error(
            "input", f"must be a string, or a list of at most {MAX_INPUTS} strings or token arrays"
        )
    req["input"] = value
    fmt = body.get("encoding_format")
    if fmt is not None:
        if fmt not in ("float", "base64"):
            raise field_error("encoding_format", 'must be "float" or "base64"')
        req["encoding_format"] = fmt
    dims = body.get("dimensions")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 65536:
            raise field_error("dimensions", "must be a positive integer")
        req["dimensions"] = dims
    if body.get("user") is not None:
        if not isinstance(body["user"], str):
            raise field_error("user", "must be a string")
        req["user"] = body["user"]
    if body.get("provider") is not None:
        if not isinstance(body["provider"], dict):
            raise field_error("provider", "must be an object of routing preferences")
        req["provider"] = body["provider"]
    return embedding_request(req, models=models, size=input_bytes(value))


def input_bytes(value: Any) -> int:
    """An upper bound on the input's token count: its UTF-8 bytes (token arrays count themselves)."""
    items = [value] if isinstance(value, str) or _is_tokens(value) else value
    return sum(len(i.encode()) if isinstance(i, str) else len(i) for i in items)


class EmbeddingsFront(Front):
    path = "/api/v1/embeddings"
    kind = "embedding"
    call = "embed"
    sticky = False  # nothing to cache between embedding calls

    def parse(self, body: Any) -> Request:
        return validate_embeddings(body)

    def worst_case(self, ep: EndpointInfo, req: Request) -> int:
        return charged_units(ep, req.bound.size * ep.prompt_units + ep.request_units)

    def whole_body(self, run: Run, result: Any, usage: Usage) -> dict[str, Any]:
        assert run.winner is not None and isinstance(result, Embeddings)
        cost = run.charge(run.winner.endpoint, usage)
        return {
            "object": "list",
            "id": run.gen_id,
            "model": run.winner.model.slug,
            "provider": run.winner.endpoint.provider_name,
            "data": result.data,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "total_tokens": usage.prompt_tokens,
                "cost": json_number(from_units(cost)),
            },
        }


EMBEDDINGS = EmbeddingsFront()
