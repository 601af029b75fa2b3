"""`load_catalog`: idempotent upserts, exact prices, atomic failures that name the bad field, --prune."""

from __future__ import annotations

import copy
from decimal import Decimal
from io import StringIO
from pathlib import Path

import orjson
import pytest
import yaml
from django.core.management import CommandError, call_command

from routing.models import CatalogState, Endpoint, Model, Provider
from tests.conftest import DEFAULT_CATALOG

BASE: dict = {
    "providers": [
        {
            "slug": "alpha",
            "name": "Alpha Cloud",
            "api_format": "openai",
            "base_url": "https://alpha.example/v1",
            "api_key_env": "ALPHA_API_KEY",
            "timeouts": {"connect": 3, "total": 120},
        },
        {"slug": "beta", "name": "Beta AI", "api_format": "anthropic", "base_url": "https://beta.example"},
    ],
    "models": [
        {
            "slug": "acme/small",
            "name": "Acme: Small",
            "context_length": 128000,
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "endpoints": [
                {
                    "provider": "alpha",
                    "provider_model_id": "small-v1",
                    "pricing": {
                        "prompt": "0.15",
                        "completion": "0.60",
                        "cache_read": "0.075",
                        "request": "0.001",
                    },
                    "context_length": 128000,
                    "max_completion_tokens": 16384,
                    "supported_parameters": ["temperature", "max_tokens", "tools"],
                },
                {
                    "provider": "beta",
                    "provider_model_id": "acme-small",
                    "pricing": {"prompt": "0.20", "completion": "0.80"},
                    "quantization": "fp8",
                },
            ],
        },
        {
            "slug": "acme/large",
            "name": "Acme: Large",
            "context_length": 200000,
            "endpoints": [
                {
                    "provider": "beta",
                    "provider_model_id": "acme-large",
                    "pricing": {"prompt": "3", "completion": "15"},
                },
            ],
        },
    ],
}


def _write(tmp_path: Path, doc: object, name: str = "catalog.yaml") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def _load(*paths: str, prune: bool = False) -> str:
    out = StringIO()
    call_command("load_catalog", *paths, *(["--prune"] if prune else []), stdout=out)
    return out.getvalue()


def _state() -> tuple:
    """Everything the catalog tables hold, to prove a failed load wrote nothing."""
    return (
        sorted(Provider.objects.values_list()),
        sorted(Model.objects.values_list()),
        sorted(Endpoint.objects.values_list()),
        sorted(CatalogState.objects.values_list()),
    )


def _endpoint(model: str, provider: str) -> Endpoint:
    return Endpoint.objects.get(model__slug=model, provider__slug=provider)


# --- happy path -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_load_creates_providers_models_and_endpoints_with_exact_prices(tmp_path):
    _load(_write(tmp_path, BASE))
    assert set(Provider.objects.values_list("slug", flat=True)) == {"alpha", "beta"}
    assert set(Model.objects.values_list("slug", flat=True)) == {"acme/small", "acme/large"}
    assert Endpoint.objects.count() == 3

    ep = _endpoint("acme/small", "alpha")
    assert ep.price_prompt == Decimal("0.00000015")
    assert ep.price_completion == Decimal("0.0000006")
    assert ep.price_cache_read == Decimal("0.000000075")
    assert ep.price_request == Decimal("0.001")  # per request, not per million
    assert ep.price_reasoning is None
    assert isinstance(ep.price_prompt, Decimal)
    assert ep.prompt_per_million == Decimal("0.15")
    assert ep.max_completion_tokens == 16384
    assert ep.supported_parameters == ["temperature", "max_tokens", "tools"]
    assert _endpoint("acme/small", "beta").quantization == "fp8"
    assert _endpoint("acme/large", "beta").price_completion == Decimal("0.000015")

    alpha = Provider.objects.get(slug="alpha")
    assert alpha.timeout_connect == 3 and alpha.timeout_total == 120
    assert alpha.timeout_first_byte == 60  # default
    assert alpha.api_key_env == "ALPHA_API_KEY"
    assert Model.objects.get(slug="acme/small").input_modalities == ["text", "image"]


