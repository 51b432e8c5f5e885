"""Role-aware navigation of the app page in a real Chromium, in Russian and English: each role sees only the tabs
it can use and starts on the one it needs; an admin's status tab shows the install's health."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import MANAGER, QA, case_in_review

pytestmark = pytest.mark.browser
ADMIN, HEAD = 1, 9

TABS = {
    "ru": {
        ADMIN: ["Настройки", "Состояние", "Отчёты", "Очередь ОКК", "Биржа лидов", "Задачи"],
        HEAD: ["Отчёты", "Очередь ОКК", "Биржа лидов", "Задачи"],
        QA: ["Очередь ОКК"],
        MANAGER: ["Мои отказы", "Биржа лидов"],
    },
    "en": {
        ADMIN: ["Settings", "Status", "Reports", "QA queue", "Lead exchange", "Tasks"],
        HEAD: ["Reports", "QA queue", "Lead exchange", "Tasks"],
        QA: ["QA queue"],
        MANAGER: ["My refusals", "Lead exchange"],
    },
}
START_PANEL = {ADMIN: "#tab-settings", HEAD: "#tab-reports", QA: "#tab-queue", MANAGER: "#tab-queue"}


@pytest.mark.parametrize("language", ["ru", "en"])
def test_each_role_sees_its_tabs_and_starts_where_it_works(app, live_server, page: Page, language: str):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        configure_guard(harness.our_portal())
        deal_id, _case = case_in_review(harness)
        case_in_review(harness, manager=3)
        for user, tabs in TABS[language].items():
            post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={language}", harness.frame(user))
            expect(page.get_by_role("tab")).to_have_text(tabs)
            expect(page.get_by_role("tab").first).to_have_attribute("aria-selected", "true")
            expect(page.locator(START_PANEL[user])).to_be_visible()
            expect(page.locator("[role=tabpanel]:visible")).to_have_count(1)
            if user in (QA, MANAGER):
                expect(page.locator("#rc-queue tbody tr")).to_have_count(2 if user == QA else 1)
            if user == MANAGER:
                expect(page.locator("#rc-queue tbody tr a")).to_have_text(
                    harness.sandbox.deal(portal, deal_id)["TITLE"]
                )
                expect(page.locator('#rc-queue-filters select[name="manager"]')).to_have_count(0)
                expect(page.locator('#rc-queue th[data-col="manager"]')).to_have_count(0)
                expect(page.locator("#rc-queue tbody tr").first.locator("td")).to_have_count(5)
                expect(page.locator("#rc-tc-rescan")).to_have_count(0)
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={language}", harness.frame(ADMIN))
        page.get_by_role("tab", name=TABS[language][ADMIN][1]).click()
        installed = "Приложение установлено и работает." if language == "ru" else "The app is installed and working."
        expect(page.locator('[data-health="install"] dd')).to_have_text(installed)
        expect(page.locator('[data-health="qa"]')).to_have_attribute("data-ok", "true")
        expect(page.locator('[data-health="events"] dd')).to_contain_text(
            "получено" if language == "ru" else "received"
        )
