"""Which time zone a portal lives in: the one its CRM reports (read at install and once a day by the
reconciliation), unless an admin chose another on the settings page or with `flask settings set`.

Stored in `portal.settings["time_zone"]` = {"crm": name or None, "override": name or None, "checked_at": ISO},
and the zone in force in `portal.timezone`, which every date goes through (app.core.timezones.portal_zone).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.db import db
from app.core.models import Portal, utcnow
from app.core.queue import get_redis
from app.core.timezones import DEFAULT_ZONE, valid_zone, zone_for_offset, zone_label, zone_name
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.port import CrmClient, CrmTimeZone

log = logging.getLogger(__name__)
SECTION = "time_zone"
FIELD = "time_zone"
REFRESH_EVERY = timedelta(hours=24)
FIRST_READ_KEY = "rc:lock:tz-first-read:{portal_id}"  # one attempt at a time, and at most one per pause
FIRST_READ_PAUSE_SECONDS = 600
UNKNOWN = "Unknown time zone."

i18n.register(
    {
        "tz_settings": ("Часовой пояс", "Time zone"),
        "tz_settings_hint": (
            "Все даты приложения — перезвоны, отчёты, «сегодня», дежурства, сроки задач, сводки — считаются "
            "в этом поясе. Его сообщает CRM; укажите другой, если CRM сообщает не тот.",
            "Every date the app computes or shows (callbacks, reports, «today», duty days, task deadlines, "
            "digests) is in this zone. The CRM reports it; choose another if the CRM reports the wrong one.",
        ),
        "tz_settings_current": ("Сейчас действует", "In force"),
        "tz_settings_from_crm": ("Из CRM", "From the CRM"),
        "tz_settings_unknown": ("CRM ещё не сообщила", "not reported yet"),
        "tz_settings_override": ("Пояс приложения", "The app's zone"),
        "tz_settings_follow_crm": ("Как в CRM", "As in the CRM"),
        "tz_settings_russia": ("Россия", "Russia"),
        "tz_settings_other": ("Другие страны", "Other countries"),
    }
)


def _stored(portal: Portal) -> dict[str, Any]:
    value = (portal.settings or {}).get(SECTION)
    if isinstance(value, dict):
        return dict(value)
    # Nothing recorded yet: the zone in force came from the CRM (an earlier install) or is the default.
    return {"crm": portal.timezone if valid_zone(portal.timezone) else None, "override": None}


def _store(portal: Portal, values: dict[str, Any]) -> None:
    settings = dict(portal.settings or {})
    settings[SECTION] = values
    portal.settings = settings
    flag_modified(portal, "settings")
    override, crm = values.get("override"), values.get("crm")
    portal.timezone = next((str(z) for z in (override, crm) if valid_zone(z)), DEFAULT_ZONE)


def from_crm(reported: CrmTimeZone, current: str, now: datetime | None = None) -> str | None:
    """The zone to use from what the CRM reported: its name when that agrees with its offset now; else the zone
    in force when it has that offset (a Moscow portal stays Europe/Moscow); else a fixed zone of that offset
    (`Etc/GMT-7`); None when the CRM said nothing usable."""
    moment = now or utcnow()
    offset = reported.offset
    if reported.name and valid_zone(reported.name):
        if offset is None or moment.astimezone(ZoneInfo(reported.name)).utcoffset() == offset:
            return reported.name
    if offset is None:
        return None
    if valid_zone(current) and moment.astimezone(ZoneInfo(current)).utcoffset() == offset:
        return current
    return zone_for_offset(offset)


def refresh(portal: Portal, crm: CrmClient, now: datetime | None = None, force: bool = False) -> bool:
    """Read the zone the CRM reports and store it (at install with `force`, else at most once a day). An
    admin's override stays in force. False when nothing was read (too soon, or the CRM did not answer)."""
    moment = now or utcnow()
    stored = _stored(portal)
    checked = stored.get("checked_at")
    if not force and isinstance(checked, str):
        try:
            if moment - datetime.fromisoformat(checked) < REFRESH_EVERY:
                return False
        except (TypeError, ValueError):
            pass
    try:
        reported = crm.time_zone()
    except PortalNeedsReinstall:
        raise
    except CrmError as error:
        log.warning("time zone not read", extra={"portal_id": portal.id, "error": error.code})
        return False
    chosen = from_crm(reported, str(stored.get("crm") or portal.timezone or ""), moment)
    _store(portal, {**stored, "crm": chosen or stored.get("crm"), "checked_at": moment.isoformat()})
    return True


def never_read(portal: Portal) -> bool:
    """Whether the portal's zone was never read from its CRM (installed before zones were read, or the install
    could not read it): it is then Moscow by default, not the CRM's."""
    return not _stored(portal).get("checked_at")


def read_on_first_open(portal: Portal, crm: CrmClient) -> bool:
    """The app's page opens for an installed portal whose zone was never read: read it from the CRM now, so the
    page already shows it. One page at a time tries, at most once per pause while the CRM does not answer (the
    daily reconciliation tries too). True when a zone was read and stored (the caller commits)."""
    if portal.status != "installed" or not never_read(portal):
        return False
    try:
        key = FIRST_READ_KEY.format(portal_id=portal.id)
        if not get_redis().set(key, "1", nx=True, ex=FIRST_READ_PAUSE_SECONDS):
            return False
    except RedisError as error:
        log.warning("time zone first read not coordinated", extra={"portal_id": portal.id, "error": str(error)})
    try:
        return refresh(portal, crm, force=True)
    except PortalNeedsReinstall:
        db.session.refresh(portal)  # flagged in the token store's own session: the page shows the banner
        return False


def set_override(portal: Portal, value: Any) -> dict[str, Any]:
    """An admin's own zone (an IANA name such as Asia/Novosibirsk); empty or null follows the CRM again.
    Raises ValidationError naming `time_zone` for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        override = None
    elif isinstance(value, str) and valid_zone(value.strip()):
        override = value.strip()
    else:
        raise ValidationError({FIELD: [UNKNOWN]})
    _store(portal, {**_stored(portal), "override": override})
    return state(portal)


def state(portal: Portal, language: str | None = None) -> dict[str, Any]:
    """What the settings page and the CLI show: the zone in force (name and label), the CRM's, the override."""
    stored = _stored(portal)
    language = language or portal.language
    crm = stored.get("crm") if valid_zone(stored.get("crm")) else None
    current = zone_name(portal)
    return {
        "time_zone": current,
        "label": zone_label(current, language),
        "crm": crm,
        "crm_label": zone_label(crm, language) if crm else "",
        "override": stored.get("override") if valid_zone(stored.get("override")) else None,
        "default": DEFAULT_ZONE,
    }