@pytest.mark.django_db
def test_prompt_caching_is_derived_unless_the_file_says(tmp_path):
    """Default: explicit for Anthropic-format endpoints with a cache price, implicit for others with a
    cache-read price, none otherwise; an endpoint's `prompt_caching` overrides it, and the OpenAI
    adapter then sends `cache_control` on."""
    from routing.adapters.base import CallContext
    from routing.adapters.openai import OpenAIAdapter
    from routing.catalog.snapshot import build_snapshot
    from routing.gateway.validate import validate_completion

    doc = copy.deepcopy(BASE)
    doc["models"][1]["endpoints"][0]["pricing"]["cache_write"] = "3.75"
    _load(_write(tmp_path, doc))

    def caching() -> dict[tuple[str, str], str]:
        models = build_snapshot().models
        return {(m.slug, e.provider_slug): e.prompt_caching for m in models.values() for e in m.endpoints}

    assert caching() == {
        ("acme/small", "alpha"): "implicit",
        ("acme/small", "beta"): "none",
        ("acme/large", "beta"): "explicit",
    }
    assert _endpoint("acme/small", "alpha").prompt_caching == ""
    doc["models"][0]["endpoints"][0]["prompt_caching"] = "explicit"
    doc["models"][1]["endpoints"][0]["prompt_caching"] = "none"
    _load(_write(tmp_path, doc))
    assert caching()[("acme/small", "alpha")] == "explicit"
    assert caching()[("acme/large", "beta")] == "none"

    part = {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}
    req = validate_completion(
        {"model": "acme/small", "messages": [{"role": "user", "content": [part]}]}, kind="chat"
    )
    for ep in build_snapshot().models["acme/small"].endpoints:
        if ep.provider_slug == "alpha":
            ctx = CallContext(endpoint=ep, api_key="k", started=0.0, deadline=1.0)
            _, _, body = OpenAIAdapter().build_request(ctx, req, stream=False)
            assert orjson.loads(body)["messages"][0]["content"] == [part]


@pytest.mark.django_db
def test_second_load_is_idempotent(tmp_path):
    path = _write(tmp_path, BASE)
    first = _load(path)
    before = (
        sorted(Provider.objects.values_list("pk", "slug", "name", "api_format", "base_url")),
        sorted(Model.objects.values_list("pk", "slug", "name", "context_length")),
        sorted(
            Endpoint.objects.values_list(
                "pk",
                "model_id",
                "provider_id",
                "price_prompt",
                "price_completion",
                "price_cache_read",
                "price_request",
                "enabled",
            )
        ),
    )
    second = _load(path)
    after = (
        sorted(Provider.objects.values_list("pk", "slug", "name", "api_format", "base_url")),
        sorted(Model.objects.values_list("pk", "slug", "name", "context_length")),
        sorted(
            Endpoint.objects.values_list(
                "pk",
                "model_id",
                "provider_id",
                "price_prompt",
                "price_completion",
                "price_cache_read",
                "price_request",
                "enabled",
            )
        ),
    )
    assert after == before
    assert (Provider.objects.count(), Model.objects.count(), Endpoint.objects.count()) == (2, 2, 3)
    assert _endpoint("acme/small", "alpha").price_prompt == Decimal("0.00000015")
    assert "7 created, 0 updated" in first
    assert "0 created, 7 updated" in second


@pytest.mark.django_db
def test_reload_with_changed_price_updates_in_place(tmp_path):
    _load(_write(tmp_path, BASE))
    pk = _endpoint("acme/small", "alpha").pk
    doc = copy.deepcopy(BASE)
    doc["models"][0]["endpoints"][0]["pricing"]["prompt"] = "0.125"
    _load(_write(tmp_path, doc))
    ep = _endpoint("acme/small", "alpha")
    assert ep.pk == pk
    assert ep.price_prompt == Decimal("0.000000125")
    assert Endpoint.objects.count() == 3


