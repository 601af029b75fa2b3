from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from routing import metrics, signals  # noqa: F401  (catalog version bumps; /metrics circuit states)
