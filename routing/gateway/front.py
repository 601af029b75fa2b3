"""What a front door plugs into the pipeline (routing/gateway/pipeline.py): how its requests are
authenticated and parsed, which candidates can serve them, what the hold must cover, and how its
answers and errors are written. The defaults are OpenAI's chat/text completions."""

from __future__ import annotations

from typing import Any

from accounts.keys import KeyInfo
from routing.adapters.base import Completion, Usage
from routing.byok import is_byok
from routing.catalog.snapshot import EndpointInfo
from routing.gateway.cost import worst_case_units
from routing.gateway.run import Run
from routing.gateway.validate import validate_completion
from routing.gateway.wire import Headers, authenticate, send_error, usage_json
from routing.gateway.writers import StreamWriter
from routing.request import Request
from routing.router import Candidate
from switchyard.errors import SwitchyardError


class Front:
    """A front door. Subclass it for another wire format and override what differs; one instance per
    path, registered in routing/gateway/app.py's FRONTS."""

    path = ""
    kind = "chat"  # the internal request's kind: chat, completion or embedding
    record_kind: str | None = None  # the generation record's kind when it differs from `kind`
    call = "complete"  # the adapter method a whole answer comes from (`complete`, or `embed`)
    sticky = True  # sticky routing for prompt caching (routing.router.route) applies

    def __init__(self, path: str = "", kind: str = "") -> None:
        self.path = path or self.path
        self.kind = kind or self.kind

    async def authenticate(self, scope: dict[str, Any]) -> KeyInfo:
        return await authenticate(scope)

    def parse(self, body: Any) -> Request:
        """The body (parsed JSON, within the input limits) as the one typed Request, or a 400."""
        return validate_completion(body, kind=self.kind)

    def admit(self, req: Request, candidates: list[Candidate]) -> list[Candidate]:
        """The routed candidates this front door can serve `req` with (all of them by default)."""
        return candidates

    def worst_case(self, ep: EndpointInfo, req: Request) -> int:
        """The most `req` can cost at `ep` (picodollars): the hold covers the largest over the candidates."""
        return worst_case_units(ep, req)

    async def send_error(self, send: Any, exc: SwitchyardError, extra: Headers | None = None) -> None:
        await send_error(send, exc, extra)

    def whole_body(self, run: Run, result: Any, usage: Usage) -> dict[str, Any]:
        """The JSON answer from a whole `result` (a Completion, or what `call` returns)."""
        assert run.winner is not None and isinstance(result, Completion)
        return {
            "id": run.gen_id,
            "object": run.object_name,
            "created": run.created,
            "model": run.winner.model.slug,
            "provider": run.winner.endpoint.provider_name,
            "system_fingerprint": None,
            "choices": result.choices,
            "usage": usage_json(usage, run.charge(run.winner.endpoint, usage), is_byok(run.winner.endpoint)),
        }

    def stream_writer(self, run: Run, send: Any) -> StreamWriter:
        return StreamWriter(run, send)
