"""The portal's time zone: the one place that turns a portal into a zone, its "today" and a readable label.

Every date the app computes or shows (callbacks, report periods, the digest hour, duty days, exchange days,
task deadlines, notices, CSV) goes through `portal_zone(portal)` / `zone_name(portal)`, never a default of its
own. The zone itself is read from the CRM and may be overridden by an admin (app.domain.timezones).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel.dates import get_timezone_location

from app.core import i18n
from app.core.models import Portal

DEFAULT_ZONE = "Europe/Moscow"

i18n.register(
    {
        "tz_moscow": ("МСК", "Moscow"),
        "tz_utc": ("UTC", "UTC"),
    }
)


def valid_zone(name: object) -> bool:
    """Whether `name` is an IANA time zone this machine knows (Area/City, Etc/GMT-7, UTC)."""
    if not isinstance(name, str) or not name or len(name) > 64 or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def zone_name(portal: Portal) -> str:
    """The portal's time zone name (Moscow only for a row that has none or an unknown one)."""
    name = portal.timezone
    return name if valid_zone(name) else DEFAULT_ZONE


def portal_zone(portal: Portal) -> ZoneInfo:
    """The portal's time zone."""
    return ZoneInfo(zone_name(portal))


def local_now(portal: Portal, now: datetime | None = None) -> datetime:
    """The moment (now by default) on the portal's wall clock."""
    return (now or datetime.now(UTC)).astimezone(portal_zone(portal))


def local_day(portal: Portal, moment: datetime) -> date:
    """The calendar day of a moment in the portal's time zone."""
    return moment.astimezone(portal_zone(portal)).date()


def local_today(portal: Portal, now: datetime | None = None) -> date:
    """The portal's date today."""
    return local_now(portal, now).date()


def zone_for_offset(offset: timedelta) -> str | None:
    """A fixed-offset IANA zone for a whole-hour UTC offset (`Etc/GMT-7` is UTC+7: IANA inverts the sign)."""
    seconds = int(offset.total_seconds())
    if seconds % 3600 or not -12 * 3600 <= seconds <= 14 * 3600:
        return None
    hours = seconds // 3600
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"


def offset_text(zone: ZoneInfo, at: datetime | None = None) -> str:
    """The zone's offset at a moment as «UTC+7», «UTC-4», «UTC+5:30», «UTC»."""
    offset = (at or datetime.now(UTC)).astimezone(zone).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def zone_label(name: str, language: str, at: datetime | None = None) -> str:
    """A zone as people read it: «МСК (UTC+3)» / "Moscow (UTC+3)", «Новосибирск (UTC+7)», "New York (UTC-4)";
    a fixed offset (`Etc/GMT-7`) as «UTC+7». Unknown names are shown as they are."""
    if not valid_zone(name):
        return name
    zone = ZoneInfo(name)
    offset = offset_text(zone, at)
    if name == DEFAULT_ZONE:
        return f"{i18n.translate('tz_moscow', language)} ({offset})"
    if name in ("UTC", "Etc/UTC") or name.startswith("Etc/"):
        return offset
    city = get_timezone_location(name, locale="en" if language == "en" else "ru", return_city=True)
    return f"{city} ({offset})"


def known_zones() -> list[str]:
    """Every Area/City zone name, sorted (the settings page offers them)."""
    return sorted(name for name in available_timezones() if "/" in name and not name.startswith(("Etc/", "SystemV/")))


# Russia's zones from west to east (the settings page lists them first, by city).
RUSSIAN_ZONES = (
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Kirov",
    "Europe/Volgograd",
    "Europe/Astrakhan",
    "Europe/Samara",
    "Europe/Saratov",
    "Europe/Ulyanovsk",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Barnaul",
    "Asia/Tomsk",
    "Asia/Novokuznetsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Chita",
    "Asia/Yakutsk",
    "Asia/Khandyga",
    "Asia/Vladivostok",
    "Asia/Ust-Nera",
    "Asia/Magadan",
    "Asia/Sakhalin",
    "Asia/Srednekolymsk",
    "Asia/Kamchatka",
    "Asia/Anadyr",
)

ZoneChoice = tuple[str, str]  # (IANA name, «Новосибирск (UTC+7)»)


def zone_choices(language: str, now: datetime | None = None) -> tuple[list[ZoneChoice], list[ZoneChoice]]:
    """The zones a settings page offers, by city and offset: Russia's from west to east, then every other
    Area/City zone by its city's name (aliases of one city shown once)."""
    moment = now or datetime.now(UTC)
    # Offsets change with daylight saving: one list per language and hour.
    return _zone_choices(language, moment.replace(minute=0, second=0, microsecond=0))


@lru_cache(maxsize=8)
def _zone_choices(language: str, hour: datetime) -> tuple[list[ZoneChoice], list[ZoneChoice]]:
    locale = "en" if language == "en" else "ru"

    def label(name: str) -> str:
        city = get_timezone_location(name, locale=locale, return_city=True).rsplit("/", 1)[-1]
        return f"{city} ({offset_text(ZoneInfo(name), hour)})"

    russian = [(name, label(name)) for name in RUSSIAN_ZONES if valid_zone(name)]
    seen = {text for _name, text in russian}
    others: list[ZoneChoice] = []
    for name in sorted(known_zones(), key=lambda zone: zone.count("/")):  # «America/Buenos_Aires» before its alias
        if name in RUSSIAN_ZONES:
            continue
        text = label(name)
        if text not in seen:
            seen.add(text)
            others.append((name, text))
    others.sort(key=lambda choice: choice[1].casefold())
    return russian, others
