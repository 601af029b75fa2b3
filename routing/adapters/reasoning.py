"""One reasoning mapping: OpenRouter's unified `reasoning` object as each wire format's knob (OpenAI's
effort level, Anthropic's and Gemini's thinking budgets), and the wrapper that strips reasoning from
an answer when the request asked for it to be excluded."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from routing.adapters.base import Adapter, CallContext, Completion, Usage
from routing.request import Request

# A reasoning effort level as a share of the answer budget (Anthropic and Gemini thinking budgets).
EFFORT_SHARE = {"minimal": 0.1, "low": 0.2, "medium": 0.5, "high": 0.8}
# OpenRouter's `reasoning: {max_tokens}` as the nearest effort level, by share of the answer budget.
EFFORT_BY_SHARE = ((0.15, "minimal"), (0.35, "low"), (0.65, "medium"))
# Anthropic's smallest thinking budget.
MIN_THINKING_BUDGET = 1024


def reasoning_effort(reasoning: Any, max_tokens: Any) -> str | None:
    """OpenRouter's unified `reasoning` object as the OpenAI wire format's `reasoning_effort`."""
    if not isinstance(reasoning, dict) or reasoning.get("enabled") is False:
        return None
    if reasoning.get("effort") in ("minimal", "low", "medium", "high"):
        return str(reasoning["effort"])
    budget = reasoning.get("max_tokens")
    if isinstance(budget, int) and isinstance(max_tokens, int) and max_tokens > 0:
        share = budget / max_tokens
        return next((name for limit, name in EFFORT_BY_SHARE if share <= limit), "high")
    return "medium"  # reasoning asked for without a level: the providers' own default


def thinking_budget(reasoning: Any, max_tokens: int) -> int | None:
    """OpenRouter's `reasoning` as an Anthropic thinking budget, or None for no thinking."""
    if not isinstance(reasoning, dict) or reasoning.get("enabled") is False:
        return None
    if reasoning.get("max_tokens"):
        budget = int(reasoning["max_tokens"])
    else:
        share = EFFORT_SHARE.get(str(reasoning.get("effort") or "medium"), 0.5)
        budget = int(max_tokens * share)
    return max(budget, MIN_THINKING_BUDGET)


def thinking_config(reasoning: Any, max_tokens: int | None) -> dict[str, Any] | None:
    """OpenRouter's `reasoning` as Gemini's thinkingConfig, or None to leave the model's default."""
    if not isinstance(reasoning, dict):
        return None
    if reasoning.get("enabled") is False:
        return {"thinkingBudget": 0}
    config: dict[str, Any] = {"includeThoughts": not reasoning.get("exclude", False)}
    if reasoning.get("max_tokens"):
        config["thinkingBudget"] = int(reasoning["max_tokens"])
    elif reasoning.get("effort") and max_tokens:
        config["thinkingBudget"] = max(int(max_tokens * EFFORT_SHARE.get(reasoning["effort"], 0.5)), 1024)
    return config


def budget_reasoning(budget: int) -> dict[str, Any]:
    """A thinking budget (Anthropic's `thinking.budget_tokens`, from /messages) as OpenRouter's object."""
    return {"max_tokens": budget}


def reasoning_excluded(req: Request) -> bool:
    reasoning = req.reasoning
    return isinstance(reasoning, dict) and bool(reasoning.get("exclude"))


def strip_reasoning(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """A stream chunk without its reasoning deltas; None when nothing else was in it."""
    choices = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if "reasoning" in delta:
            delta = {k: v for k, v in delta.items() if k != "reasoning"}
            if not delta and not choice.get("finish_reason"):
                continue
            choice = {**choice, "delta": delta}
        choices.append(choice)
    return {**chunk, "choices": choices} if choices else None


class ReasoningStripped(Adapter):
    """An adapter whose provider answers with reasoning the request may exclude (`reasoning.exclude`):
    it is removed from the whole answer and from every stream chunk."""

    async def complete(self, ctx: CallContext, req: Request) -> Completion:
        completion = await super().complete(ctx, req)
        if reasoning_excluded(req):
            for choice in completion.choices:
                choice["message"].pop("reasoning", None)
        return completion

    async def stream(self, ctx: CallContext, req: Request) -> AsyncGenerator[dict[str, Any] | Usage, None]:
        exclude = reasoning_excluded(req)
        async for item in super().stream(ctx, req):
            if exclude and isinstance(item, dict):
                stripped = strip_reasoning(item)
                if stripped is None:
                    continue
                item = stripped
            yield item
