"""The real URL configuration plus one view that crashes, so a browser test can see the 500 page."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from switchyard.urls import handler404
from switchyard.urls import urlpatterns as real_urlpatterns


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a deliberate crash for the 500 page test")


urlpatterns = [path("test-crash", crash), *real_urlpatterns]
__all__ = ["handler404", "urlpatterns"]
