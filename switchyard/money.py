"""Exact money: Decimal USD in Python, integer picodollars (1e-12 USD) in storage and Redis.

Per-token prices go down to a millionth of a micro-dollar, and a cost is tokens x price, so
picodollars hold every cost exactly while integers keep SUM() exact on SQLite and PostgreSQL
alike. A signed 64-bit column holds up to about 9.2 million USD per balance or entry.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

PICO = Decimal("0.000000000001")
UNITS_PER_USD = 10**12
PER_MILLION = Decimal(1_000_000)


MAX_UNITS = 2**63 - 1


def to_units(usd: Decimal | int | str) -> int:
    """USD -> picodollars; refuses floats, values finer than a picodollar and values a bigint cannot hold."""
    if isinstance(usd, float):
        raise ValueError("money must not be a float; pass a Decimal or a string")
    try:
        value = Decimal(usd)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {usd!r}")
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {usd!r}")
    units = value * UNITS_PER_USD
    if units != units.to_integral_value():
        raise ValueError(f"{usd} USD is finer than a picodollar")
    if abs(units) > MAX_UNITS:
        raise ValueError(f"{usd} USD is out of range")
    return int(units)


def cents_str(cents: int, grouping: str = "") -> str:
    """Whole cents as dollars and cents ("1234.50", or "1,234.50" with grouping=","), without a float."""
    return format(Decimal(int(cents)).scaleb(-2), f"{grouping}.2f")


def from_units(units: int) -> Decimal:
    """Picodollars -> Decimal USD with 12 places, normalised for display."""
    return (Decimal(units) / UNITS_PER_USD).quantize(PICO)


def per_million_to_per_token(price: Decimal | str) -> Decimal:
    return (Decimal(price) / PER_MILLION).quantize(PICO, rounding=ROUND_HALF_EVEN)


def json_number(usd: Decimal) -> Decimal:
    """Money in JSON is a number (as OpenRouter sends it) written digit for digit from the Decimal.

    Returns the normalised Decimal; `json_default` (used by our orjson renderers) writes it as a plain
    JSON number such as 0.0000176, never through a float and never in exponent form.
    """
    return usd.normalize()


def json_default(value: object) -> object:
    """orjson `default=`: Decimals become exact JSON numbers."""
    import orjson

    if isinstance(value, Decimal):
        return orjson.Fragment(format(value.normalize(), "f").encode())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def price_str(per_token: Decimal) -> str:
    """Price per token as OpenRouter writes it: a plain decimal string without exponent."""
    text = format(per_token.normalize(), "f")
    return text
