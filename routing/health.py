"""Per-endpoint health numbers (filled in by the router; read by the endpoints API)."""

from __future__ import annotations

from typing import Any


def stats_sync(endpoint_ids: list[int]) -> dict[int, dict[str, Any]]:
    return {}
