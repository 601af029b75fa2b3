"""Signal receivers: staff logins go to the audit log (Django admin or the dashboard alike), and a
membership deleted by any path (a user deleted in admin cascades to theirs) takes its keys with it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.audit import audit_record, client_ip
from accounts.models import AuditAction, Membership, User
from accounts.services import member_keys_revoke


@receiver(user_logged_in, dispatch_uid="accounts.audit_staff_login")
def audit_staff_login(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    if not user.is_staff:
        return
    audit_record(
        action=AuditAction.STAFF_LOGIN,
        actor=user,
        target=user,
        ip_address=client_ip(request) if request is not None else None,
        metadata={"path": request.path if request is not None else "", "superuser": user.is_superuser},
    )


@receiver(pre_delete, sender=Membership, dispatch_uid="accounts.membership_keys_revoke")
def membership_deleted(sender: Any, instance: Membership, **kwargs: Any) -> None:
    # The dashboard's remove/leave revoke first (with their own audit reason): this is then a no-op.
    # Sent inside the deletion's transaction, before created_by is nulled on the user's keys.
    member_keys_revoke(
        organization_id=instance.organization_id, user_id=instance.user_id, reason="membership_deleted"
    )
