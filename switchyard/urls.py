"""URL routes: the DRF API under /api/v1 (the completion hot path is served in asgi.py), admin, docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView

from accounts.apis import KeyGetApi
from billing.apis import CreditsGetApi, StripeWebhookApi
from routing.apis import GenerationGetApi, ModelEndpointsApi, ModelsListApi

api_v1 = [
    path("api/v1/models", ModelsListApi.as_view(), name="api-models"),
    path(
        "api/v1/models/<str:author>/<str:slug>/endpoints",
        ModelEndpointsApi.as_view(),
        name="api-model-endpoints",
    ),
    path("api/v1/generation", GenerationGetApi.as_view(), name="api-generation"),
    path("api/v1/key", KeyGetApi.as_view(), name="api-key"),
    path("api/v1/credits", CreditsGetApi.as_view(), name="api-credits"),
    path("api/v1/stripe/webhook", StripeWebhookApi.as_view(), name="api-stripe-webhook"),
    path(
        "api/v1/openapi.json",
        SpectacularJSONAPIView.as_view(permission_classes=[], authentication_classes=[]),
        name="api-schema",
    ),
]

urlpatterns = [
    *api_v1,
    path(
        "api/docs/",
        SpectacularRedocView.as_view(url_name="api-schema", permission_classes=[], authentication_classes=[]),
        name="api-docs",
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("", include("switchyard.urls_dashboard")),
]

handler404 = "switchyard.errors.not_found"
