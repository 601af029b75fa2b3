"""The audit log's one writer, `audit_record`, and who is acting (set per request by the middleware).

Services call `audit_record` after a security-relevant change; the actor and IP address come from the
current request (`AuditContextMiddleware`) unless given. Never pass a secret: keys are named by their
prefix or last four characters, and metadata strings are scrubbed of anything that looks like a key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

from accounts.models import AuditAction, AuditEvent, Organization, User
from switchyard.logging import redact

logger = logging.getLogger("switchyard.audit")


@dataclass(frozen=True, slots=True)
class AuditContext:
    request: HttpRequest

    @property
    def user(self) -> User | None:
        # Read when an event is recorded, not per request: most requests record nothing.
        user = getattr(self.request, "user", None)
        return user if isinstance(user, User) and user.is_authenticated else None

    @property
    def ip_address(self) -> str | None:
        return client_ip(self.request)


audit_context: ContextVar[AuditContext | None] = ContextVar("audit_context", default=None)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)[:500]  # anything shaped like a credential never enters the log
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _clean(str(value))


def audit_record(
    *,
    action: str,
    organization: Organization | int | None = None,
    actor: User | None = None,
    target: Any = None,
    target_label: str = "",
    metadata: dict[str, Any] | None = None,
    ip_address: str | None = None,
) -> AuditEvent:
    """Append one event. `target` is any model instance (its type, pk and str are kept)."""
    if action not in AuditAction.values:
        raise ValueError(f"unknown audit action {action!r}")
    context = audit_context.get()
    if actor is None and context is not None:
        actor = context.user
    if ip_address is None and context is not None:
        ip_address = context.ip_address
    org_id = organization.pk if isinstance(organization, Organization) else organization
    event = AuditEvent.objects.create(
        organization_id=org_id,
        actor=actor,
        actor_email=actor.email if actor is not None else "",
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=_clean(target_label or (str(target) if target is not None else ""))[:200],
        ip_address=ip_address,
        metadata=_clean(metadata or {}),
    )
    logger.info(
        "audit %s",
        action,
        extra={"audit_action": action, "organization_id": org_id, "actor": event.actor_email or None},
    )
    return event


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR (the proxy's address behind a load balancer: its logs hold the rest)."""
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    """Makes the signed-in user and their address the actor of every audit event a request records."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = audit_context.set(AuditContext(request=request))
        try:
            return self.get_response(request)
        finally:
            audit_context.reset(token)
