"""The portal's own time zone on both CRMs: read from the CRM at install (Bitrix24 `profile` + `server.time`,
amoCRM `datetime_settings`), shown on the settings tab and overridable there and with `flask settings set`;
callbacks, duty days, the callback robot and the reports' period use it, not Moscow."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import ReviewCallback, utcnow
from app.crm.factory import client_for
from app.domain import recovery, timezones
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


def installed_before_zones_were_read(crm: CrmDriver) -> None:
    """Our row as an install made before the app read zones left it: Moscow by default, nothing read."""
    portal = crm.portal()
    portal.settings = {key: value for key, value in (portal.settings or {}).items() if key != timezones.SECTION}
    portal.timezone = "Europe/Moscow"
    db.session.commit()


def test_the_first_page_opened_reads_the_zone_the_install_did_not(novosibirsk: CrmDriver):
    installed_before_zones_were_read(novosibirsk)
    assert timezones.never_read(novosibirsk.portal())

    page = novosibirsk.open_app(HEAD)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert novosibirsk.portal().timezone == "Asia/Novosibirsk"
    report = novosibirsk.client.get("/api/reports", headers=novosibirsk.token(HEAD)).get_json()
    assert report["period"]["timezone"] == "Asia/Novosibirsk"
    admin_page = novosibirsk.open_app(ADMIN).get_data(as_text=True)
    assert '<strong id="rc-tz-current" title="Asia/Novosibirsk">Новосибирск (UTC+7)</strong>' in admin_page
    assert '<span id="rc-tz-crm">Новосибирск (UTC+7)</span>' in admin_page

    # Read once: later pages do not ask the CRM again (the daily reconciliation follows its changes).
    novosibirsk.set_time_zone("Asia/Omsk")
    assert novosibirsk.open_app(HEAD).status_code == 200
    assert novosibirsk.portal().timezone == "Asia/Novosibirsk"


def test_a_page_opened_after_the_zone_was_read_keeps_the_admins_choice(novosibirsk: CrmDriver):
    headers = novosibirsk.token(ADMIN, admin=True)
    assert novosibirsk.client.put("/api/time-zone", json={"time_zone": "Asia/Omsk"}, headers=headers).status_code == 200
    novosibirsk.set_time_zone("America/New_York")
    assert novosibirsk.open_app(ADMIN).status_code == 200
    assert novosibirsk.portal().timezone == "Asia/Omsk"
    assert zone_settings(novosibirsk)["crm"] == "Asia/Novosibirsk", "read at install, not again on every page"


def recovered_deals_csv(crm: CrmDriver, day: date) -> list[dict[str, str]]:
    """The «returned from false refusals» deals of one portal day, as the CSV download lists them."""
    answer = crm.client.get(
        f"/api/reports/recovered_deals.csv?from={day.isoformat()}&to={day.isoformat()}", headers=crm.token(HEAD)
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return list(csv.DictReader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff")), delimiter=";"))


def test_the_reports_csv_dates_are_the_portals_days(novosibirsk: CrmDriver, monkeypatch: pytest.MonkeyPatch):
    # QA finds the refusal false and returns the deal to sales (the callback typed in Novosibirsk time).
    deal_id, _case = case_in_review(novosibirsk)
    qa = Reviewer(novosibirsk, QA, deal_id)
    qa.act("recordings_none")
    at = (utcnow() + timedelta(minutes=30)).astimezone(NOVOSIBIRSK).strftime("%Y-%m-%dT%H:%M:%S")
    qa.act("schedule_callback", at=at, assignee=str(QA))
    qa.act("client_denies", "Клиент ждёт КП", stage_id=novosibirsk.stage_id("late working"))
    novosibirsk.settle()
    utc_day = datetime.now(UTC).date() + timedelta(days=1)
    closed = datetime.combine(utc_day, time(22, 30), UTC)  # 05:30 of the next day in Novosibirsk
    novosibirsk.set_clock(closed)  # the CRM moves the deal then
    monkeypatch.setattr(recovery, "utcnow", lambda: closed)  # and the app sees it then
    novosibirsk.move(deal_id, "won", by=novosibirsk.responsible(deal_id))
    novosibirsk.settle()
    local_day = utc_day + timedelta(days=1)

    [row] = recovered_deals_csv(novosibirsk, local_day)
    assert row["Закрыта"] == local_day.strftime("%d.%m.%Y")

    # The same close in a New York portal is still the UTC day there (17:30 or 18:30).
    headers = novosibirsk.token(ADMIN, admin=True)
    assert (
        novosibirsk.client.put("/api/time-zone", json={"time_zone": "America/New_York"}, headers=headers).status_code
        == 200
    )
    [row] = recovered_deals_csv(novosibirsk, utc_day)
    assert row["Закрыта"] == utc_day.strftime("%d.%m.%Y")
