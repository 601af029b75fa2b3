"""Public pages (landing, models browser, model page, docs) and the dashboard's activity and playground."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any, cast

from asgiref.sync import sync_to_async
from django import forms
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_POST

from accounts.dashboard import DashboardRequest, base_url, dashboard_view, render_dashboard
from accounts.models import ApiKey
from routing import selectors
from routing.catalog.snapshot import catalog
from routing.models import GenerationStatus
from switchyard.money import from_units

PLAYGROUND_SESSION_KEY = "sy_playground"


def _public(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    return render(request, template, {"base_url": base_url(request), **context})


# --- public pages ---------------------------------------------------------------------------------


def landing(request: HttpRequest) -> HttpResponse:
    snapshot = catalog.get_sync()
    featured = selectors.catalog_browse(snapshot=snapshot, sort="name")[:6]
    facets = selectors.catalog_facets(snapshot=snapshot)
    return _public(
        request,
        "public/landing.html",
        {
            "model_count": selectors.catalog_model_count(snapshot=snapshot),
            "provider_count": len(facets["providers"]),
            "featured": featured,
            "example_model": _example_model(snapshot),
        },
    )


def _example_model(snapshot: Any) -> str:
    if "switchyard/sim-1" in snapshot.models and snapshot.models["switchyard/sim-1"].endpoints:
        return "switchyard/sim-1"
    if "openai/gpt-4o-mini" in snapshot.models:
        return "openai/gpt-4o-mini"
    return next((slug for slug, m in snapshot.models.items() if m.endpoints), "openai/gpt-4o-mini")


class ModelFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Search models…"}),
    )
    author = forms.ChoiceField(required=False, label="Author")
    provider = forms.ChoiceField(required=False, label="Provider")
    modality = forms.ChoiceField(required=False, label="Modality")
    context = forms.ChoiceField(
        required=False,
        label="Context length",
        choices=[
            ("", "Any"),
            ("16000", "16K+"),
            ("32000", "32K+"),
            ("128000", "128K+"),
            ("200000", "200K+"),
            ("1000000", "1M+"),
        ],
    )
    max_price = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        label="Max prompt price ($/M)",
        widget=forms.NumberInput(attrs={"step": "0.1", "inputmode": "decimal", "placeholder": "Any"}),
    )
    sort = forms.ChoiceField(required=False, label="Sort", choices=list(selectors.MODEL_SORTS.items()))

    def __init__(self, *args: Any, facets: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["author"]).choices = [
            ("", "All authors"),
            *((a, a) for a in facets["authors"]),
        ]
        cast(forms.ChoiceField, self.fields["provider"]).choices = [
            ("", "All providers"),
            *facets["providers"],
        ]
        cast(forms.ChoiceField, self.fields["modality"]).choices = [
            ("", "Any"),
            *((m, m.capitalize()) for m in facets["modalities"]),
        ]


def models_browser(request: HttpRequest) -> HttpResponse:
    snapshot = catalog.get_sync()
    form = ModelFilterForm(request.GET or None, facets=selectors.catalog_facets(snapshot=snapshot))
    data = form.cleaned_data if form.is_valid() else {}
    rows = selectors.catalog_browse(
        snapshot=snapshot,
        search=data.get("q") or "",
        author=data.get("author") or "",
        provider=data.get("provider") or "",
        modality=data.get("modality") or "",
        min_context=int(data["context"]) if data.get("context") else None,
        max_price=data.get("max_price"),
        sort=data.get("sort") or "name",
    )
    context = {"form": form, "rows": rows, "total": selectors.catalog_model_count(snapshot=snapshot)}
    if request.headers.get("HX-Request"):
        return render(request, "public/_model_results.html", context)
    return _public(request, "public/models.html", context)


def model_page(request: HttpRequest, author: str, name: str) -> HttpResponse:
    """A model as OpenRouter shows one: each provider's price, context and live health (uptime, latency,
    throughput over the router's window, with per-minute charts), and code to try it."""
    from django.urls import reverse
    from django.utils.http import urlencode

    model = selectors.catalog_model_detail(snapshot=catalog.get_sync(), slug=f"{author}/{name}")
    if model is None:
        raise Http404("No such model.")
    health = selectors.endpoint_health_series(endpoint_ids=[ep["id"] for ep in model["endpoints"]])
    for ep in model["endpoints"]:
        ep["health"] = health.get(ep["id"], {})
    minutes = next(iter(health.values()), {}).get("minutes", [])
    charts = {
        "minutes": minutes,
        "series": [
            {"name": ep["provider_name"], **ep["health"].get("series", {})} for ep in model["endpoints"]
        ],
    }
    playground = reverse("playground") + "?" + urlencode({"model": model["slug"]})
    return _public(
        request, "public/model.html", {"model": model, "health_charts": charts, "playground_url": playground}
    )


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for whatever the page links: the static (hashed, long-cached) file."""
    response = redirect(static("img/favicon.ico"))
    response["Cache-Control"] = "public, max-age=86400"
    return response


def docs(request: HttpRequest) -> HttpResponse:
    return _public(request, "public/docs.html", {"example_model": _example_model(catalog.get_sync())})


# --- activity -------------------------------------------------------------------------------------


class ActivityFilterForm(forms.Form):
    model = forms.ChoiceField(required=False)
    provider = forms.ChoiceField(required=False)
    key = forms.ChoiceField(required=False, label="API key")
    member = forms.ChoiceField(required=False, label="Member")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *GenerationStatus.choices])
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(
        self,
        *args: Any,
        options: dict[str, list[str]],
        keys: list[ApiKey],
        members: dict[str, str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["model"]).choices = [
            ("", "All models"),
            *((m, m) for m in options["models"]),
        ]
        names = selectors.provider_names(snapshot=catalog.get_sync())
        cast(forms.ChoiceField, self.fields["provider"]).choices = [
            ("", "All providers"),
            *((p, names.get(p, p)) for p in options["providers"]),
        ]
        cast(forms.ChoiceField, self.fields["key"]).choices = [
            ("", "All keys"),
            *((str(k.pk), _key_label(k)) for k in keys),
        ]
        cast(forms.ChoiceField, self.fields["member"]).choices = [("", "All members"), *members.items()]


def _key_label(key: ApiKey) -> str:
    return f"{key.name} ({key.prefix}…)"


def _members(keys: list[ApiKey]) -> dict[str, str]:
    """The people whose keys made requests: user id → name (or email), by name."""
    people = {str(k.created_by_id): k.created_by.name or k.created_by.email for k in keys if k.created_by}
    return dict(sorted(people.items(), key=lambda item: item[1].lower()))


def _activity_filters(
    request: DashboardRequest,
) -> tuple[ActivityFilterForm, dict[str, Any], dict[str, dict[str, str]]]:
    """The filter form, the filters it gives `generation_list`, and the display names of each grouping."""
    org = request.org
    keys = list(ApiKey.objects.filter(organization=org).select_related("created_by").order_by("name"))
    members = _members(keys)
    form = ActivityFilterForm(
        request.GET or None,
        options=selectors.generation_filter_options(organization_id=org.pk),
        keys=keys,
        members=members,
    )
    data = form.cleaned_data if form.is_valid() else {}
    filters = {
        "model": data.get("model") or "",
        "provider": data.get("provider") or "",
        "api_key_id": int(data["key"]) if data.get("key") else None,
        "member_id": int(data["member"]) if data.get("member") else None,
        "status": data.get("status") or "",
        "date_from": data.get("date_from"),
        "date_to": data.get("date_to"),
    }
    names = {
        "provider": selectors.provider_names(snapshot=catalog.get_sync()),
        "key": {str(k.pk): _key_label(k) for k in keys} | {selectors.NO_GROUP: "Deleted key"},
        "member": members | {selectors.NO_GROUP: "No member (a deleted key, or one without a creator)"},
    }
    return form, filters, names


# Activity's groupings, as the control names them.
GROUPS = {"model": "model", "provider": "provider", "key": "API key", "member": "member"}


def _group(request: HttpRequest) -> str:
    group = request.GET.get("group", "")
    return group if group in GROUPS else "model"


CHART_RANGES = {"7": 7, "30": 30, "90": 90}


@dashboard_view()
def activity(request: DashboardRequest) -> HttpResponse:
    """Requests, their charts and the CSV export link, all from the same filters.

    The filter form swaps `#activity-results` (charts, export link, table) with htmx, so what the page
    shows, what the charts total and what Export CSV downloads never disagree.
    """
    org = request.org
    form, filters, names = _activity_filters(request)
    generations = selectors.generation_list(organization_id=org.pk, **filters)
    page = Paginator(generations, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    chart_query = query.copy()  # the filters without the chart's own controls, for the range links
    for name in ("group", "days"):
        chart_query.pop(name, None)
    group = _group(request)
    days = CHART_RANGES.get(request.GET.get("days", ""), 30)
    context: dict[str, Any] = {
        "section": "activity",
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "chart_query": chart_query.urlencode(),
        "group": group,
        "group_label": GROUPS[group],
        "groups": GROUPS,
        "days": days,
    }
    target = request.headers.get("HX-Target") if request.headers.get("HX-Request") else None
    if target == "activity-table":
        return render(request, "dashboard/_activity_table.html", context)
    charts = selectors.usage_by_day(organization_id=org.pk, days=days, group_by=group, filters=filters)
    chart_data = selectors.usage_chart_data(charts)
    label = names.get(group, {})  # display names (providers, keys, members), as everywhere else
    for series in chart_data["series"]:
        series["name"] = label.get(series["name"], series["name"])
    context.update(
        {
            "charts": chart_data,
            "chart_totals": charts["totals"],
            "group_totals": _group_totals(org.pk, group, days, filters, label),
            "ranges": CHART_RANGES,
        }
    )
    if target == "activity-results":
        return render(request, "dashboard/_activity_results.html", context)
    context.update(
        {
            "has_any": selectors.generation_list(organization_id=org.pk).exists(),
            "base_url": base_url(request),
        }
    )
    return render_dashboard(request, "dashboard/activity.html", context)


def _group_totals(
    org_id: int, group: str, days: int, filters: dict[str, Any], names: dict[str, str]
) -> list[dict[str, Any]]:
    """Every group's totals over the charts' days, named for people."""
    from django.utils import timezone

    since = timezone.now().date() - timedelta(days=days - 1)
    rows = selectors.usage_by_group(organization_id=org_id, group_by=group, since=since, filters=filters)
    for row in rows:
        row["name"] = names.get(row["group"], row["group"])
    return rows


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"): a key
# named `=HYPERLINK(...)` would become a live link in whoever opens the export. A leading quote makes
# the cell text again.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dashboard_view()
def activity_csv(request: DashboardRequest) -> StreamingHttpResponse:
    """Every request the filters keep, or (`totals=1`) the totals per group the page shows, as CSV."""
    org = request.org
    _, filters, names = _activity_filters(request)
    rows = selectors.generation_list(organization_id=org.pk, **filters).select_related("api_key__created_by")
    group = _group(request)
    days = CHART_RANGES.get(request.GET.get("days", ""), 30)

    class Echo:
        def write(self, value: str) -> str:
            return value

    def totals() -> Iterator[str]:
        writer = csv.writer(Echo())
        yield writer.writerow([group, "name", "requests", "tokens", "cost_usd", "days"])
        for row in _group_totals(org.pk, group, days, filters, names.get(group, {})):
            yield writer.writerow(
                csv_safe(cell)
                for cell in [
                    row["group"],
                    row["name"],
                    row["requests"],
                    row["tokens"],
                    format(row["spend"].normalize(), "f"),
                    days,
                ]
            )

    def lines() -> Iterator[str]:
        writer = csv.writer(Echo())
        yield writer.writerow(
            [
                "id",
                "created_at",
                "model",
                "provider",
                "api_key",
                "status",
                "streamed",
                "tokens_prompt",
                "tokens_completion",
                "tokens_cached",
                "tokens_reasoning",
                "cost_usd",
                "latency_ms",
                "finish_reason",
                "member",
            ]
        )
        for g in rows.iterator(chunk_size=500):
            yield writer.writerow(
                csv_safe(cell)
                for cell in [
                    g.id,
                    g.created_at.isoformat(),
                    g.model,
                    g.provider,
                    g.api_key.name if g.api_key else "",
                    g.status,
                    "true" if g.streamed else "false",
                    g.tokens_prompt,
                    g.tokens_completion,
                    g.tokens_cached,
                    g.tokens_reasoning,
                    format(from_units(g.cost_units).normalize(), "f"),
                    g.latency_ms if g.latency_ms is not None else "",
                    g.finish_reason,
                    g.api_key.created_by.email if g.api_key and g.api_key.created_by else "",
                ]
            )

    by_group = request.GET.get("totals") == "1"
    body = totals() if by_group else lines()
    response = StreamingHttpResponse(_streamable(request, body), content_type="text/csv; charset=utf-8")
    name = f"switchyard-activity-{org.slug}{f'-by-{group}' if by_group else ''}-{date.today().isoformat()}"
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'

    return response


def _streamable(request: HttpRequest, lines: Iterator[str]) -> Iterator[str] | AsyncIterator[str]:
    """Under ASGI, stream through an async iterator that reads rows in batches on the sync thread:
    given a sync iterator there, Django collects the whole body in memory first (and warns)."""
    if not isinstance(request, ASGIRequest):
        return lines
    next_batch = sync_to_async(lambda: list(islice(lines, 500)), thread_sensitive=True)

    async def batches() -> AsyncIterator[str]:
        while batch := await next_batch():
            for line in batch:
                yield line

    return batches()


@dashboard_view()
def generation_detail(request: DashboardRequest, generation_id: str) -> HttpResponse:
    org = request.org
    generation = selectors.generation_get(organization_id=org.pk, generation_id=generation_id)
    if generation is None:
        raise Http404
    return render_dashboard(
        request,
        "dashboard/generation.html",
        {"section": "activity", "g": generation, "cost": from_units(generation.cost_units)},
    )


# --- playground -----------------------------------------------------------------------------------


@dashboard_view()
def playground(request: DashboardRequest) -> HttpResponse:
    snapshot = catalog.get_sync()
    models = selectors.catalog_browse(snapshot=snapshot, sort="name")
    chat_models = [m for m in models if "text" in m["output_modalities"] or not m["output_modalities"]]
    for m in chat_models:
        m["price_label"] = (
            "free" if m["is_free"] else f"{_per_m(m['prompt'])} in · {_per_m(m['completion'])} out per M"
        )
    selected = request.GET.get("model") or _example_model(snapshot)
    return render_dashboard(
        request,
        "dashboard/playground.html",
        {"section": "playground", "models": chat_models, "selected": selected},
    )


def _per_m(price: Decimal) -> str:
    """A price per million tokens for a dropdown (plain text, no hover): two decimals, more when needed."""
    cents = price.quantize(Decimal("0.01"))
    return "$" + format(cents if cents == price else price.normalize(), "f")


@dashboard_view()
@require_POST
def playground_key(request: DashboardRequest) -> JsonResponse:
    """The playground's short-lived key for this user and organisation, issued on first use.

    Its secret lives only in this user's (server-side) session and reaches the browser through this
    same-origin POST, never inside a page's HTML.
    """
    from django.utils import timezone

    from accounts import services

    org = request.org
    store = request.session.get(PLAYGROUND_SESSION_KEY, {})
    entry = store.get(str(org.pk))
    usable = False
    if entry:
        key = ApiKey.objects.filter(pk=entry["id"], organization=org, created_by=request.user).first()
        usable = bool(key and key.is_usable(timezone.now() + timedelta(minutes=10)))
    if not usable:
        key, secret = services.playground_key_issue(organization=org, user=request.user)
        entry = {"id": key.pk, "secret": secret}
        store[str(org.pk)] = entry
        request.session[PLAYGROUND_SESSION_KEY] = store
    return JsonResponse(
        {"key": entry["secret"], "base_url": "/api/v1"}, headers={"Cache-Control": "no-store"}
    )
