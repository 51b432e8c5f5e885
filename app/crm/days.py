"""A calendar day from a CRM date field, whichever way the CRM writes it (shared by both adapters)."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Any


def parse_day(value: Any, zone: tzinfo) -> date | None:
    """The day a date field holds, in the portal's calendar: unix seconds (amoCRM), an ISO 8601 date or date-time
    (Bitrix24 REST, the day as written), or «08.12.2026» (Bitrix24's own display format). None when the field is
    empty or holds something else."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text.lstrip("-").isdigit():
        try:
            return datetime.fromtimestamp(int(text), UTC).astimezone(zone).date()
        except (OverflowError, OSError, ValueError):
            return None
    try:
        if len(text) == 10 and text[2] == "." and text[5] == ".":
            return date(int(text[6:]), int(text[3:5]), int(text[:2]))
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None
