from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.holds import settle_health_register
        from billing.records import usage_records_register
        from routing import metrics, signals  # noqa: F401  (catalog version bumps; /metrics circuit states)
        from routing.health import book
        from routing.models import Endpoint, Generation

        settle_health_register(book)  # a settlement records its endpoints' health in the same call
        usage_records_register(generation=Generation, endpoint=Endpoint)  # billing writes and audits them
