"""Template filters that print money exactly (never through a float): `usd`, `signed_usd`, `usd_units`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template

from billing.money import from_units

register = template.Library()

CENT = Decimal("0.01")


def _format(value: Decimal) -> str:
    """Two decimals when the amount is whole cents, otherwise every significant digit (costs are tiny)."""
    if value == value.quantize(CENT):
        return f"{value.quantize(CENT):,f}"
    text = f"{value.normalize():,f}"
    return text


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
    d = _decimal(value)
    if d is None:
        return "—"
    return ("-$" if d < 0 else "$") + _format(abs(d))


@register.filter
def signed_usd(value: object) -> str:
    d = _decimal(value)
    if d is None:
        return "—"
    return ("−$" if d < 0 else "+$") + _format(abs(d))


@register.filter
def usd_units(value: object) -> str:
    """Picodollars (int) -> "$0.0000176"."""
    if value is None:
        return "—"
    return usd(from_units(int(value)))  # type: ignore[call-overload]
