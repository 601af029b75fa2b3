"""Encryption of stored secrets (BYOK provider keys) with MultiFernet over SWITCHYARD_ENCRYPTION_KEYS.

The first key encrypts; every key decrypts, so a new key is rolled out by putting it first, running
`manage.py rotate_encryption` (re-encrypts every stored secret with it) and then dropping the old one.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key (never carries the secret)."""


@lru_cache(maxsize=4)
def _multi(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("SWITCHYARD_ENCRYPTION_KEYS is empty: at least one Fernet key is needed.")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip()))
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"SWITCHYARD_ENCRYPTION_KEYS: entry {position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).'
            ) from None
    return MultiFernet(fernets)


def fernet() -> MultiFernet:
    """The MultiFernet for the current settings (cached per distinct key list)."""
    return _multi(tuple(settings.SWITCHYARD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("no configured encryption key can decrypt this value") from None


def reencrypt(token: str) -> str:
    """The same secret encrypted with the first (current) key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("no configured encryption key can decrypt this value") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
