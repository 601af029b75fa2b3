"""The dashboard plumbing lives in accounts/dashboard.py: billing's and routing's pages import it from there."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

VIEWS = ["billing/views.py", "routing/views.py", "routing/views_byok.py"]


def _imported_modules(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_other_apps_views_import_the_plumbing_not_accounts_pages() -> None:
    for path in VIEWS:
        modules = _imported_modules(path)
        assert "accounts.views" not in modules, path
        assert "accounts.dashboard" in modules, path


def test_accounts_pages_use_the_same_plumbing() -> None:
    from accounts import dashboard, views

    assert views.dashboard_view is dashboard.dashboard_view
    assert views.render_dashboard is dashboard.render_dashboard
