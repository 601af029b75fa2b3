"""`POST /api/v1/chat/completions` and `POST /api/v1/completions`: OpenAI's own shapes, the pipeline's
defaults (routing/gateway/front.py)."""

from __future__ import annotations

from routing.gateway.front import Front

CHAT = Front("/api/v1/chat/completions", "chat")
TEXT = Front("/api/v1/completions", "completion")
