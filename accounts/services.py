"""Writes for users, organisations, memberships and API keys."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts import events
from accounts.audit import audit_record as audit_record  # the audit log's writer, for every app
from accounts.keys import key_cache_invalidate, key_generate, key_hash
from accounts.models import (
    PLAYGROUND_KEY_NAME,
    ApiKey,
    AuditAction,
    Invitation,
    LimitReset,
    Membership,
    Organization,
    Role,
    User,
)
from switchyard.errors import BadRequest, Forbidden
from switchyard.money import MAX_UNITS, to_units


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
    audit_record(action=AuditAction.ORG_CREATED, organization=org, target=org)
    events.organization_created.send(sender=Organization, organization=org)
    if owner is not None:
        member = Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
        audit_record(
            action=AuditAction.MEMBER_ADDED, organization=org, target=member, metadata={"role": Role.OWNER}
        )
    return org


def membership_set(*, organization: Organization, user: User, role: str) -> Membership:
    before = Membership.objects.filter(user=user, organization=organization).values_list("role", flat=True)
    old_role = before.first()
    membership, created = Membership.objects.update_or_create(
        user=user, organization=organization, defaults={"role": role}
    )
    if created or old_role != role:
        audit_record(
            action=AuditAction.MEMBER_ADDED if created else AuditAction.MEMBER_ROLE,
            organization=organization,
            target=membership,
            metadata={"role": role} if created else {"from": old_role, "to": role},
        )
    return membership


def _limit_units(limit_usd: Decimal) -> int:
    try:
        units = to_units(limit_usd)
    except ValueError as exc:
        raise BadRequest(f"limit: {exc}")
    if not 0 <= units <= MAX_UNITS:
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
    if key.name != PLAYGROUND_KEY_NAME:  # the playground's short-lived per-user keys would drown the log
        audit_record(
            action=AuditAction.KEY_CREATED,
            organization=organization,
            actor=created_by,
            target=key,
            metadata={"limit_units": limit_units, "limit_reset": limit_reset, "expires_at": expires_at},
        )
    return key, secret


def _key_changed(key: ApiKey, fields: list[str]) -> ApiKey:
    key.save(update_fields=fields)
    transaction.on_commit(lambda: key_cache_invalidate(key.key_hash))
    return key


def _key_audit(
    action: str,
    key: ApiKey,
    metadata: dict[str, object] | None = None,
    *,
    actor: User | None = None,
    always: bool = False,
) -> None:
    # Playground keys come and go with every playground session; only a revocation by someone else
    # (an owner, or a membership ending) is worth a line in the log.
    if always or key.name != PLAYGROUND_KEY_NAME:
        audit_record(
            action=action, organization=key.organization_id, actor=actor, target=key, metadata=metadata
        )


def api_key_set_disabled(*, key: ApiKey, disabled: bool) -> ApiKey:
    key.disabled = disabled
    _key_audit(AuditAction.KEY_DISABLED if disabled else AuditAction.KEY_ENABLED, key)
    return _key_changed(key, ["disabled"])


def api_key_delete(
    *, key: ApiKey, actor: User | None = None, reason: str = "", audit_always: bool = False
) -> ApiKey:
    """Soft delete: the row stays so generations and ledger entries keep pointing at it.

    `reason` (e.g. "member_removed") goes into the audit event; `audit_always` records the deletion of
    a playground key too (revoked by an owner or with a membership, rather than replaced by its user).
    """
    key.deleted_at = timezone.now()
    key.disabled = True
    metadata: dict[str, object] | None = {"reason": reason} if reason else None
    if key.name == PLAYGROUND_KEY_NAME and metadata is not None:
        metadata["playground"] = True
    _key_audit(AuditAction.KEY_DELETED, key, metadata, actor=actor, always=audit_always)
    return _key_changed(key, ["deleted_at", "disabled"])


def member_keys_revoke(
    *, organization_id: int, user_id: int, actor: User | None = None, reason: str
) -> list[ApiKey]:
    """Revoke every live key a person made in one organisation, playground keys included: access ends
    with the membership. Each revocation is audited; the hot path's caches drop them on commit, so
    they stop working everywhere within SWITCHYARD_KEY_CACHE_SECONDS."""
    keys = list(
        ApiKey.objects.select_for_update().filter(
            organization_id=organization_id, created_by_id=user_id, deleted_at__isnull=True
        )
    )
    for key in keys:
        api_key_delete(key=key, actor=actor, reason=reason, audit_always=True)
    return keys


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
        limit = key.limit_units
        transaction.on_commit(
            lambda: events.api_key_limit_changed.send(sender=ApiKey, key_id=key.pk, limit_units=limit)
        )
    if fields:
        _key_audit(AuditAction.KEY_UPDATED, key, {f: getattr(key, f) for f in fields})
    return _key_changed(key, fields) if fields else key


def organization_keys_invalidate(*, organization: Organization) -> None:
    """Org-level settings ride along in cached key records; drop them all."""
    for digest in ApiKey.objects.filter(organization=organization).values_list("key_hash", flat=True):
        key_cache_invalidate(digest)


# --- Dashboard: organisations, members, invitations, profile, playground key -----------------------

INVITATION_DAYS = 7
PLAYGROUND_KEY_HOURS = 12


def organization_create_for_user(*, name: str, owner: User) -> Organization:
    """Create an organisation named by a person; the slug is derived from the name and made unique."""
    name = name.strip()
    if not name:
        raise BadRequest("Give the organisation a name.")
    if len(name) > 200:
        raise BadRequest("The name is too long (200 characters at most).")
    base = slugify(name)[:56].strip("-") or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return organization_create(slug=slug, name=name, owner=owner)


def organization_rename(*, organization: Organization, name: str) -> Organization:
    name = name.strip()
    if not name:
        raise BadRequest("Give the organisation a name.")
    organization.name = name[:200]
    organization.save(update_fields=["name"])
    return organization


def organization_routing_defaults_set(
    *, organization: Organization, ignore: list[str], data_collection: str
) -> Organization:
    """Replace the org's provider preferences this form manages, keeping any others set elsewhere."""
    if data_collection not in ("allow", "deny"):
        raise BadRequest('data_collection must be "allow" or "deny".')
    defaults = dict(organization.routing_defaults or {})
    if ignore:
        defaults["ignore"] = sorted(set(ignore))
    else:
        defaults.pop("ignore", None)
    if data_collection == "deny":
        defaults["data_collection"] = "deny"
    else:
        defaults.pop("data_collection", None)
    if defaults != (organization.routing_defaults or {}):
        audit_record(
            action=AuditAction.ORG_SETTINGS,
            organization=organization,
            target=organization,
            metadata={"from": organization.routing_defaults or {}, "to": defaults},
        )
    organization.routing_defaults = defaults
    organization.save(update_fields=["routing_defaults"])
    transaction.on_commit(lambda: organization_keys_invalidate(organization=organization))
    return organization


