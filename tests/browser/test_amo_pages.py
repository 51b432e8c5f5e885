"""Every amoCRM page in a real Chromium, in Russian and English, like the Bitrix24 ones: the main page's tabs per
role (opened from the widget's settings window or the left menu), the lead tab's QA review, and the errors: a
wrong field on the settings tab and a page that cannot be opened are sentences in the page's language."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from app.core.db import db
from handlers.amo_verify import issue_ticket
from tests.browser.conftest import LiveServer
from tests.integration.amo import Amo, make_amo
from tests.integration.amo_review_helpers import lead_in_review
from tests.integration.b24 import configure_guard

pytestmark = pytest.mark.browser
ADMIN, MANAGER, QA, HEAD = 1, 2, 7, 9

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
TEXT = {
    "ru": {
        "sla": "Исправьте ошибки: Срок проверки ОКК, часов: Допустимо от 1 до 720.",
        "save": "Сохранить",
        "expired": "Ссылка на страницу устарела или уже открыта.",
        "what": "Обновите страницу amoCRM",
        "review": "Проверка отказа",
    },
    "en": {
        "sla": "Please fix: QA review deadline, hours: Allowed: 1 to 720.",
        "save": "Save",
        "expired": "The link to this page has expired or was already used.",
        "what": "Reload the amoCRM page",
        "review": "Refusal review",
    },
}
RAW = re.compile(r"[{}\[\]]|_[a-z]")  # JSON, snake_case keys


@pytest.fixture
def amo(app: Flask, live_server: LiveServer) -> Iterator[Amo]:
    """An installed sandbox amoCRM account with the guard configured; the browser opens our pages as the
    widget's iframe does (a ticket from the widget's verified token)."""
    import responses

    from sandbox.amocrm import mount_amo_responses

    sandbox, account = make_amo(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_amo_responses(sandbox, mock)
        mock.add_passthru(live_server.url)
        harness = Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)
        harness.install()
        configure_guard(harness.our_portal())
        yield harness


def set_language(amo: Amo, language: str) -> None:
    portal = amo.our_portal()
    portal.language = language
    db.session.commit()


def open_page(page: Page, live_url: str, amo: Amo, user: int, lead_id: str = "") -> None:
    portal = amo.our_portal()
    ticket = issue_ticket(portal.id, str(user), user == ADMIN, lead_id)
    page.goto(f"{live_url}/amocrm/app?ticket={ticket}&lang={portal.language}")


@pytest.mark.parametrize("language", ["ru", "en"])
def test_each_role_sees_its_tabs_on_the_amocrm_main_page(amo: Amo, live_server, page: Page, language: str):
    lead_in_review(amo)
    set_language(amo, language)
    for user, tabs in TABS[language].items():
        open_page(page, live_server.url, amo, user)
        expect(page.get_by_role("tab")).to_have_text(tabs, timeout=10_000)
        expect(page.get_by_role("tab").first).to_have_attribute("aria-selected", "true")
        expect(page.locator(START_PANEL[user])).to_be_visible()
        expect(page.locator("[role=tabpanel]:visible")).to_have_count(1)
        expect(page.locator("body")).to_have_class("rc-crm-amocrm")
        if user in (QA, MANAGER):
            expect(page.locator("#rc-queue tbody tr")).to_have_count(1)


@pytest.mark.parametrize("language", ["ru", "en"])
def test_the_lead_tab_shows_the_review_to_qa(amo: Amo, live_server, page: Page, language: str):
    lead_id, case = lead_in_review(amo)
    set_language(amo, language)
    open_page(page, live_server.url, amo, int(case.qa_user_id), str(lead_id))
    expect(page.locator("h1")).to_contain_text(TEXT[language]["review"], timeout=10_000)
    expect(page.locator("#rc-no-case")).to_have_count(0)
    # A lead has no currency of its own: its amount is in the account's («150 000 ₽»), as on Bitrix24.
    amount = "150\u00a0000\u00a0₽" if language == "ru" else "150,000\u00a0₽"
    expect(page.locator("#f-amount")).to_have_text(amount)
    expect(page.locator("body")).to_have_class("rc-crm-amocrm")


@pytest.mark.parametrize("language", ["ru", "en"])
def test_amocrm_page_errors_are_sentences_in_the_pages_language(amo: Amo, live_server, page: Page, language: str):
    set_language(amo, language)
    text = TEXT[language]
    # A wrong field on the admin's settings tab: a sentence next to the form, never raw JSON.
    open_page(page, live_server.url, amo, ADMIN)
    form = page.locator("#rc-settings")
    expect(form.locator('input[name="review_sla_hours"]')).to_have_value("24", timeout=10_000)
    form.locator('input[name="review_sla_hours"]').fill("0")
    form.get_by_role("button", name=text["save"]).click()
    result = page.locator("#rc-settings-result")
    expect(result).to_have_text(text["sla"])
    expect(form.locator('.rc-field-error[data-field="review_sla_hours"]')).to_be_visible()
    assert not RAW.search(result.inner_text()) or (language == "en" and "{" not in result.inner_text())
    # A link opened twice (or after it expired): an HTML page in the account's language, not JSON.
    portal = amo.our_portal()
    url = f"{live_server.url}/amocrm/app?ticket={issue_ticket(portal.id, str(ADMIN), True)}&lang={language}"
    page.goto(url)
    expect(page.get_by_role("tab").first).to_be_visible(timeout=10_000)
    answer = page.goto(url)
    assert answer is not None and answer.status == 401
    expect(page.locator("#rc-frame-error")).to_have_text(text["expired"])
    expect(page.locator(".rc-note")).to_contain_text(text["what"])
    expect(page.locator("html")).to_have_attribute("lang", language)
