"""factory_boy factories and small builders for tests."""

from __future__ import annotations

from decimal import Decimal

import factory

from accounts import services as account_services
from accounts.models import ApiKey, Membership, Organization, Role, User
from billing.services import credits_grant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.django.Password("correct-horse-battery")


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.OWNER


def make_org(*, credits: Decimal | str | None = "10", slug: str | None = None) -> Organization:
    org: Organization = OrganizationFactory(**({"slug": slug} if slug else {}))  # type: ignore[assignment]
    if credits is not None and Decimal(credits) > 0:
        credits_grant(organization=org, amount_usd=Decimal(credits), reason="test credits")
    return org


def make_key(org: Organization, **kwargs: object) -> tuple[ApiKey, str]:
    kwargs.setdefault("name", "test key")
    return account_services.api_key_create(organization=org, **kwargs)  # type: ignore[arg-type]
