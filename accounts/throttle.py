"""The Django admin's login throttle: django-axes' database handler, confined to the admin.

`AXES_ONLY_ADMIN_SITE` stops axes from *refusing* dashboard sign-ins, but its handler still counts
their failures (and flags a lockout that its middleware turns into a 429). The dashboard has
django-allauth's own rate limits, so here failures and successes outside /admin/ are simply ignored.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.database import AxesDatabaseHandler


class AdminOnlyAxesHandler(AxesDatabaseHandler):  # type: ignore[misc]
    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
    ) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_login_failed(sender, credentials, request, **kwargs)

    def user_logged_in(self, sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_in(sender, request, user, **kwargs)

    def user_logged_out(self, sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_out(sender, request, user, **kwargs)
