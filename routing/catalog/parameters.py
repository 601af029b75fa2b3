"""One parameter table: the `supported_parameters` names an endpoint may list, and for each the request
fields it governs. The catalog loader accepts exactly these names, the router's `require_parameters`
checks the fields, the OpenAI-format adapter forwards them, and the Anthropic pass-through drops the
/messages fields of a parameter the endpoint does not list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str  # as in the catalog's supported_parameters (OpenRouter's names)
    fields: tuple[str, ...] = ()  # the internal (OpenAI-style) request fields that ask for it
    forwarded: bool = True  # the OpenAI format sends `fields` as they are (else an adapter maps them)
    anthropic: tuple[str, ...] = ()  # the Anthropic Messages fields it governs (pass-through)


def _own(name: str, *, anthropic: tuple[str, ...] = ()) -> Parameter:
    """A parameter whose request field has its name."""
    return Parameter(name, (name,), anthropic=anthropic)


# In the order the OpenAI-format adapter writes them into an upstream body.
PARAMETERS: tuple[Parameter, ...] = (
    _own("temperature", anthropic=("temperature",)),
    _own("top_p", anthropic=("top_p",)),
    _own("top_k", anthropic=("top_k",)),
    _own("min_p"),
    _own("frequency_penalty"),
    _own("presence_penalty"),
    _own("repetition_penalty"),
    _own("stop", anthropic=("stop_sequences",)),
    _own("seed"),
    _own("tools", anthropic=("tools",)),
    _own("tool_choice", anthropic=("tool_choice",)),
    _own("parallel_tool_calls"),
    _own("response_format"),
    _own("logprobs"),
    _own("top_logprobs"),
    _own("logit_bias"),
    # Each format has its own knob for it (routing/adapters/reasoning.py).
    Parameter("reasoning", ("reasoning",), forwarded=False, anthropic=("thinking",)),
    # Listed by catalogs; nothing in a request asks for them by these names.
    Parameter("top_a"),
    Parameter("max_tokens"),
    Parameter("structured_outputs"),
    Parameter("include_reasoning"),
)

# What the catalog loader accepts in supported_parameters.
KNOWN_PARAMETERS = frozenset(p.name for p in PARAMETERS)
# Parameter name -> the request fields the OpenAI format forwards for it.
FORWARDED_FIELDS: dict[str, tuple[str, ...]] = {
    p.name: p.fields for p in PARAMETERS if p.forwarded and p.fields
}
# Request field -> the parameter it asks for (provider.require_parameters).
REQUESTED_BY_FIELD: dict[str, str] = {f: p.name for p in PARAMETERS for f in p.fields}
# Anthropic Messages field -> the parameter an endpoint must list for it to be sent (pass-through).
ANTHROPIC_PARAMETER: dict[str, str] = {f: p.name for p in PARAMETERS for f in p.anthropic}
