"""Time sources for the sandbox: the wall clock, or a manual one tests can move forward."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

PORTAL_TZ = ZoneInfo("Europe/Moscow")  # a portal's time zone unless it is given another (Portal.time_zone)
_zone: ContextVar[tzinfo] = ContextVar("portal_zone", default=PORTAL_TZ)


@contextmanager
def portal_zone(name: str) -> Iterator[None]:
    """Dates written and read inside are in this portal's zone (a REST call answers in its portal's zone)."""
    token = _zone.set(ZoneInfo(name))
    try:
        yield
    finally:
        _zone.reset(token)


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
    return datetime.fromtimestamp(ts, _zone.get()).isoformat(timespec="seconds")


def parse_date(value: object) -> float | None:
    """Read a date the way Bitrix24 accepts it in filters and fields; naive values are portal time."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    for fmt in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=_zone.get()).timestamp()
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone.get())
    return parsed.astimezone(UTC).timestamp()
