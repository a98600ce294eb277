"""How the ops dashboard writes numbers and times: short, and the same everywhere."""

from datetime import UTC, datetime

from django import template
from django.utils.dateparse import parse_datetime

register = template.Library()


@register.filter
def thousands(value) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "–"


@register.filter
def iso_short(value) -> str:
    """'2026-11-21 10:00 UTC' from a datetime or an ISO string."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@register.filter
def pvalue(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    if value < 1e-4:
        return "< 0.0001"
    return f"{value:.4f}".rstrip("0").rstrip(".")


@register.filter
def words(value) -> str:
    """A machine code as people read it: 'not_significant' -> 'not significant'."""
    return str(value or "").replace("_", " ")
