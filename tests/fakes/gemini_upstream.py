"""Fake Gemini API (`models/{id}:generateContent`, `:streamGenerateContent?alt=sse`) that validates the wire
format and records requests; it also serves a few images for the URL-fetching tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import ThreadedServer

GREETING = "Hello from fake-gemini."
# A valid 1x1 transparent PNG.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
GENERATION_KEYS = {
    "temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "seed", "presencePenalty",
    "frequencyPenalty", "responseMimeType", "responseSchema", "thinkingConfig", "candidateCount",
}  # fmt: skip


@dataclass
class Script:
    """kind: ok | status | blocked (promptFeedback, no candidates)."""

    kind: str = "ok"
    status: int = 503
    message: str = "The model is overloaded. Please try again later."
    content: str | None = None
    thoughts: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    candidates_tokens: int | None = None
    thoughts_tokens: int | None = None
    finish_reason: str | None = None
    # Sent verbatim as usageMetadata, for tests of bad provider usage (negative, non-numeric, huge).
    usage: dict[str, Any] | None = None


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    problems: list[str] = field(default_factory=list)


def example(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "")).lower()
    if kind == "object" or "properties" in schema:
        return {k: example(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items"))]
    if kind in ("integer", "number"):
        return 7
    if kind == "boolean":
        return True
    return "Paris"


def validate(body: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["body is not an object"]
    allowed = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings"}
    for key in set(body) - allowed:
        problems.append(f'Invalid JSON payload received. Unknown name "{key}"')
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return [*problems, "contents is not specified"]
    for i, c in enumerate(contents):
        if c.get("role") not in ("user", "model"):
            problems.append(f"contents[{i}].role: must be user or model")
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts:
            problems.append(f"contents[{i}].parts: required")
            continue
        for j, part in enumerate(parts):
            keys = set(part) - {"thought", "thoughtSignature"}
            if len(keys) != 1 or not keys <= {
                "text",
                "inlineData",
                "functionCall",
                "functionResponse",
                "fileData",
            }:
                problems.append(
                    f"contents[{i}].parts[{j}]: exactly one data field expected, got {sorted(keys)}"
                )
            if "inlineData" in part:
                data = part["inlineData"]
                if not data.get("mimeType") or not data.get("data"):
                    problems.append(f"contents[{i}].parts[{j}].inlineData: mimeType and data required")
                else:
                    base64.b64decode(data["data"], validate=True)
            if "functionResponse" in part:
                fr = part["functionResponse"]
                if not fr.get("name") or not isinstance(fr.get("response"), dict):
                    problems.append(
                        f"contents[{i}].parts[{j}].functionResponse: name and response object required"
                    )
            if "functionCall" in part and not isinstance(part["functionCall"].get("args", {}), dict):
                problems.append(f"contents[{i}].parts[{j}].functionCall.args: must be an object")
    system = body.get("systemInstruction")
    if system is not None and not all("text" in p for p in system.get("parts") or [{}]):
        problems.append("systemInstruction.parts: text only")
    for key in set(body.get("generationConfig") or {}) - GENERATION_KEYS:
        problems.append(f'generationConfig: Unknown name "{key}"')
    for tool in body.get("tools") or []:
        for decl in tool.get("functionDeclarations") or []:
            if "additionalProperties" in json.dumps(decl.get("parameters") or {}):
                problems.append("functionDeclarations.parameters: Unknown name additionalProperties")
    return problems


class FakeGeminiUpstream(ThreadedServer):
    def __init__(self, *, api_key: str = "AIza-fake-gemini-key") -> None:
        super().__init__()
        self.api_key = api_key
        self._lock = threading.Lock()
        self._queue: deque[Script] = deque()
        self.requests: list[Recorded] = []
        self.image_hits = 0

    def push(self, *scripts: Script) -> None:
        with self._lock:
            self._queue.extend(scripts)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.image_hits = 0

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1beta/models/{call}", self._call)
        app.router.add_get("/images/pixel.png", self._pixel)
        app.router.add_get("/images/redirect", self._redirect)
        app.router.add_get("/images/page.html", self._html)
        return app

    async def _pixel(self, request: web.Request) -> web.Response:
        self.image_hits += 1
        return web.Response(body=PIXEL_PNG, content_type="image/png")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query.get("to", "/images/pixel.png"))

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        body = {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}
        return web.json_response(body, status=status)

    async def _call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Invalid JSON payload received.")
        record = Recorded(
            request.path, dict(request.query), {k.lower(): v for k, v in request.headers.items()}, body
        )
        with self._lock:
            self.requests.append(record)
            script = self._queue.popleft() if self._queue else Script()
        if request.headers.get("x-goog-api-key") != self.api_key:
            return self._error(403, "Method doesn't allow unregistered callers. API key not valid.")
        if method == "batchEmbedContents":
            return self._embed(model, body, script, record)
        if method not in ("generateContent", "streamGenerateContent"):
            return self._error(404, f"unknown method {method}")
        record.problems = validate(body)
        if record.problems:
            return self._error(400, "; ".join(record.problems))
        if script.kind == "status":
            return self._error(script.status, script.message)
        if script.kind == "blocked":
            payload = {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
            }
            if method == "generateContent":
                return web.json_response(payload)
            return await self._sse(request, [payload])
        parts, usage, finish = self._answer(body, script)
        if method == "generateContent":
            return web.json_response(
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
                    ],
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": "fake-response",
                }
            )
        if request.query.get("alt") != "sse":
            return self._error(400, "this fake only streams with alt=sse")
        chunks: list[dict[str, Any]] = []
        for part in parts:
            if "text" in part and not part.get("thought"):
                words = part["text"].split(" ")
                for k, word in enumerate(words):
                    chunks.append(
                        {
                            "candidates": [
                                {
                                    "content": {
                                        "role": "model",
                                        "parts": [{"text": word if k == 0 else " " + word}],
                                    },
                                    "index": 0,
                                }
                            ]
                        }
                    )
            else:
                chunks.append({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}]})
        last = chunks[-1]
        last["candidates"][0]["finishReason"] = finish
        last["usageMetadata"] = usage
        return await self._sse(request, chunks)

    def _embed(self, model: str, body: Any, script: Script, record: Recorded) -> web.Response:
        """batchEmbedContents: each request names this model and holds text parts; the answer is one
        vector per request (derived from its text), and, like Gemini's, no usage."""
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests or len(requests) > 100:
            record.problems.append("requests: 1 to 100 required")
        for i, one in enumerate(requests or []):
            if one.get("model") != f"models/{model}":
                record.problems.append(f"requests[{i}].model: must be models/{model}")
            parts = (one.get("content") or {}).get("parts")
            if not isinstance(parts, list) or not all(isinstance(p.get("text"), str) for p in parts):
                record.problems.append(f"requests[{i}].content.parts: text parts required")
        if record.problems:
            return self._error(400, "; ".join(record.problems))
        if script.kind == "status":
            return self._error(script.status, script.message)
        embeddings = []
        for one in requests or []:
            text = "".join(p["text"] for p in one["content"]["parts"])
            digest = hashlib.sha256(text.encode()).digest()
            size = one.get("outputDimensionality") or 8
            embeddings.append({"values": [round(digest[k % 32] / 255, 4) for k in range(size)]})
        return web.json_response({"embeddings": embeddings})

    async def _sse(self, request: web.Request, chunks: list[dict[str, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            await asyncio.sleep(0)
        return resp

    def _answer(
        self, body: dict[str, Any], script: Script
    ) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        contents = body["contents"]
        last = contents[-1]
        answered_tool = any("functionResponse" in p for p in last["parts"])
        inline = [p["inlineData"] for c in contents for p in c["parts"] if "inlineData" in p]
        said = " ".join(p["text"] for p in last["parts"] if "text" in p)
        parts: list[dict[str, Any]] = []
        config = body.get("generationConfig") or {}
        thinking = config.get("thinkingConfig") or {}
        if thinking.get("includeThoughts"):
            parts.append({"text": script.thoughts or "Thinking it over.", "thought": True})
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        if declarations and mode != "NONE" and (not answered_tool or mode == "ANY"):
            allowed = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get(
                "allowedFunctionNames"
            )
            decl = next((d for d in declarations if not allowed or d["name"] in allowed), declarations[0])
            parts.append({"functionCall": {"name": decl["name"], "args": example(decl.get("parameters"))}})
        else:
            text = script.content
            if text is None:
                if config.get("responseMimeType") == "application/json":
                    text = json.dumps(
                        example(config.get("responseSchema"))
                        if config.get("responseSchema")
                        else {"ok": True}
                    )
                elif answered_tool:
                    text = (
                        GREETING
                        + " The tool said: "
                        + json.dumps(
                            [
                                p["functionResponse"]["response"]
                                for p in last["parts"]
                                if "functionResponse" in p
                            ]
                        )
                    )
                else:
                    text = GREETING
                    if inline:
                        sizes = ", ".join(
                            f"{d['mimeType']} {len(base64.b64decode(d['data']))} bytes" for d in inline
                        )
                        text += f" I see {len(inline)} image(s): {sizes}."
                    if said:
                        text += f" You said: {said}"
            parts.append({"text": text})
        prompt = (
            script.prompt_tokens if script.prompt_tokens is not None else len(json.dumps(contents).split())
        )
        out = script.candidates_tokens
        if out is None:
            out = sum(
                len((p.get("text") or json.dumps(p.get("functionCall"))).split())
                for p in parts
                if not p.get("thought")
            )
        usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": out}
        if script.cached_tokens:
            usage["cachedContentTokenCount"] = script.cached_tokens
        thoughts = script.thoughts_tokens
        if thoughts is None and thinking.get("includeThoughts"):
            thoughts = len(parts[0]["text"].split())
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        usage["totalTokenCount"] = prompt + out + (thoughts or 0)
        if script.usage is not None:
            usage = dict(script.usage)
        return parts, usage, script.finish_reason or "STOP"
