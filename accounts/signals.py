"""Signal receivers: staff logins go to the audit log (Django admin or the dashboard alike)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.audit import audit_record, client_ip
from accounts.models import AuditAction, User


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
