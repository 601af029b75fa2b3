"""The append-only ledger: grants and charges move the cached balance once per source, exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from accounts.models import Organization
from billing.models import EntryKind, LedgerEntry
from billing.selectors import balance_get, credits_totals, ledger_balance_units
from billing.services import credits_grant, ledger_append, usage_charge
from switchyard.errors import BadRequest
from switchyard.money import from_units, to_units
from tests.factories import make_key, make_org


def _balance_units(org: Organization) -> int:
    return Organization.objects.values_list("balance_units", flat=True).get(pk=org.pk)


# --- to_units / from_units ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "usd,units",
    [
        ("1", 10**12),
        ("0.000000000001", 1),
        ("1.5", 1_500_000_000_000),
        (Decimal("-0.25"), -250_000_000_000),
        (3, 3 * 10**12),
        ("0.0000176", 17_600_000),
    ],
)
def test_to_units_is_exact(usd, units):
    result = to_units(usd)
    assert result == units
    assert type(result) is int


@pytest.mark.parametrize(
    "usd", ["0.0000000000001", "1.0000000000005", Decimal("1E-13"), "abc", "NaN", "Infinity", "-Infinity"]
)
def test_to_units_refuses_what_is_not_a_whole_picodollar(usd):
    with pytest.raises(ValueError):
        to_units(usd)


def test_to_units_refuses_inexact_floats():
    with pytest.raises(ValueError):
        to_units(0.1)  # type: ignore[arg-type]  # 0.1 as a float is not 0.1 USD


def test_from_units_is_an_exact_decimal():
    value = from_units(17_600_000)
    assert isinstance(value, Decimal)
    assert value == Decimal("0.0000176")
    assert from_units(to_units("123.456789012345")) == Decimal("123.456789012345")


# --- grants ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_grant_appends_an_entry_and_moves_the_balance():
    org = make_org(credits=None)
    entry = credits_grant(organization=org, amount_usd=Decimal("2.50"), reason="welcome")
    assert entry.kind == EntryKind.GRANT
    assert entry.amount_units == to_units("2.5")
    assert entry.organization_id == org.pk
    assert entry.source  # every entry points at its cause
    assert _balance_units(org) == to_units("2.5")
    assert balance_get(organization=org) == Decimal("2.5")
    assert isinstance(balance_get(organization=org), Decimal)

    credits_grant(organization=org, amount_usd=Decimal("0.000001"), reason="tiny")
    assert _balance_units(org) == to_units("2.500001")
    assert LedgerEntry.objects.filter(organization=org).count() == 2


@pytest.mark.django_db
def test_grant_with_the_same_source_applies_once():
    org = make_org(credits=None)
    first = credits_grant(organization=org, amount_usd=Decimal("5"), reason="promo", source="promo:2024")
    second = credits_grant(organization=org, amount_usd=Decimal("5"), reason="promo", source="promo:2024")
    assert second.pk == first.pk
    assert LedgerEntry.objects.filter(source="promo:2024").count() == 1
    assert _balance_units(org) == to_units("5")


@pytest.mark.django_db
def test_ledger_append_reports_whether_it_created():
    org = make_org(credits=None)
    version = Organization.objects.get(pk=org.pk).ledger_version
    entry, created = ledger_append(organization_id=org.pk, kind=EntryKind.GRANT, amount_units=7, source="s-1")
    assert created is True
    again, created_again = ledger_append(
        organization_id=org.pk, kind=EntryKind.GRANT, amount_units=7, source="s-1"
    )
    assert created_again is False and again.pk == entry.pk
    assert _balance_units(org) == 7
    assert Organization.objects.get(pk=org.pk).ledger_version == version + 1


@pytest.mark.django_db
def test_the_database_enforces_one_entry_per_kind_and_source():
    org = make_org(credits=None)
    LedgerEntry.objects.create(organization=org, kind=EntryKind.GRANT, amount_units=1, source="dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(organization=org, kind=EntryKind.GRANT, amount_units=1, source="dup")
    # The same source under another kind is a different cause.
    LedgerEntry.objects.create(organization=org, kind=EntryKind.ADJUSTMENT, amount_units=1, source="dup")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "amount,kind,reason",
    [
        (Decimal("0"), EntryKind.GRANT, "zero"),
        (Decimal("-1"), EntryKind.GRANT, "negative grant"),
        (Decimal("0.0000000000001"), EntryKind.GRANT, "sub-picodollar"),
        (Decimal("1e400"), EntryKind.GRANT, "too big"),
        (Decimal("1"), EntryKind.GRANT, "   "),
        (Decimal("1"), EntryKind.USAGE, "usage is not granted by hand"),
        (Decimal("1"), EntryKind.PURCHASE, "purchases come from Stripe"),
    ],
)
def test_bad_grants_are_refused_and_change_nothing(amount, kind, reason):
    org = make_org(credits="1")
    with pytest.raises(BadRequest):
        credits_grant(organization=org, amount_usd=amount, reason=reason, kind=kind)
    assert LedgerEntry.objects.filter(organization=org).count() == 1
    assert _balance_units(org) == to_units("1")


@pytest.mark.django_db
def test_negative_adjustment_is_allowed():
    org = make_org(credits="3")
    credits_grant(
        organization=org, amount_usd=Decimal("-1.25"), reason="correction", kind=EntryKind.ADJUSTMENT
    )
    assert _balance_units(org) == to_units("1.75")


# --- usage charges --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_usage_charge_is_idempotent_by_generation_id():
    org = make_org(credits="1")
    key, _ = make_key(org)
    cost = to_units("0.0000176")
    entry, created = usage_charge(
        organization_id=org.pk,
        generation_id="gen-abc",
        cost_units=cost,
        api_key_id=key.pk,
        model="acme/small",
    )
    assert created is True
    assert entry.kind == EntryKind.USAGE and entry.amount_units == -cost and entry.api_key_id == key.pk
    for _ in range(3):
        again, created = usage_charge(
            organization_id=org.pk,
            generation_id="gen-abc",
            cost_units=cost,
            api_key_id=key.pk,
            model="acme/small",
        )
        assert created is False and again.pk == entry.pk
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE).count() == 1
    assert _balance_units(org) == to_units("1") - cost

    usage_charge(
        organization_id=org.pk,
        generation_id="gen-def",
        cost_units=cost,
        api_key_id=key.pk,
        model="acme/small",
    )
    assert _balance_units(org) == to_units("1") - 2 * cost


@pytest.mark.django_db
def test_usage_may_take_the_balance_below_zero_exactly():
    org = make_org(credits="0.00001")
    usage_charge(
        organization_id=org.pk,
        generation_id="gen-over",
        cost_units=to_units("0.000010000001"),
        api_key_id=None,
        model="m",
    )
    assert _balance_units(org) == -1
    assert balance_get(organization=org) == Decimal("-0.000000000001")


# --- the balance is the sum of the entries --------------------------------------------------------


@pytest.mark.django_db
def test_cached_balance_equals_the_sum_of_entries():
    org = make_org(credits="10")
    other = make_org(credits="99")
    key, _ = make_key(org)
    credits_grant(organization=org, amount_usd=Decimal("0.333333333333"), reason="odd")
    credits_grant(organization=org, amount_usd=Decimal("-0.5"), reason="fix", kind=EntryKind.ADJUSTMENT)
    for i in range(25):
        usage_charge(
            organization_id=org.pk,
            generation_id=f"gen-{i}",
            cost_units=to_units("0.000123456789"),
            api_key_id=key.pk,
            model="m",
        )
    usage_charge(
        organization_id=org.pk, generation_id="gen-3", cost_units=to_units("5"), api_key_id=key.pk, model="m"
    )  # a replay with a different cost changes nothing

    expected = to_units("10") + to_units("0.333333333333") - to_units("0.5") - 25 * to_units("0.000123456789")
    assert ledger_balance_units(organization_id=org.pk) == expected
    assert _balance_units(org) == expected
    assert ledger_balance_units(organization_id=other.pk) == _balance_units(other) == to_units("99")

    credits, usage = credits_totals(organization_id=org.pk)
    assert isinstance(credits, Decimal) and isinstance(usage, Decimal)
    assert credits == Decimal("9.833333333333")
    assert usage == Decimal("0.003086419725")
    assert credits - usage == from_units(expected)


@pytest.mark.django_db
def test_amounts_are_integers_never_floats():
    org = make_org(credits="1.1")
    entry = LedgerEntry.objects.get(organization=org)
    entry.refresh_from_db()
    assert type(entry.amount_units) is int
    org.refresh_from_db()
    assert type(org.balance_units) is int
    assert type(ledger_balance_units(organization_id=org.pk)) is int
    assert org.balance_units == 1_100_000_000_000
