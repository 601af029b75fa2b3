from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing import (
            hooks,  # noqa: F401  (registers billing's /metrics, /readyz and shutdown hooks)
            tasks,  # noqa: F401  (registers the tasks billing.enqueue queues by name)
        )
