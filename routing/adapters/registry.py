"""Adapter lookup by the provider's wire format."""

from __future__ import annotations

from routing.adapters.anthropic import AnthropicAdapter
from routing.adapters.base import Adapter
from routing.adapters.gemini import GeminiAdapter
from routing.adapters.openai import OpenAIAdapter
from routing.adapters.simulated import SimulatedAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
    "simulated": SimulatedAdapter(),
}


def adapter_for(api_format: str) -> Adapter | None:
    return ADAPTERS.get(api_format)
