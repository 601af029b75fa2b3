"""Users (email login), organisations, memberships and API keys."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: object) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    username = None  # type: ignore[assignment,misc]
    email = models.EmailField("email address", unique=True)
    name = models.CharField(max_length=150, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = []  # type: ignore[var-annotated]

    objects = UserManager()  # type: ignore[assignment,misc]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    # Cached balance in picodollars; the ledger is the truth and the auditor checks this column.
    balance_units = models.BigIntegerField(default=0, editable=False)
    # Bumped with every ledger entry, so a cached copy (Redis) only ever moves forward.
    ledger_version = models.BigIntegerField(default=0, editable=False)
    # Org-wide routing defaults merged into every request's `provider` preferences.
    routing_defaults = models.JSONField(default=dict, blank=True)
    flagged = models.BooleanField(default=False, help_text="Set on a payment dispute; blocks purchases.")
    # Rate limits across all the organisation's keys; empty: the deployment default, 0: no limit.
    rate_limit_rpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per minute, all keys together. Empty: SWITCHYARD_RATE_LIMIT_ORG_RPM; 0: no limit.",
    )
    rate_limit_tpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens per minute, all keys together. Empty: SWITCHYARD_RATE_LIMIT_ORG_TPM; 0: no limit.",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Membership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class LimitReset(models.TextChoices):
    NONE = "none", "Never"
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly"


class ApiKey(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=120)
    # SHA-256 of the whole key: keys carry 256+ random bits, so a fast hash is safe and keeps lookup O(1).
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=24, editable=False, help_text="First characters, for display only.")
    limit_units = models.BigIntegerField(null=True, blank=True, help_text="Credit limit in picodollars.")
    limit_reset = models.CharField(max_length=8, choices=LimitReset.choices, default=LimitReset.NONE)
    rate_limit_rpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per minute. Empty: SWITCHYARD_RATE_LIMIT_KEY_RPM; 0: no limit.",
    )
    rate_limit_tpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens per minute. Empty: SWITCHYARD_RATE_LIMIT_KEY_TPM; 0: no limit.",
    )
    disabled = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now: object = None) -> bool:
        moment = now or timezone.now()
        if self.disabled or self.deleted_at is not None:
            return False
        return not (self.expires_at is not None and self.expires_at <= moment)  # type: ignore[operator]


class Invitation(models.Model):
    """An emailed invitation to join an organisation; the link's token is stored only as a SHA-256."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return f"{self.email} → {self.organization} ({self.role})"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


# The dashboard playground's own short-lived key per user and organisation; hidden from key lists.
PLAYGROUND_KEY_NAME = "Playground"
MANAGER_ROLES = (Role.OWNER, Role.ADMIN)


class AuditAction(models.TextChoices):
    """Security-relevant actions (README "Security"); the values are stable, the labels are for people."""

    ORG_CREATED = "organization.created", "Organisation created"
    ORG_SETTINGS = "organization.settings_changed", "Routing settings changed"
    KEY_CREATED = "api_key.created", "API key created"
    KEY_UPDATED = "api_key.updated", "API key changed"
    KEY_DISABLED = "api_key.disabled", "API key disabled"
    KEY_ENABLED = "api_key.enabled", "API key enabled"
    KEY_DELETED = "api_key.deleted", "API key revoked"
    MEMBER_ADDED = "member.added", "Member added"
    MEMBER_ROLE = "member.role_changed", "Member role changed"
    MEMBER_REMOVED = "member.removed", "Member removed"
    INVITATION_CREATED = "invitation.created", "Invitation sent"
    INVITATION_REVOKED = "invitation.revoked", "Invitation revoked"
    INVITATION_ACCEPTED = "invitation.accepted", "Invitation accepted"
    CREDITS_GRANTED = "credits.granted", "Credits granted or adjusted"
    PROVIDER_KEY_SAVED = "provider_key.saved", "Provider key added or replaced"
    PROVIDER_KEY_UPDATED = "provider_key.updated", "Provider key settings changed"
    PROVIDER_KEY_DELETED = "provider_key.deleted", "Provider key deleted"
    STAFF_LOGIN = "staff.login", "Staff login"


class AuditEvent(models.Model):
    """One security-relevant action: who did what to which object, when and from where. Append-only;
    written by `accounts.audit.audit_record`, never holding a secret (keys appear by prefix or last four)."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # SET_NULL, and the emails/labels are copied, so the trail outlives deleted users and organisations.
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_email = models.CharField(max_length=254, blank=True, help_text="Empty: the system or a command.")
    action = models.CharField(max_length=40, choices=AuditAction.choices)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["action", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor_email or 'system'}"
