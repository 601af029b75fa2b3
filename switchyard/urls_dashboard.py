"""URL routes of the web dashboard and the public pages (server-rendered templates + htmx)."""

from django.urls import path

from accounts import views as accounts_views
from billing import views as billing_views
from routing import views as routing_views
from routing import views_byok

urlpatterns = [
    # Public
    path("", routing_views.landing, name="home"),
    path("models", routing_views.models_browser, name="models"),
    path("models/<str:author>/<str:name>", routing_views.model_page, name="model"),
    path("docs", routing_views.docs, name="docs"),
    path("favicon.ico", routing_views.favicon, name="favicon"),
    path("invitations/<str:token>/", accounts_views.invitation_accept, name="invite-accept"),
    # Dashboard
    path("dashboard/", accounts_views.dashboard_home, name="dashboard"),
    path("dashboard/organizations/new", accounts_views.org_create, name="org-create"),
    path("dashboard/organizations/switch", accounts_views.org_switch, name="org-switch"),
    path("dashboard/members/", accounts_views.members, name="members"),
    path("dashboard/members/leave", accounts_views.member_leave, name="member-leave"),
    path("dashboard/members/<int:member_id>/role", accounts_views.member_role, name="member-role"),
    path("dashboard/members/<int:member_id>/remove", accounts_views.member_remove, name="member-remove"),
    path(
        "dashboard/invitations/<int:invitation_id>/revoke",
        accounts_views.invitation_revoke,
        name="invitation-revoke",
    ),
    path("dashboard/keys/", accounts_views.keys, name="keys"),
    path("dashboard/keys/new", accounts_views.key_new, name="key-new"),
    path("dashboard/keys/created", accounts_views.key_created, name="key-created"),
    path("dashboard/keys/<int:key_id>/edit", accounts_views.key_edit, name="key-edit"),
    path(
        "dashboard/keys/<int:key_id>/<str:action>",
        accounts_views.key_action,
        name="key-action",
    ),
    path("dashboard/credits/", billing_views.credits, name="credits"),
    path("dashboard/credits/fee", billing_views.credits_fee, name="credits-fee"),
    path("dashboard/credits/buy", billing_views.credits_buy, name="credits-buy"),
    path("dashboard/credits/auto-topup", billing_views.credits_auto_topup, name="credits-auto-topup"),
    path("dashboard/activity/", routing_views.activity, name="activity"),
    path("dashboard/activity/export.csv", routing_views.activity_csv, name="activity-csv"),
    path("dashboard/activity/<str:generation_id>", routing_views.generation_detail, name="generation"),
    path("dashboard/playground/", routing_views.playground, name="playground"),
    path("dashboard/playground/key", routing_views.playground_key, name="playground-key"),
    path("dashboard/settings/", accounts_views.org_settings, name="settings"),
    path("dashboard/settings/provider-keys/", views_byok.byok_keys, name="byok"),
    path(
        "dashboard/settings/provider-keys/<int:key_id>/<str:action>",
        views_byok.byok_key_action,
        name="byok-action",
    ),
    path("dashboard/profile/", accounts_views.profile, name="profile"),
    path("dashboard/audit/", accounts_views.audit_log, name="audit"),
]
