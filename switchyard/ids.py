"""Unguessable ids for the hot path (generations, holds) without a getrandom syscall per id.

The bytes still come from the OS's CSPRNG (`os.urandom`), read 4 KiB at a time and handed out in
slices; a slice is never handed out twice. A forked child starts with a fresh buffer (`os.fork` hook),
so two processes never share bytes.
"""

from __future__ import annotations

import base64
import os

_POOL_BYTES = 4096
_pool = b""
_at = 0


def random_bytes(n: int) -> bytes:
    global _pool, _at
    if _at + n > len(_pool):
        _pool, _at = os.urandom(_POOL_BYTES), 0
    out = _pool[_at : _at + n]
    _at += n
    return out


def token_urlsafe(n: int) -> str:
    """Like secrets.token_urlsafe(n): n random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(random_bytes(n)).rstrip(b"=").decode("ascii")


def token_hex(n: int) -> str:
    return random_bytes(n).hex()


def _after_fork() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_after_fork)
