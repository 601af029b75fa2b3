"""Everything under /api/ answers errors as JSON in one shape: unknown paths, wrong methods, crashes."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.crash_urls import SECRET_DETAIL


def _assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    text = response.content.decode()
    assert "<html" not in text.lower() and "Traceback" not in text
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "delete"])
@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/api/v1/models/a/b/c/d", "/api/nothing-here", "/api/v2/models"]
)
def test_unknown_api_path_is_404_json(method, path):
    body = _assert_error(getattr(Client(), method)(path), 404)
    assert path in body["error"]["message"]


@pytest.mark.django_db
def test_unknown_path_outside_api_is_not_forced_to_json():
    response = Client().get("/definitely-not-here")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,path",
    [
        ("delete", "/api/v1/models"),
        ("post", "/api/v1/models"),
        ("put", "/api/v1/models/acme/x/endpoints"),
        ("post", "/api/v1/openapi.json"),
    ],
)
def test_wrong_method_is_405_json(method, path):
    body = _assert_error(getattr(APIClient(), method)(path), 405)
    assert method.upper() in body["error"]["message"]


@pytest.mark.django_db
def test_wrong_method_on_authenticated_route_with_a_key_is_405(org_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {org_key[1]}")
    response = client.delete("/api/v1/key")
    _assert_error(response, 405)
    assert "GET" in response["Allow"]


@pytest.mark.django_db
def test_openapi_document_lists_the_paths():
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"]
    paths = set(doc["paths"])
    for expected in (
        "/api/v1/models",
        "/api/v1/models/{author}/{slug}/endpoints",
        "/api/v1/generation",
        "/api/v1/key",
        "/api/v1/credits",
    ):
        assert expected in paths, sorted(paths)
    assert "get" in doc["paths"]["/api/v1/models"]


@pytest.fixture
def crash_urls(settings):
    settings.ROOT_URLCONF = "tests.crash_urls"
    settings.DEBUG = False


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/test-crash-drf", "/api/v1/test-crash-plain"])
def test_unexpected_exception_is_500_json_without_details(crash_urls, path, caplog):
    # The default client re-raises unhandled view exceptions: getting a response proves they were handled.
    response = Client().get(path)
    body = _assert_error(response, 500)
    assert SECRET_DETAIL not in response.content.decode()
    assert body["error"]["message"] == "Internal server error."
    # The details go to the log instead.
    assert SECRET_DETAIL in caplog.text


@pytest.mark.django_db
def test_real_routes_still_work_under_the_test_urlconf(crash_urls):
    assert Client().get("/api/v1/models").status_code == 200
    _assert_error(Client().get("/api/v1/nope"), 404)


@pytest.mark.django_db
def test_unknown_api_path_is_404_json_even_before_collectstatic(settings, tmp_path):
    """Production serves static files from a manifest; without `collectstatic` the HTML 404 page cannot
    render, and an unknown API path must still be a JSON 404, not a 500."""
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path  # no manifest in it
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    body = _assert_error(Client().get("/api/v1/keys"), 404)
    assert "/api/v1/keys" in body["error"]["message"]
