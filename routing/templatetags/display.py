"""Template filters that print names and ids the same way on every page: `breakable` model ids."""

from __future__ import annotations

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def breakable(value: object) -> SafeString:
    """A model id that may wrap only after its separators (`meta-llama/` `llama-3.1-` `405b`), never
    inside a word: a narrow column otherwise breaks it anywhere (`overflow-wrap: anywhere`) or not at all."""
    text = str(escape(value if value is not None else ""))
    for sep in ("/", "-", "_", ":"):
        text = text.replace(sep, sep + "<wbr>")
    return mark_safe(text)
