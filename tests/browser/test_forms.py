"""Forms that read like forms, in a real Chromium (Russian and English): each pipeline's routing as labelled
groups with help texts, the duty rota as a month calendar with weekdays and today marked, saves that say what
they did, and a Tasks tab that refreshes itself after «Проверить сейчас»."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from app.domain import exchange, reports
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import add_people

pytestmark = pytest.mark.browser
ADMIN = 1
WORDS = {
    "ru": {
        "settings": "Настройки",
        "groups": ["Раздача новых сделок", "Входящие источники", "Ограничения", "Крупные сделки"],
        "weekdays": ["Пн", "Вт", "Ср", "Чт", "Пт", "Сб", "Вс"],
        "monday": "понедельник",
        "today": "сегодня",
        "rota_save": "Сохранить график",
        "rota_saved": "График сохранён: дежурных дней в месяце — 1.",
        "tasks": "Задачи",
        "scan": "Проверить сейчас",
        "refreshed": "Проверка закончена, отчёт обновлён.",
    },
    "en": {
        "settings": "Settings",
        "groups": ["Routing new deals", "Incoming sources", "Limits", "Large deals"],
        "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        "monday": "Monday",
        "today": "today",
        "rota_save": "Save the rota",
        "rota_saved": "The rota is saved: duty days this month: 1.",
        "tasks": "Tasks",
        "scan": "Scan now",
        "refreshed": "The scan is done; the report is up to date.",
    },
}


@pytest.mark.parametrize("language", ["ru", "en"])
def test_routing_groups_rota_calendar_and_a_self_refreshing_tasks_tab(app, live_server, page: Page, language: str):
    import responses

    words = WORDS[language]
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        harness.install()
        configure_guard(harness.our_portal())
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={language}", harness.frame(ADMIN))
        expect(page.locator("#tab-settings")).to_be_visible()

        block = page.locator('#rc-exchange-settings [data-pipeline="0"]')
        expect(block.locator(".rc-group > legend")).to_have_text(words["groups"])
        expect(block.locator(".rc-group .rc-note").first).to_be_visible()

        rota = page.locator("#rc-rota")
        calendar = rota.locator("table.rc-rota-calendar")
        expect(calendar.locator("thead th")).to_have_text(words["weekdays"])
        today = reports.today(harness.our_portal())
        cell = calendar.locator(f'td[data-date="{today.isoformat()}"]')
        expect(cell).to_have_attribute("aria-current", "date")
        expect(cell).to_contain_text(words["today"])
        weekday = words["weekdays"][today.weekday()]
        expect(cell.locator("select")).to_have_attribute("aria-label", f"{weekday}, {today.strftime('%d.%m.%Y')}")
        assert not re.search(r"\d{4}-\d\d-\d\d", rota.inner_text()), "no ISO dates on the rota"
        first = today.replace(day=1)
        first_cell = calendar.locator("tbody tr").first.locator("td").nth(first.weekday())
        expect(first_cell).to_have_attribute("data-date", first.isoformat())
        cell.locator("select").select_option("3")
        rota.get_by_role("button", name=words["rota_save"]).click()
        expect(page.locator("#rc-rota-result")).to_have_text(words["rota_saved"])
        department = rota.locator('select[name="department_id"]').input_value()
        assert exchange.rota(harness.our_portal().id, department, today, today) == {today: "3"}

        schedule = page.locator("#rc-schedule")
        weekday = schedule.locator('select[name="weekly_weekday"]')
        expect(weekday.locator("option").first).to_have_text(words["monday"])
        weekday.select_option("5")
        schedule.locator('select[name="weekly_hour"]').select_option(label="18:00")
        schedule.get_by_role("button").click()
        expect(page.locator("#rc-schedule-result")).to_have_attribute("data-outcome", "saved")
        assert reports.report_schedule(harness.our_portal())["weekly"] == {
            **reports.report_schedule(harness.our_portal())["weekly"],
            "weekday": 5,
            "hour": 18,
        }

        page.get_by_role("tab", name=words["tasks"]).click()
        expect(page.locator("#rc-tc-report")).to_have_class(re.compile(r"\brc-table\b"))
        page.get_by_role("button", name=words["scan"]).click()
        expect(page.locator("#rc-tc-state")).not_to_have_text("")
        harness.work()
        expect(page.locator("#rc-tc-state")).to_contain_text(words["refreshed"], timeout=15_000)
