"""The catalog (providers, models, endpoints) and generation records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models
from django.utils import timezone

from switchyard.money import PER_MILLION

PRICE: dict[str, Any] = {"max_digits": 20, "decimal_places": 12, "default": Decimal(0)}


class ApiFormat(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    GEMINI = "gemini", "Gemini"
    SIMULATED = "simulated", "Simulated"


class Provider(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    api_format = models.CharField(max_length=16, choices=ApiFormat.choices)
    base_url = models.CharField(max_length=300)
    api_key_env = models.CharField(max_length=120, blank=True)
    enabled = models.BooleanField(default=True)
    timeout_connect = models.FloatField(default=5)
    timeout_first_byte = models.FloatField(default=60)
    timeout_between_chunks = models.FloatField(default=60)
    timeout_total = models.FloatField(default=600)
    data_policy = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug  # what dropdowns (BYOK, admin) show: "OpenAI", not "openai"


class Model(models.Model):
    slug = models.CharField(max_length=128, unique=True, help_text='Canonical "author/name".')
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    context_length = models.PositiveIntegerField(default=0)
    input_modalities = models.JSONField(default=list)
    output_modalities = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def author(self) -> str:
        return self.slug.split("/", 1)[0]


class Endpoint(models.Model):
    """A model served by a provider; prices are USD per token (per request / per image where named)."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="endpoints")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="endpoints")
    provider_model_id = models.CharField(max_length=200)
    price_prompt = models.DecimalField(**PRICE)
    price_completion = models.DecimalField(**PRICE)
    price_cache_read = models.DecimalField(**PRICE)
    price_cache_write = models.DecimalField(**PRICE)
    price_reasoning = models.DecimalField(
        max_digits=20,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="Defaults to the completion price when empty.",
    )
    price_request = models.DecimalField(**PRICE)
    price_image = models.DecimalField(**PRICE)
    context_length = models.PositiveIntegerField(default=0)
    max_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    quantization = models.CharField(max_length=32, blank=True)
    supported_parameters = models.JSONField(default=list)
    prompt_caching = models.CharField(
        max_length=16,
        blank=True,
        choices=[("explicit", "explicit (cache_control)"), ("implicit", "implicit"), ("none", "none")],
        help_text="Empty: explicit for Anthropic-format endpoints with a cache price, implicit for others "
        "with a cache-read price, else none.",
    )
    data_policy = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    pruned = models.BooleanField(default=False, editable=False, help_text="Disabled by load_catalog --prune.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__slug", "provider__slug"]
        constraints = [
            models.UniqueConstraint(fields=["model", "provider"], name="endpoint_model_provider_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model.slug} @ {self.provider.slug}"

    @property
    def prompt_per_million(self) -> Decimal:
        return (self.price_prompt * PER_MILLION).normalize()

    @property
    def completion_per_million(self) -> Decimal:
        return (self.price_completion * PER_MILLION).normalize()

    @property
    def is_free(self) -> bool:
        return not (self.price_prompt or self.price_completion or self.price_request)


class CatalogState(models.Model):
    """One row whose version bumps on every catalog write, so every process knows to reload."""

    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"catalog v{self.version}"


class GenerationStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    ERROR = "error", "Error"
    CANCELLED = "cancelled", "Cancelled"


class Generation(models.Model):
    id = models.CharField(primary_key=True, max_length=40)
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="generations"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="generations"
    )
    endpoint = models.ForeignKey(Endpoint, null=True, on_delete=models.SET_NULL, related_name="+")
    model = models.CharField(max_length=128)
    provider = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=16, default="chat")
    status = models.CharField(max_length=16, choices=GenerationStatus.choices)
    streamed = models.BooleanField(default=False)
    cancelled = models.BooleanField(default=False)
    finish_reason = models.CharField(max_length=32, blank=True)
    native_finish_reason = models.CharField(max_length=64, blank=True)
    tokens_prompt = models.PositiveIntegerField(default=0)
    tokens_completion = models.PositiveIntegerField(default=0)
    tokens_cached = models.PositiveIntegerField(default=0)
    tokens_cache_write = models.PositiveIntegerField(default=0)
    tokens_reasoning = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost_units = models.BigIntegerField(default=0)
    # What the provider reported beyond the hold: never charged (settlement charges at most the hold),
    # the platform's loss, totalled by the books auditor (docs/billing.md "Holds: the upper bound").
    uncharged_units = models.BigIntegerField(
        default=0, help_text="Cost the provider reported beyond the hold, not charged (picodollars)."
    )
    latency_ms = models.PositiveIntegerField(null=True)
    ttft_ms = models.PositiveIntegerField(null=True)
    generation_time_ms = models.PositiveIntegerField(null=True)
    error = models.TextField(blank=True)
    attempts = models.JSONField(default=list)
    # Served with the organisation's own provider key: cost_units is then only the platform fee.
    is_byok = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["api_key", "-created_at"]),
        ]

    def __str__(self) -> str:
        return self.id


class ProviderKey(models.Model):
    """An organisation's own API key for a provider (BYOK).

    Stored only encrypted (switchyard.crypto, SWITCHYARD_ENCRYPTION_KEYS); after saving, only its last
    four characters are ever shown. Services in routing/services.py write it; the hot path reads it
    through routing/byok.py's cache, never the ORM per request.
    """

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="provider_keys"
    )
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="organization_keys")
    encrypted_key = models.TextField(editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    allow_platform_fallback = models.BooleanField(
        default=True,
        help_text="When this key fails (401, 429, 5xx), retry the provider with the platform's key at list price.",
    )
    created_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "provider"], name="provider_key_org_provider_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider.slug} key {self.masked}"

    @property
    def masked(self) -> str:
        return f"…{self.last4}"
