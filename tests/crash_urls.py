"""Test-only URLconf: the real routes plus views that crash, to prove a 500 under /api/ stays JSON."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from switchyard.urls import urlpatterns as real_urlpatterns

SECRET_DETAIL = "s3cr3t-internal-detail"


class CrashingApi(APIView):
    permission_classes = [AllowAny]

    def get(self, request):  # type: ignore[no-untyped-def]
        raise RuntimeError(SECRET_DETAIL)


def crashing_view(request: HttpRequest) -> HttpResponse:
    raise KeyError(SECRET_DETAIL)


urlpatterns = [
    path("api/v1/test-crash-drf", CrashingApi.as_view()),
    path("api/v1/test-crash-plain", crashing_view),
    path("outside/test-crash-plain", crashing_view),
    *real_urlpatterns,
]
