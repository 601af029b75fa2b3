"""Whether Redis keeps what it is given: its persistence, checked at start-up and by /readyz, and the
epoch key that shows when it lost its data anyway.

Settled usage waits in the Redis usage stream until a Celery worker writes it to the ledger (about a
second). A Redis that restarts without its data loses those events: requests answered and never
charged (docs/failure-policy.md "Redis that loses its data"). So full mode requires Redis to keep an
append-only file (`appendonly yes`), unless SWITCHYARD_REDIS_ALLOW_VOLATILE accepts the risk.

The epoch key `sy:epoch` is set once, by the first process that finds it missing, to a value never
used before. A process that saw one epoch and later finds another (or none) knows Redis lost its data
in between: it logs an error, counts it (metrics, /readyz), and the books auditor records a finding
by comparing with the epochs it stored in the database.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from switchyard.shared import setting

logger = logging.getLogger("switchyard.durability")

EPOCH_KEY = "sy:epoch"
PERSISTENCE_RECHECK_SECONDS = 60.0


@dataclass
class _State:
    epoch: str | None = None  # the epoch this process last saw
    losses: int = 0  # epochs this process saw replaced
    lost_at: float | None = None  # unix time this process last saw a loss
    persistence: str | None = None  # "aof (appendfsync everysec)", "none", "unknown: ..."
    persistence_at: float = field(default=0.0)


_state = _State()


def new_epoch() -> str:
    return f"{int(time.time())}-{secrets.token_hex(8)}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def epoch_seen(current: str | None) -> str:
    """Record the epoch Redis holds now (after setting one where it was missing); returns it."""
    assert current is not None
    if _state.epoch is not None and current != _state.epoch:
        _state.losses += 1
        _state.lost_at = time.time()
        logger.error(
            "Redis lost its data: epoch %s became %s; usage settled before the loss and not yet drained "
            "is gone, the hold path reloads balances from the database (docs/failure-policy.md)",
            _state.epoch,
            current,
        )
    _state.epoch = current
    return current


def epoch_check_sync(client: Any) -> str:
    """The current epoch (set when missing) through a redis-py client; records a change."""
    client.set(EPOCH_KEY, new_epoch(), nx=True)
    return epoch_seen(_text(client.get(EPOCH_KEY)))


async def epoch_check(client: Any) -> str:
    await client.set(EPOCH_KEY, new_epoch(), nx=True)
    return epoch_seen(_text(await client.get(EPOCH_KEY)))


def _describe(info: dict[str, Any], fsync: str | None) -> str:
    if int(info.get("aof_enabled", 0)) == 1:
        return f"aof (appendfsync {fsync or 'unknown'})"
    return "none"


def _fsync_policy(config: dict[Any, Any]) -> str | None:
    for key, value in config.items():
        if _text(key) == "appendfsync":
            return _text(value)
    return None


async def persistence(client: Any, *, fresh: bool = False) -> str:
    """What Redis does to keep its data, re-read at most once a minute."""
    now = time.monotonic()
    if (
        not fresh
        and _state.persistence is not None
        and now - _state.persistence_at < PERSISTENCE_RECHECK_SECONDS
    ):
        return _state.persistence
    info = await client.info("persistence")
    try:
        fsync = _fsync_policy(await client.config_get("appendfsync"))
    except Exception:  # managed Redis services often refuse CONFIG
        fsync = None
    _state.persistence, _state.persistence_at = _describe(info, fsync), now
    return _state.persistence


def volatile_accepted() -> bool:
    return bool(setting("SWITCHYARD_REDIS_ALLOW_VOLATILE"))


def persistence_problem(described: str) -> str | None:
    """Why this Redis may not be used for usage events, or None."""
    if described.startswith("aof") or volatile_accepted():
        return None
    return (
        "Redis keeps no append-only file (appendonly no): usage settled in the last second before a "
        "Redis restart would be lost. Start Redis with --appendonly yes, or set "
        "SWITCHYARD_REDIS_ALLOW_VOLATILE=1 to accept that risk (docs/failure-policy.md)."
    )


async def check(client: Any) -> dict[str, Any]:
    """/readyz's view: {"ok": bool, "persistence": ..., "epoch": ..., "losses": n, "lost_at": ts}."""
    described = await persistence(client)
    problem = persistence_problem(described)
    epoch = await epoch_check(client)
    return {
        "ok": problem is None,
        "persistence": described
        + (
            " (risk accepted: SWITCHYARD_REDIS_ALLOW_VOLATILE)" if described == "none" and not problem else ""
        ),
        "problem": problem,
        "epoch": epoch,
        "losses_seen": _state.losses,
        "last_loss_at": _state.lost_at,
    }


def losses_seen() -> int:
    return _state.losses


def persistent() -> bool | None:
    described = _state.persistence
    return None if described is None else described.startswith("aof")
