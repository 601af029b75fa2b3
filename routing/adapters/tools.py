"""One tool mapping between OpenAI's function tools and Anthropic's tool_use, both ways: calls in
answers and history, tool definitions and tool_choice. The Anthropic adapter and the /messages front
door both translate through here."""

from __future__ import annotations

import json
from typing import Any

import orjson


def tool_input(arguments: Any) -> dict[str, Any]:
    """A function call's JSON `arguments` string as a tool_use `input` object (never anything else)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def call_from_tool_use(block: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic tool_use block as an OpenAI tool call."""
    return {
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()},
    }


def tool_use_from_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call as an Anthropic tool_use block."""
    fn = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id") or "",
        "name": fn.get("name", ""),
        "input": tool_input(fn.get("arguments")),
    }


def tool_from_function(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool as an Anthropic tool definition (cache_control kept)."""
    fn = tool["function"]
    entry: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        entry["description"] = fn["description"]
    if tool.get("cache_control"):
        entry["cache_control"] = tool["cache_control"]
    return entry


def function_from_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic (custom) tool definition as an OpenAI function tool (cache_control kept)."""
    fn: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        fn["description"] = tool["description"]
    entry: dict[str, Any] = {"type": "function", "function": fn}
    if tool.get("cache_control"):
        entry["cache_control"] = tool["cache_control"]
    return entry


def tool_choice_to_anthropic(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI's tool_choice and parallel_tool_calls as Anthropic's tool_choice (None: leave it out)."""
    if choice is None and parallel is None:
        return None
    if isinstance(choice, dict):
        out: dict[str, Any] = {"type": "tool", "name": choice["function"]["name"]}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    else:
        out = {"type": "auto"}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


# Anthropic's tool_choice types as OpenAI's string choices (type "tool" names a function instead).
CHOICE_FROM_ANTHROPIC = {"auto": "auto", "any": "required", "none": "none"}


def tool_choice_from_anthropic(choice: dict[str, Any]) -> tuple[Any, bool | None]:
    """An Anthropic tool_choice (already checked) as OpenAI's (tool_choice, parallel_tool_calls)."""
    kind = choice.get("type")
    mapped: Any = CHOICE_FROM_ANTHROPIC.get(str(kind))
    if kind == "tool":
        mapped = {"type": "function", "function": {"name": choice["name"]}}
    parallel = False if choice.get("disable_parallel_tool_use") else None
    return mapped, parallel