def user_profile_update(*, user: User, name: str) -> User:
    user.name = name.strip()[:150]
    user.save(update_fields=["name"])
    return user


def _owner_count(organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=Role.OWNER).count()


def _check_can_manage_member(actor: Membership, target: Membership | None, new_role: str | None) -> None:

    if actor.role not in (Role.OWNER, Role.ADMIN):
        raise Forbidden("Only owners and admins can manage members.")
    if actor.role != Role.OWNER and (
        new_role == Role.OWNER or (target is not None and target.role == Role.OWNER)
    ):
        raise Forbidden("Only an owner can add, change or remove owners.")


@transaction.atomic
def membership_role_change(*, actor: Membership, target: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise BadRequest(f"role must be one of {', '.join(Role.values)}.")
    _check_can_manage_member(actor, target, role)
    # Lock the organisation so two demotions cannot both see "another owner is left".
    Organization.objects.select_for_update().filter(pk=target.organization_id).first()
    if target.role == Role.OWNER and role != Role.OWNER and _owner_count(target.organization) <= 1:
        raise BadRequest("An organisation needs at least one owner: make someone else an owner first.")
    if target.role != role:
        audit_record(
            action=AuditAction.MEMBER_ROLE,
            organization=target.organization_id,
            actor=actor.user,
            target=target,
            metadata={"from": target.role, "to": role},
        )
    target.role = role
    target.save(update_fields=["role"])
    return target


@transaction.atomic
def membership_remove(*, actor: Membership, target: Membership) -> None:
    _check_can_manage_member(actor, target, None)
    Organization.objects.select_for_update().filter(pk=target.organization_id).first()
    if target.role == Role.OWNER and _owner_count(target.organization) <= 1:
        raise BadRequest("The last owner cannot be removed.")
    _membership_end(target, actor=actor.user, reason="member_removed")


def _membership_end(membership: Membership, *, actor: User, reason: str) -> None:
    revoked = member_keys_revoke(
        organization_id=membership.organization_id, user_id=membership.user_id, actor=actor, reason=reason
    )
    audit_record(
        action=AuditAction.MEMBER_REMOVED,
        organization=membership.organization_id,
        actor=actor,
        target=membership,
        metadata={"role": membership.role, "revoked_keys": len(revoked), "reason": reason},
    )
    membership.delete()


@transaction.atomic
def membership_leave(*, membership: Membership) -> None:
    """A member leaves an organisation (their keys go with them); the last owner cannot."""
    Organization.objects.select_for_update().filter(pk=membership.organization_id).first()
    if membership.role == Role.OWNER and _owner_count(membership.organization) <= 1:
        raise BadRequest(
            "You are the only owner: make someone else an owner before leaving this organisation."
        )
    _membership_end(membership, actor=membership.user, reason="member_left")


def _token_hash(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def invitation_create(*, actor: Membership, email: str, role: str, accept_url: str) -> tuple[Invitation, str]:
    """Invite an email address; `accept_url` has a `{token}` placeholder for the link in the email."""
    import secrets
    from datetime import timedelta

    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise BadRequest("Enter a valid email address.")
    if role not in Role.values:
        raise BadRequest(f"role must be one of {', '.join(Role.values)}.")
    _check_can_manage_member(actor, None, role)
    organization = actor.organization
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise BadRequest(f"{email} is already a member of {organization.name}.")
    now = timezone.now()
    # A new invitation to the same address replaces any pending one.
    Invitation.objects.filter(
        organization=organization, email=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role=role,
        token_hash=_token_hash(token),
        invited_by=actor.user,
        expires_at=now + timedelta(days=INVITATION_DAYS),
    )
    audit_record(
        action=AuditAction.INVITATION_CREATED,
        organization=organization,
        actor=actor.user,
        target=invitation,
        metadata={"email": email, "role": role},
    )
    link = accept_url.format(token=token)
    transaction.on_commit(lambda: _invitation_send(invitation, link))
    return invitation, token


def _invitation_send(invitation: Invitation, link: str) -> None:
    from django.core.mail import send_mail
    from django.template.loader import render_to_string

    context = {"invitation": invitation, "link": link, "days": INVITATION_DAYS}
    subject = render_to_string("emails/invitation_subject.txt", context).strip()
    body = render_to_string("emails/invitation_message.txt", context)
    send_mail(subject, body, None, [invitation.email])


def invitation_revoke(*, actor: Membership, invitation: Invitation) -> Invitation:
    _check_can_manage_member(actor, None, invitation.role)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        action=AuditAction.INVITATION_REVOKED,
        organization=invitation.organization_id,
        actor=actor.user,
        target=invitation,
        metadata={"email": invitation.email, "role": invitation.role},
    )
    return invitation


def invitation_by_token(*, token: str) -> Invitation | None:
    return Invitation.objects.select_related("organization").filter(token_hash=_token_hash(token)).first()


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    invitation = Invitation.objects.select_for_update().filter(token_hash=_token_hash(token)).first()
    if invitation is None or not invitation.is_pending:
        raise BadRequest("This invitation is no longer valid: it was used, revoked or has expired.")
    if invitation.email.lower() != user.email.lower():
        raise BadRequest(
            f"This invitation was sent to {invitation.email}; you are signed in as {user.email}. "
            "Sign in with the invited address to accept it."
        )
    membership, created = Membership.objects.get_or_create(
        user=user, organization=invitation.organization, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        action=AuditAction.INVITATION_ACCEPTED,
        organization=invitation.organization_id,
        actor=user,
        target=invitation,
        metadata={"email": invitation.email, "role": membership.role, "new_member": created},
    )
    return membership


def playground_key_issue(*, organization: Organization, user: User) -> tuple[ApiKey, str]:
    """A fresh short-lived key for the dashboard playground; the previous one of this user is deleted."""
    from datetime import timedelta

    for old in ApiKey.objects.filter(
        organization=organization, created_by=user, name=PLAYGROUND_KEY_NAME, deleted_at__isnull=True
    ):
        api_key_delete(key=old)
    return api_key_create(
        organization=organization,
        name=PLAYGROUND_KEY_NAME,
        created_by=user,
        expires_at=timezone.now() + timedelta(hours=PLAYGROUND_KEY_HOURS),
    )


def api_key_expiry_clear(*, key: ApiKey) -> ApiKey:
    """Make a key never expire (api_key_update only sets an expiry)."""
    key.expires_at = None
    return _key_changed(key, ["expires_at"])