@pytest.mark.django_db
def test_models_may_use_providers_from_another_file_or_the_database(tmp_path):
    providers = {"providers": BASE["providers"]}
    models = {"models": BASE["models"]}
    _load(_write(tmp_path, providers, "providers.yaml"), _write(tmp_path, models, "models.yaml"))
    assert Endpoint.objects.count() == 3
    # Later, a models-only file can refer to providers already in the database.
    extra = {
        "models": [
            {
                "slug": "acme/tiny",
                "name": "Tiny",
                "context_length": 4096,
                "endpoints": [
                    {
                        "provider": "alpha",
                        "provider_model_id": "tiny",
                        "pricing": {"prompt": "0", "completion": "0"},
                    }
                ],
            }
        ]
    }
    _load(_write(tmp_path, extra, "extra.yaml"))
    assert _endpoint("acme/tiny", "alpha").is_free


@pytest.mark.django_db
def test_summary_line_is_printed_last(tmp_path):
    out = _load(_write(tmp_path, BASE))
    last = out.strip().splitlines()[-1]
    assert last.startswith("Loaded 1 file(s)")
    assert "2 providers" in last and "2 models" in last and "3 endpoints" in last


# --- bad files change nothing and name file, entry and field ---------------------------------------


def _bad(mutate) -> dict:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    return doc


def _set(path: list, value):
    def mutate(doc):
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _del(path: list):
    def mutate(doc):
        target = doc
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _append(path: list, value):
    def mutate(doc):
        target = doc
        for part in path:
            target = target[part]
        target.append(copy.deepcopy(value))

    return mutate


