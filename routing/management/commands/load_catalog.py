"""Upsert providers, models and endpoints from catalog YAML files (atomic, idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.catalog.loader import CatalogError, catalog_load


class Command(BaseCommand):
    help = "Load catalog YAML files. A bad file changes nothing and the error names the bad field."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", help="catalog YAML files")
        parser.add_argument("--prune", action="store_true", help="disable endpoints not present in the files")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = catalog_load(options["paths"], prune=options["prune"])
        except CatalogError as exc:
            raise CommandError(str(exc))
        self.stdout.write(summary.line())
