"""Template filters that print money (never through a float): `usd`, `signed_usd`, `usd_units` show two
decimals with the exact amount on hover; `usd_exact` is the plain exact text."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from switchyard.money import from_units

register = template.Library()

CENT = Decimal("0.01")
HALF_CENT = Decimal("0.005")


def _exact(value: Decimal) -> str:
    """Every significant digit, at least cents: "9.9997848", "0.0000132", "10.00"."""
    if value == value.quantize(CENT):
        return f"{value.quantize(CENT):,f}"
    return f"{value.normalize():,f}"


def _shown(value: Decimal) -> str:
    """What a person reads: two decimals; a non-zero amount under half a cent reads "<0.01", not "0.00"."""
    if 0 < value < HALF_CENT:
        return "<" + "0.01"
    return f"{value.quantize(CENT, rounding=ROUND_HALF_UP):,f}"


def _render(value: Decimal, minus: str, plus: str) -> SafeString:
    sign = minus if value < 0 else plus
    magnitude = abs(value)
    shown, exact = _shown(magnitude), _exact(magnitude)
    if shown.startswith("<"):
        text = "<" + sign + "$" + shown[1:]
    else:
        text = sign + "$" + shown
    if shown == exact:
        return format_html('<span class="money">{}</span>', text)
    return format_html('<span class="money" title="{}">{}</span>', sign + "$" + exact, text)


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):  # never format money through a float; refuse loudly in templates
        raise TypeError("money must not be a float")
    try:
        return Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError):
        return None


@register.filter
def usd(value: object) -> str:
    """Money as people read it: "$10.00", with the exact amount ("$9.9997848") on hover. Exports and
    the API keep the exact value; this is the one formatter every page uses."""
    d = _decimal(value)
    if d is None:
        return "—"
    return _render(d, "-", "")


@register.filter
def signed_usd(value: object) -> str:
    d = _decimal(value)
    if d is None:
        return "—"
    return _render(d, "−", "+")


@register.filter
def usd_exact(value: object) -> str:
    """Plain text with every digit, for attributes and sentences: "$9.9997848"."""
    d = _decimal(value)
    if d is None:
        return "—"
    return ("-$" if d < 0 else "$") + _exact(abs(d))


@register.filter
def usd_units(value: object) -> str:
    """Picodollars (int) -> "$0.0000176"."""
    if value is None:
        return "—"
    return usd(from_units(int(value)))  # type: ignore[call-overload]
