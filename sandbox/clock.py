"""Time sources for the sandbox: the wall clock, or a manual one tests can move forward."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

PORTAL_TZ = timezone(timedelta(hours=3))  # portals in the sandbox live in Moscow time


class Clock:
    """Wall-clock time in unix seconds."""

    def now(self) -> float:
        """The current unix time."""
        return time.time()


class ManualClock(Clock):
    """A clock that only moves when told to; thread-safe."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current (frozen) unix time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        with self._lock:
            self._now += seconds


def iso(ts: float | None) -> str | None:
    """Unix time as Bitrix24 writes dates: ISO 8601 with the portal's offset, seconds precision."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, PORTAL_TZ).isoformat(timespec="seconds")


def parse_date(value: object) -> float | None:
    """Read a date the way Bitrix24 accepts it in filters and fields; naive values are portal time."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    for fmt in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=PORTAL_TZ).timestamp()
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PORTAL_TZ)
    return parsed.astimezone(UTC).timestamp()
