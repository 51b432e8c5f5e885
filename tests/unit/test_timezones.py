"""The portal's time zone: the one helper every date goes through, what the CRM reports, the admin's override."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from marshmallow import ValidationError

from app.core.models import Portal
from app.core.timezones import local_today, portal_zone, zone_for_offset, zone_label, zone_name
from app.crm.errors import CrmError
from app.crm.port import CrmTimeZone
from app.domain import reports, timezones
from tests.unit.fake_crm import InMemoryCrm

LATE_UTC = datetime(2026, 11, 30, 21, 30, tzinfo=UTC)  # 30.11 in London, 01.12 in Moscow and Novosibirsk
SUMMER = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_helper_defaults_to_moscow_only_for_a_portal_without_a_known_zone() -> None:
    assert zone_name(Portal(timezone="Asia/Novosibirsk")) == "Asia/Novosibirsk"
    assert zone_name(Portal(timezone="Mars/Olympus")) == "Europe/Moscow"
    assert zone_name(Portal(timezone="")) == "Europe/Moscow"
    assert str(portal_zone(Portal(timezone="America/New_York"))) == "America/New_York"


def test_today_is_the_portals_calendar_day() -> None:
    assert local_today(Portal(timezone="Asia/Novosibirsk"), LATE_UTC) == date(2026, 12, 1)
    assert local_today(Portal(timezone="America/New_York"), LATE_UTC) == date(2026, 11, 30)
    assert reports.today(Portal(timezone="Europe/London"), LATE_UTC) == date(2026, 11, 30)


def test_labels_are_readable_in_both_languages() -> None:
    assert zone_label("Europe/Moscow", "ru", SUMMER) == "МСК (UTC+3)"
    assert zone_label("Europe/Moscow", "en", SUMMER) == "Moscow (UTC+3)"
    assert zone_label("Asia/Novosibirsk", "ru", SUMMER) == "Новосибирск (UTC+7)"
    assert zone_label("America/New_York", "en", SUMMER) == "New York (UTC-4)"
    assert zone_label("America/New_York", "en", LATE_UTC) == "New York (UTC-5)"
    assert zone_label("Asia/Kolkata", "en", SUMMER) == "Kolkata (UTC+5:30)"
    assert zone_label("Etc/GMT-7", "ru", SUMMER) == "UTC+7"


def test_a_whole_hour_offset_has_a_fixed_zone() -> None:
    assert zone_for_offset(timedelta(hours=7)) == "Etc/GMT-7"
    assert zone_for_offset(timedelta(hours=-5)) == "Etc/GMT+5"
    assert zone_for_offset(timedelta(0)) == "UTC"
    assert zone_for_offset(timedelta(hours=5, minutes=30)) is None


@pytest.mark.parametrize(
    ("reported", "current", "chosen"),
    [
        (CrmTimeZone("Asia/Novosibirsk", timedelta(hours=7)), "Europe/Moscow", "Asia/Novosibirsk"),
        (CrmTimeZone("America/New_York", None), "Europe/Moscow", "America/New_York"),
        # Bitrix24: the admin follows the portal's zone (no name); the server's offset decides
        (CrmTimeZone(None, timedelta(hours=3)), "Europe/Moscow", "Europe/Moscow"),
        (CrmTimeZone(None, timedelta(hours=7)), "Europe/Moscow", "Etc/GMT-7"),
        # the admin's own zone is not the portal's: the offset wins
        (CrmTimeZone("Asia/Novosibirsk", timedelta(hours=3)), "Europe/Moscow", "Europe/Moscow"),
        (CrmTimeZone("", None), "Europe/Moscow", None),
    ],
)
def test_the_zone_the_crm_reports(reported: CrmTimeZone, current: str, chosen: str | None) -> None:
    assert timezones.from_crm(reported, current, SUMMER) == chosen


def test_refresh_reads_the_crm_once_a_day_and_keeps_the_admins_choice(portal: Portal, crm: InMemoryCrm) -> None:
    crm.zone = CrmTimeZone("Asia/Novosibirsk", timedelta(hours=7))
    assert timezones.refresh(portal, crm, SUMMER, force=True)
    assert portal.timezone == "Asia/Novosibirsk"
    crm.zone = CrmTimeZone("Asia/Yekaterinburg", timedelta(hours=5))
    assert not timezones.refresh(portal, crm, SUMMER + timedelta(hours=23))
    assert portal.timezone == "Asia/Novosibirsk"
    timezones.set_override(portal, "America/New_York")
    assert timezones.refresh(portal, crm, SUMMER + timedelta(hours=25))
    assert portal.timezone == "America/New_York"
    assert timezones.state(portal, "en")["crm"] == "Asia/Yekaterinburg"
    timezones.set_override(portal, "")
    assert portal.timezone == "Asia/Yekaterinburg"


def test_a_crm_that_does_not_answer_changes_nothing(portal: Portal, crm: InMemoryCrm) -> None:
    portal.timezone = "Asia/Omsk"
    crm.fail_next("time_zone", CrmError("down"))
    assert not timezones.refresh(portal, crm, SUMMER, force=True)
    assert portal.timezone == "Asia/Omsk"


@pytest.mark.parametrize("value", ["Moscow", "Asia/Atlantis", 7, "Asia/Novosibirsk\x00"])
def test_an_unknown_override_is_refused_naming_the_field(portal: Portal, value: object) -> None:
    before = portal.timezone
    with pytest.raises(ValidationError) as refused:
        timezones.set_override(portal, value)
    assert refused.value.messages == {"time_zone": ["Unknown time zone."]}
    assert portal.timezone == before
