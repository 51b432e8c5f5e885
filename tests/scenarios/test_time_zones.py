"""The portal's own time zone on both CRMs: read from the CRM at install (Bitrix24 `profile` + `server.time`,
amoCRM `datetime_settings`), shown on the settings tab and overridable there and with `flask settings set`;
callbacks, duty days, the callback robot and the reports' period use it, not Moscow."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import ReviewCallback, utcnow
from app.crm.factory import client_for
from app.domain import timezones
from tests.integration.b24 import configure_guard
from tests.scenarios.driver import ADMIN, HEAD, MANAGER, OTHER_MANAGER, QA, CrmDriver
from tests.scenarios.steps import Reviewer, case_in_review
from tests.scenarios.test_duty_rota import configure_duty, incoming, put_rota

NOVOSIBIRSK = ZoneInfo("Asia/Novosibirsk")  # UTC+7 all year: midnight there is 17:00 UTC, 21:00 in Moscow


def installed_in(crm: CrmDriver, zone: str) -> CrmDriver:
    """The CRM lives in `zone`; the app is installed; QA 7 and 8, head 9."""
    crm.set_time_zone(zone)
    crm.install()
    configure_guard(crm.portal(), heads=[str(HEAD)])
    db.session.commit()
    return crm


@pytest.fixture
def novosibirsk(bare_crm: CrmDriver) -> CrmDriver:
    return installed_in(bare_crm, "Asia/Novosibirsk")


def zone_settings(crm: CrmDriver, language: str = "ru") -> dict:
    answer = crm.client.get("/api/time-zone", headers={**crm.token(ADMIN, admin=True), "X-RC-Lang": language})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["settings"]


def test_the_install_reads_the_crms_zone_and_the_settings_tab_shows_it(novosibirsk: CrmDriver):
    assert novosibirsk.portal().timezone == "Asia/Novosibirsk"
    shown = zone_settings(novosibirsk)
    assert shown["label"] == "Новосибирск (UTC+7)"
    assert (shown["crm"], shown["override"]) == ("Asia/Novosibirsk", None)
    assert zone_settings(novosibirsk, "en")["label"] == "Novosibirsk (UTC+7)"


def test_a_callback_time_the_reviewer_types_is_the_portals_local_time(novosibirsk: CrmDriver):
    deal_id, case = case_in_review(novosibirsk)
    qa = Reviewer(novosibirsk, QA, deal_id)
    qa.act("recordings_not_confirmed", "На записях о цене ни слова")
    at = (utcnow() + timedelta(hours=2)).astimezone(NOVOSIBIRSK).replace(second=0, microsecond=0)
    qa.act("schedule_callback", at=at.strftime("%Y-%m-%dT%H:%M:%S"), assignee=str(QA))
    due = db.session.scalars(sa.select(ReviewCallback.due_at).where(ReviewCallback.case_id == case.id)).one()
    assert due == at  # 7 hours before the same wall-clock time in UTC, not 3 (Moscow)
    assert at.strftime("%d.%m.%Y %H:%M") in qa.view["callback"]["at"]


def test_the_duty_manager_is_picked_by_the_portals_own_day(novosibirsk: CrmDriver):
    novosibirsk.add_pool_user()
    configure_duty(novosibirsk)
    midnight = datetime.combine(datetime.now(NOVOSIBIRSK).date(), time(), NOVOSIBIRSK)
    yesterday, today = (midnight - timedelta(days=1)).date(), midnight.date()
    assert put_rota(novosibirsk, {yesterday: MANAGER, today: OTHER_MANAGER}).status_code == 200
    # 23:59 and 00:01 in Novosibirsk are 20:59 and 21:01 of one Moscow day: only the portal's own zone parts them.
    novosibirsk.set_clock(midnight - timedelta(minutes=1))
    late = incoming(novosibirsk, title="В 23:59")
    novosibirsk.set_clock(midnight + timedelta(minutes=1))
    early = incoming(novosibirsk, title="В 00:01")
    assert novosibirsk.responsible(late) == MANAGER
    assert novosibirsk.responsible(early) == OTHER_MANAGER


def test_the_callback_robot_sets_the_hour_in_the_portals_zone(novosibirsk: CrmDriver):
    deal = novosibirsk.new_deal(manager=OTHER_MANAGER)
    assert novosibirsk.callback_robot(deal, days="2", hour="9", text="Перезвонить утром") == ""
    due = datetime.combine(datetime.now(NOVOSIBIRSK).date() + timedelta(days=2), time(9), tzinfo=NOVOSIBIRSK)
    [task] = [task for task in novosibirsk.deal_tasks(deal) if task.title.startswith("Перезвонить утром")]
    assert task.deadline is not None and abs((task.deadline - due).total_seconds()) < 1


def test_the_reports_today_and_period_line_are_the_portals(novosibirsk: CrmDriver):
    today = datetime.now(NOVOSIBIRSK).date()
    report = novosibirsk.client.get("/api/reports", headers=novosibirsk.token(HEAD)).get_json()
    assert report["period"] == {
        "from": today.replace(day=1).isoformat(),
        "to": today.isoformat(),
        "timezone": "Asia/Novosibirsk",
    }
    day = today.isoformat()
    page = novosibirsk.client.get(f"/api/reports/view?from={day}&to={day}", headers=novosibirsk.token(HEAD))
    assert '(<span id="rc-report-zone" title="Asia/Novosibirsk">Новосибирск (UTC+7)</span>)' in page.text


def test_an_english_portal_in_new_york(bare_crm: CrmDriver):
    crm = installed_in(bare_crm, "America/New_York")
    assert crm.portal().timezone == "America/New_York"
    day = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    page = crm.client.get(f"/api/reports/view?from={day}&to={day}", headers={**crm.token(HEAD), "X-RC-Lang": "en"})
    assert "New York (UTC-" in page.text


def test_an_admin_overrides_the_zone_on_the_settings_tab(novosibirsk: CrmDriver):
    headers = {**novosibirsk.token(ADMIN, admin=True), "X-RC-Lang": "en"}
    bad = novosibirsk.client.put("/api/time-zone", json={"time_zone": "Novosibirsk"}, headers=headers)
    assert bad.status_code == 400
    assert bad.get_json()["field_errors"]["time_zone"]["text"].startswith("Unknown time zone")
    assert novosibirsk.portal().timezone == "Asia/Novosibirsk"
    manager = novosibirsk.client.put(
        "/api/time-zone", json={"time_zone": "Asia/Omsk"}, headers=novosibirsk.token(MANAGER)
    )
    assert manager.status_code == 403
    saved = novosibirsk.client.put("/api/time-zone", json={"time_zone": "Asia/Omsk"}, headers=headers)
    assert saved.status_code == 200, saved.get_json()
    assert saved.get_json()["settings"]["label"] == "Omsk (UTC+6)"
    db.session.expire_all()
    assert novosibirsk.portal().timezone == "Asia/Omsk"
    # The daily reading of the CRM keeps the admin's choice.
    assert timezones.refresh(novosibirsk.portal(), client_for(novosibirsk.portal()), force=True)
    assert novosibirsk.portal().timezone == "Asia/Omsk"
    cleared = novosibirsk.client.put("/api/time-zone", json={"time_zone": ""}, headers=headers)
    assert cleared.get_json()["settings"]["time_zone"] == "Asia/Novosibirsk"


def test_an_admin_overrides_the_zone_from_the_command_line(novosibirsk: CrmDriver):
    runner = novosibirsk.app.test_cli_runner()
    portal = novosibirsk.portal().external_id
    result = runner.invoke(settings_cli, ["set", portal, "time_zone=America/New_York"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert novosibirsk.portal().timezone == "America/New_York"
    shown = runner.invoke(settings_cli, ["show", portal])
    assert '"time_zone": "America/New_York"' in shown.output
    wrong = runner.invoke(settings_cli, ["set", portal, "time_zone=Mars/Olympus"])
    assert wrong.exit_code != 0 and "Unknown time zone" in wrong.output
    db.session.expire_all()
    assert novosibirsk.portal().timezone == "America/New_York"
