"""Untrusted text made safe to store: control characters found or replaced, lengths bounded.

PostgreSQL refuses a NUL anywhere in a text column (and a `\\u0000` escape in jsonb), and a value
longer than its varchar column fails the whole INSERT, so one bad string in a batch of usage rows
used to fail the batch. The front door refuses such ids (`has_control`); the usage writer cleans
whatever still arrives (`clean_text`, `clean_json`) so the money lands.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators, and lone surrogates (which
# cannot be encoded as UTF-8 at all).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# The same, but keeping tab, newline and carriage return: fine inside an error message.
CONTROL_IN_PROSE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
REPLACEMENT = "\ufffd"
JSON_DEPTH = 6
JSON_ITEMS = 200


def has_control(value: str) -> bool:
    return CONTROL.search(value) is not None


def clean_text(value: Any, limit: int, *, prose: bool = False) -> str:
    """`value` as a string of at most `limit` characters without control characters (each replaced by
    U+FFFD, so the record still shows that something was there). None is the empty string."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    pattern = CONTROL_IN_PROSE if prose else CONTROL
    if pattern.search(text):
        text = pattern.sub(REPLACEMENT, text)
    return text[:limit]


def clean_json(value: Any, *, limit: int = 4000, depth: int = 0) -> Any:
    """A JSON value with every string cleaned (prose rules) and bounded, and containers cut to
    JSON_ITEMS entries and JSON_DEPTH levels; numbers, booleans and null pass unchanged."""
    if isinstance(value, str):
        return clean_text(value, limit, prose=True)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth >= JSON_DEPTH:
        return clean_text(value, limit, prose=True)
    if isinstance(value, dict):
        return {
            clean_text(k, 200): clean_json(v, limit=limit, depth=depth + 1)
            for k, v in list(value.items())[:JSON_ITEMS]
        }
    if isinstance(value, list | tuple):
        return [clean_json(v, limit=limit, depth=depth + 1) for v in list(value)[:JSON_ITEMS]]
    return clean_text(value, limit, prose=True)
