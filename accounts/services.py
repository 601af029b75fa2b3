"""Writes for users, organisations, memberships and API keys."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.keys import key_cache_invalidate, key_generate, key_hash
from accounts.models import ApiKey, LimitReset, Membership, Organization, Role, User
from billing.money import to_units
from billing.services import MAX_ENTRY_UNITS
from switchyard.errors import BadRequest


def user_get_or_create(
    *, email: str, password: str | None = None, is_staff: bool = False
) -> tuple[User, bool]:
    email = email.strip().lower()
    user = User.objects.filter(email=email).first()
    if user:
        return user, False
    if is_staff:
        return User.objects.create_superuser(email=email, password=password), True
    return User.objects.create_user(email=email, password=password), True


@transaction.atomic
def organization_create(*, slug: str, name: str | None = None, owner: User | None = None) -> Organization:
    slug = slug.strip().lower()
    if slug != slugify(slug) or not slug:
        raise BadRequest(f"Invalid organisation slug {slug!r}: use lowercase letters, digits and hyphens.")
    if Organization.objects.filter(slug=slug).exists():
        raise BadRequest(f"An organisation with slug {slug!r} already exists.")
    org = Organization.objects.create(slug=slug, name=name or slug.replace("-", " ").title())
    if owner is not None:
        Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
    return org


def membership_set(*, organization: Organization, user: User, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        user=user, organization=organization, defaults={"role": role}
    )
    return membership


def _limit_units(limit_usd: Decimal) -> int:
    try:
        units = to_units(limit_usd)
    except ValueError as exc:
        raise BadRequest(f"limit: {exc}")
    if not 0 <= units <= MAX_ENTRY_UNITS:
        raise BadRequest("limit must be between 0 and about 9.2 million USD.")
    return units


def api_key_create(
    *,
    organization: Organization,
    name: str,
    created_by: User | None = None,
    limit_usd: Decimal | None = None,
    limit_reset: str = LimitReset.NONE,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret; the secret is never stored or shown again."""
    if limit_usd is not None and limit_usd < 0:
        raise BadRequest("limit must not be negative.")
    limit_units = _limit_units(limit_usd) if limit_usd is not None else None
    if limit_reset not in LimitReset.values:
        raise BadRequest(f"limit_reset must be one of {', '.join(LimitReset.values)}.")
    secret = key_generate()
    key = ApiKey.objects.create(
        organization=organization,
        created_by=created_by,
        name=name.strip() or "Unnamed key",
        key_hash=key_hash(secret),
        prefix=secret[: len("sk-sy-v1-") + 6],
        limit_units=limit_units,
        limit_reset=limit_reset,
        expires_at=expires_at,
    )
    return key, secret


def _key_changed(key: ApiKey, fields: list[str]) -> ApiKey:
    key.save(update_fields=fields)
    transaction.on_commit(lambda: key_cache_invalidate(key.key_hash))
    return key


def api_key_set_disabled(*, key: ApiKey, disabled: bool) -> ApiKey:
    key.disabled = disabled
    return _key_changed(key, ["disabled"])


def api_key_delete(*, key: ApiKey) -> ApiKey:
    """Soft delete: the row stays so generations and ledger entries keep pointing at it."""
    key.deleted_at = timezone.now()
    key.disabled = True
    return _key_changed(key, ["deleted_at", "disabled"])


def api_key_update(
    *,
    key: ApiKey,
    name: str | None = None,
    limit_usd: Decimal | None = None,
    clear_limit: bool = False,
    limit_reset: str | None = None,
    expires_at: datetime | None = None,
) -> ApiKey:
    fields: list[str] = []
    if name is not None:
        key.name, fields = name, [*fields, "name"]
    if clear_limit:
        key.limit_units, fields = None, [*fields, "limit_units"]
    elif limit_usd is not None:
        key.limit_units, fields = _limit_units(limit_usd), [*fields, "limit_units"]
    if limit_reset is not None:
        key.limit_reset, fields = limit_reset, [*fields, "limit_reset"]
    if expires_at is not None:
        key.expires_at, fields = expires_at, [*fields, "expires_at"]
    if "limit_units" in fields:
        from billing.holds import key_limit_changed

        limit = key.limit_units
        transaction.on_commit(lambda: key_limit_changed(key.pk, limit))
    return _key_changed(key, fields) if fields else key


def organization_keys_invalidate(*, organization: Organization) -> None:
    """Org-level settings ride along in cached key records; drop them all."""
    for digest in ApiKey.objects.filter(organization=organization).values_list("key_hash", flat=True):
        key_cache_invalidate(digest)
