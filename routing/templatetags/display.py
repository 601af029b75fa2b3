"""Template filters that print names, ids, dates and audit details the same way on every page.

`provider_name` (display names, never slugs), `breakable` (model ids that wrap between words), `when`
and `day` (one date format, shown in the viewer's time zone by static/js/app.js), `audit_details`
(an audit event's metadata as "Limit: none, Resets: daily", money as $).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from billing.templatetags.money import usd
from routing.catalog.snapshot import catalog
from routing.selectors import provider_names
from switchyard.money import from_units

register = template.Library()


@register.filter
def breakable(value: object) -> SafeString:
    """A model id that may wrap only after its separators (`meta-llama/` `llama-3.1-` `405b`), never
    inside a word: a narrow column otherwise breaks it anywhere (`overflow-wrap: anywhere`) or not at all."""
    text = str(escape(value if value is not None else ""))
    for sep in ("/", "-", "_", ":"):
        text = text.replace(sep, sep + "<wbr>")
    return mark_safe(text)


@register.filter
def provider_name(slug: object) -> str:
    if not slug:
        return "—"
    return provider_names(snapshot=catalog.get_sync()).get(str(slug), str(slug))


# One format for every date and time on the dashboard: "Dec 3, 2026, 14:05" (the server writes it in
# UTC; app.js rewrites it in the browser's time zone from the ISO `datetime` attribute).
def _time_tag(moment: datetime, kind: str) -> SafeString:
    utc = moment.astimezone(UTC) if timezone.is_aware(moment) else moment
    text = f"{utc:%b} {utc.day}, {utc.year}" + (f", {utc:%H:%M} UTC" if kind == "datetime" else "")
    return format_html(
        '<time datetime="{}" data-format="{}" title="{}">{}</time>',
        utc.isoformat(),
        kind,
        utc.isoformat(timespec="seconds"),
        text,
    )


@register.filter
def when(value: object) -> SafeString | str:
    if not isinstance(value, datetime):
        return "—"
    return _time_tag(value, "datetime")


@register.filter
def day(value: object) -> SafeString | str:
    if isinstance(value, datetime):
        return _time_tag(value, "date")
    if isinstance(value, date):
        return format_html(
            '<time datetime="{}">{} {}, {}</time>', value.isoformat(), f"{value:%b}", value.day, value.year
        )
    return "—"


AUDIT_LABELS = {
    "limit_units": "Limit",
    "limit_reset": "Resets",
    "expires_at": "Expires",
    "amount_usd": "Amount",
    "allow_platform_fallback": "Platform fallback",
    "new_member": "New member",
    "data_collection": "Data policy",
}
NONE_TEXT = {"limit_units": "none", "expires_at": "never"}


def _audit_value(key: str, value: Any) -> Any:
    if value is None or value == "":
        return NONE_TEXT.get(key, "none")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_units") and isinstance(value, int):
        return usd(from_units(value))
    if key.endswith("_usd"):
        try:
            return usd(Decimal(str(value)))
        except ArithmeticError:
            return str(value)
    if key == "provider":
        return provider_name(value)
    if key in ("expires_at", "at") and isinstance(value, str):
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return (
            ", ".join(f"{AUDIT_LABELS.get(k, k.replace('_', ' '))}: {v}" for k, v in value.items()) or "none"
        )
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


@register.filter
def audit_details(metadata: object) -> SafeString | str:
    """An audit event's metadata for people: labels instead of field names, none/never/yes/no instead of
    Python's None/True, dollars instead of picodollars."""
    if not isinstance(metadata, dict) or not metadata:
        return "—"
    return format_html_join(
        mark_safe('<span class="sep">, </span>'),
        '<span class="kv"><span class="k">{}:</span> {}</span>',
        (
            (AUDIT_LABELS.get(k, k.replace("_", " ").capitalize()), _audit_value(k, v))
            for k, v in metadata.items()
        ),
    )
