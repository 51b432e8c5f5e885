"""Dates in forms read day-first («08.12.2026», «08.12.2026 18:48») whatever the browser's locale: a browser set to
American English (where a native date input shows 12/08/2026 and 6:48 PM) still shows and takes day-first dates
on the reports period and the review tab's callback."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from app.core.db import db
from app.core.models import ReviewCallback, utcnow
from app.domain import reports
from sandbox.mount import mount_responses
from tests.browser.conftest import LiveServer, post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import QA, QA2, case_in_review, tab_form

pytestmark = pytest.mark.browser
HEAD = 9
DAY = re.compile(r"^\d\d\.\d\d\.\d{4}$")


@pytest.fixture
def portal(app: Flask, live_server: LiveServer) -> Iterator[B24]:
    import responses

    sandbox, sandbox_portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=sandbox_portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        configure_guard(harness.our_portal())
        yield harness


@pytest.fixture
def us_page(browser: Browser) -> Iterator[Page]:
    """A page in a browser whose locale is American English."""
    context = browser.new_context(locale="en-US", timezone_id="America/New_York")
    yield context.new_page()
    context.close()


@pytest.mark.parametrize(
    ("language", "tab", "wrong"), [("ru", "Отчёты", "Введите дату"), ("en", "Reports", "Enter the date")]
)
def test_the_report_period_is_day_first_in_an_american_browser(
    portal: B24, live_server: LiveServer, us_page: Page, language: str, tab: str, wrong: str
):
    page = us_page
    post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.portal.domain}&LANG={language}", portal.frame(HEAD))
    page.get_by_role("tab", name=tab).click()
    expect(page.locator("#rc-table-managers, [data-empty='managers']").first).to_be_visible(timeout=10_000)
    start, end = page.locator('input[name="from"]'), page.locator('input[name="to"]')
    today = reports.today(portal.our_portal())
    expect(start).to_have_value(today.replace(day=1).strftime("%d.%m.%Y"))
    expect(end).to_have_value(today.strftime("%d.%m.%Y"))
    assert start.get_attribute("type") == "text"

    # Typed digits get their dots; the report follows the typed period.
    start.fill("")
    start.press_sequentially("01112026")
    expect(start).to_have_value("01.11.2026")
    end.fill("")
    end.press_sequentially("30112026")
    page.locator('#rc-report-period button[type="submit"]').click()
    expect(page.locator("#rc-report-content")).to_have_attribute("data-from", "2026-11-01")
    expect(page.locator("#rc-report-content")).to_have_attribute("data-to", "2026-11-30")
    expect(page.locator("#rc-report-period-label")).to_have_text("01.11.2026 – 30.11.2026")

    # A day that does not exist is refused on the page, in the page's language.
    end.fill("31.02.2026")
    page.locator('#rc-report-period button[type="submit"]').click()
    expect(end).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#rc-report-state")).to_contain_text(wrong)
    expect(page.locator('.rc-field-error[data-field="to"]')).to_contain_text(wrong)
    expect(page.locator("#rc-report-content")).to_have_attribute("data-to", "2026-11-30")

    # A preset writes day-first dates too.
    page.locator('[data-preset="last_month"]').click()
    expect(start).to_have_value(DAY)
    expect(end).not_to_have_attribute("aria-invalid", "true")


def test_the_callback_time_is_day_first_in_an_american_browser(portal: B24, live_server: LiveServer, us_page: Page):
    page = us_page
    deal_id, case = case_in_review(portal)
    fields = tab_form(portal, QA, deal_id)
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    url = f"{live_server.url}/b24/placement/deal-tab?DOMAIN={portal.portal.domain}&LANG=ru"
    page.set_content(f'<form id="f" method="post" action="{url}">{inputs}</form>')
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    page.get_by_role("button", name="Записи не подтверждают", exact=True).click()
    callback = page.locator('form[data-group="callback"]')
    expect(callback).to_be_visible()
    at = callback.locator('input[name="at"]')
    expect(at).to_have_value(re.compile(r"^\d\d\.\d\d\.\d{4} \d\d:\d\d$"))
    expect(at).to_have_attribute("placeholder", "ДД.ММ.ГГГГ ЧЧ:ММ")

    at.fill("")
    at.press_sequentially("3102")
    expect(at).to_have_value("31.02")
    at.fill("31.02.2027 10:00")
    callback.locator('select[name="assignee"]').select_option(str(QA2))
    page.get_by_role("button", name="Назначить звонок", exact=True).click()
    expect(page.locator('.rc-field-error[data-field="at"]')).to_have_text(
        "Введите дату и время в виде ДД.ММ.ГГГГ ЧЧ:ММ, например 08.12.2026 18:48."
    )
    expect(page.locator("#f-state")).not_to_have_text("Назначен звонок клиенту")

    due = (utcnow() + timedelta(days=1)).astimezone(ZoneInfo("Europe/Moscow")).replace(hour=11, minute=30)
    at.fill("")
    at.press_sequentially(due.strftime("%d%m%Y%H%M"))
    expect(at).to_have_value(due.strftime("%d.%m.%Y %H:%M"))
    expect(page.locator('.rc-field-error[data-field="at"]')).to_have_count(0)
    page.get_by_role("button", name="Назначить звонок", exact=True).click()
    expect(page.locator("#f-state")).to_have_text("Назначен звонок клиенту")
    expect(page.locator("#f-next_callback")).to_contain_text(due.strftime("%d.%m.%Y 11:30"))
    db.session.expire_all()
    stored = db.session.query(ReviewCallback).filter_by(case_id=case.id).one()
    assert stored.due_at.astimezone(ZoneInfo("Europe/Moscow")).strftime("%d.%m.%Y %H:%M") == due.strftime(
        "%d.%m.%Y 11:30"
    )