BAD_CASES = {
    # name: (mutation, fragments that must appear in the error besides the file name)
    "unknown endpoint field": (
        _set(["models", 0, "endpoints", 0, "colour"], "red"),
        ["acme/small", "colour"],
    ),
    "unknown model field": (_set(["models", 1, "colour"], "red"), ["acme/large", "colour"]),
    "unknown provider field": (_set(["providers", 1, "colour"], "red"), ["beta", "colour"]),
    "missing prompt price": (
        _del(["models", 0, "endpoints", 1, "pricing", "prompt"]),
        ["acme/small", "beta", "prompt"],
    ),
    "float price": (
        _set(["models", 1, "endpoints", 0, "pricing", "completion"], 15.5),
        ["acme/large", "beta", "completion"],
    ),
    "non-decimal price": (
        _set(["models", 1, "endpoints", 0, "pricing", "prompt"], "cheap"),
        ["acme/large", "prompt"],
    ),
    "negative price": (
        _set(["models", 1, "endpoints", 0, "pricing", "prompt"], "-1"),
        ["acme/large", "prompt"],
    ),
    "sub-picodollar price": (
        _set(["models", 1, "endpoints", 0, "pricing", "prompt"], "0.0000001"),
        ["acme/large", "prompt"],
    ),
    "sub-picodollar request price": (
        _set(["models", 1, "endpoints", 0, "pricing", "request"], "0.0000000000001"),
        ["acme/large", "request"],
    ),
    "unknown provider": (_set(["models", 1, "endpoints", 0, "provider"], "gamma"), ["acme/large", "gamma"]),
    "bad api_format": (_set(["providers", 0, "api_format"], "soap"), ["alpha", "api_format"]),
    "duplicate model slug": (_append(["models"], BASE["models"][1]), ["acme/large", "twice"]),
    "duplicate provider slug": (_append(["providers"], BASE["providers"][0]), ["alpha", "twice"]),
    "duplicate endpoint provider": (
        _append(["models", 1, "endpoints"], BASE["models"][1]["endpoints"][0]),
        ["acme/large", "beta"],
    ),
    "bad model slug": (_set(["models", 1, "slug"], "Not A Slug"), ["Not A Slug", "slug"]),
    "unknown supported parameter": (
        _set(["models", 0, "endpoints", 0, "supported_parameters"], ["telepathy"]),
        ["acme/small", "telepathy"],
    ),
    "bad prompt_caching": (
        _set(["models", 0, "endpoints", 0, "prompt_caching"], "sometimes"),
        ["acme/small", "prompt_caching", "sometimes"],
    ),
    "bad context length": (
        _set(["models", 1, "endpoints", 0, "context_length"], "lots"),
        ["acme/large", "context_length"],
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_changes_nothing_and_names_file_entry_and_field(tmp_path, case):
    _load(_write(tmp_path, BASE, "good.yaml"))
    before = _state()
    mutate, fragments = BAD_CASES[case]
    path = _write(tmp_path, _bad(mutate), "bad.yaml")
    with pytest.raises(CommandError) as excinfo:
        _load(path)
    message = str(excinfo.value)
    assert path in message
    for fragment in fragments:
        assert fragment in message, (case, message)
    assert _state() == before


@pytest.mark.django_db
def test_bad_file_into_an_empty_database_writes_nothing(tmp_path):
    doc = _bad(_set(["models", 1, "endpoints", 0, "pricing", "prompt"], 0.5))  # the second model is bad
    with pytest.raises(CommandError):
        _load(_write(tmp_path, doc))
    assert (Provider.objects.count(), Model.objects.count(), Endpoint.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
def test_invalid_yaml_is_rejected_naming_the_file(tmp_path):
    _load(_write(tmp_path, BASE, "good.yaml"))
    before = _state()
    path = _write(tmp_path, "providers:\n  - slug: [unclosed\n", "broken.yaml")
    with pytest.raises(CommandError) as excinfo:
        _load(path)
    assert path in str(excinfo.value)
    assert "YAML" in str(excinfo.value)
    assert _state() == before


@pytest.mark.django_db
def test_one_bad_file_among_several_changes_nothing(tmp_path):
    good = _write(tmp_path, BASE, "good.yaml")
    bad = _write(
        tmp_path,
        {
            "models": [
                {
                    "slug": "acme/x",
                    "name": "X",
                    "context_length": 1,
                    "endpoints": [
                        {
                            "provider": "nobody",
                            "provider_model_id": "x",
                            "pricing": {"prompt": "1", "completion": "1"},
                        }
                    ],
                }
            ]
        },
        "bad.yaml",
    )
    with pytest.raises(CommandError) as excinfo:
        _load(good, bad)
    assert bad in str(excinfo.value) and "nobody" in str(excinfo.value)
    assert (Provider.objects.count(), Model.objects.count(), Endpoint.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
def test_missing_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError) as excinfo:
        _load(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(excinfo.value)


# --- prune ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_disables_endpoints_not_in_the_files(tmp_path):
    _load(_write(tmp_path, BASE))
    smaller = copy.deepcopy(BASE)
    smaller["models"] = [smaller["models"][0]]
    smaller["models"][0]["endpoints"] = smaller["models"][0]["endpoints"][:1]  # acme/small @ alpha only
    path = _write(tmp_path, smaller, "smaller.yaml")

    _load(path)  # without --prune nothing is disabled
    assert Endpoint.objects.filter(enabled=False).count() == 0

    out = _load(path, prune=True)
    assert set(Endpoint.objects.filter(enabled=True).values_list("model__slug", "provider__slug")) == {
        ("acme/small", "alpha")
    }
    assert Endpoint.objects.count() == 3  # disabled, not deleted
    assert "2 disabled by --prune" in out.strip().splitlines()[-1]

    # Loading the full file again brings them back.
    _load(_write(tmp_path, BASE))
    assert Endpoint.objects.filter(enabled=True).count() == 3


# --- the shipped default catalog ---------------------------------------------------------------------


@pytest.mark.django_db
def test_default_catalog_loads_and_is_broad():
    if not DEFAULT_CATALOG.exists():
        pytest.skip("routing/catalog/default.yaml is not there yet")
    out = _load(str(DEFAULT_CATALOG))
    assert out.strip().splitlines()[-1].startswith("Loaded 1 file(s)")
    models = list(Model.objects.values_list("slug", flat=True))
    assert len(models) >= 40
    assert len({slug.split("/", 1)[0] for slug in models}) >= 8
    assert Provider.objects.count() >= 10
    multi = [m for m in Model.objects.all() if m.endpoints.count() > 1]
    assert len(multi) >= 5
    # Loading it twice is harmless.
    counts = (Provider.objects.count(), Model.objects.count(), Endpoint.objects.count())
    _load(str(DEFAULT_CATALOG))
    assert (Provider.objects.count(), Model.objects.count(), Endpoint.objects.count()) == counts
