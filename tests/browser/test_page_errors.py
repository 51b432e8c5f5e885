"""Every error path of the app pages in a real Chromium, in Russian and in English: a sentence in the page's
language next to each wrong field, never raw JSON or an English message on a Russian page; a frame the app
cannot verify is an HTML page in the frame's language."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from sandbox.mount import mount_responses
from tests.browser.conftest import LiveServer, post_frame
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import add_people, configure_exchange, create_incoming, token

pytestmark = pytest.mark.browser

TEXT = {
    "ru": {
        "settings": "Настройки",
        "save": "Сохранить",
        "exchange": "Биржа лидов",
        "sla": "Исправьте ошибки: Срок проверки ОКК, часов: Допустимо от 1 до 720.",
        "pool": "Выберите пользователя «Биржа лидов»: без него воронка не раздаёт сделки.",
        "taken": "Эту сделку уже взял другой менеджер.",
        "reason": "Укажите причину возврата.",
        "frame": "Приложение не установлено на этом портале.",
        "bad_frame": "Страница открыта не из CRM или с неполными данными.",
    },
    "en": {
        "settings": "Settings",
        "save": "Save",
        "exchange": "Lead exchange",
        "sla": "Please fix: QA review deadline, hours: Allowed: 1 to 720.",
        "pool": "Choose the pool user: without one the pipeline cannot route deals.",
        "taken": "Another manager has already taken this deal.",
        "reason": "Give a reason for returning the deal.",
        "frame": "The app is not installed on this portal.",
        "bad_frame": "The page was not opened from the CRM, or its data is incomplete.",
    },
}
RAW = re.compile(r"[{}\[\]]|_[a-z]|\bthe\b")  # JSON, snake_case keys, English sentences


@pytest.fixture
def b24(app: Flask, live_server: LiveServer) -> Iterator[B24]:
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        harness.install()
        yield harness


def open_app(page: Page, live_server: LiveServer, b24: B24, user_id: int, language: str) -> None:
    post_frame(page, f"{live_server.url}/b24/app?DOMAIN={b24.portal.domain}&LANG={language}", b24.frame(user_id))


def no_raw(text: str, language: str) -> None:
    assert not RAW.search(text) or (language == "en" and "{" not in text), text


@pytest.mark.parametrize("language", ["ru", "en"])
def test_settings_errors_are_sentences_next_to_their_fields(b24: B24, live_server: LiveServer, page: Page, language):
    words = TEXT[language]
    open_app(page, live_server, b24, 1, language)
    page.get_by_role("tab", name=words["settings"]).click()
    form = page.locator("#rc-settings")
    expect(form.locator('input[name="review_sla_hours"]')).to_have_value("24")
    form.locator('input[name="review_sla_hours"]').fill("0")
    form.get_by_role("button", name=words["save"]).click()
    result = page.locator("#rc-settings-result")
    expect(result).to_have_text(words["sla"])
    expect(form.locator('.rc-field-error[data-field="review_sla_hours"]')).to_be_visible()
    expect(form.locator('input[name="review_sla_hours"]')).to_have_attribute("aria-invalid", "true")
    no_raw(result.inner_text(), language)

    exchange = page.locator("#rc-exchange-settings")
    block = exchange.locator('[data-pipeline="0"]')
    block.locator('select[name="mode"]').select_option("exchange")
    block.locator('select[name="pool_user"]').select_option("")
    exchange.get_by_role("button").last.click()
    note = block.locator('.rc-field-error[data-field="pipelines.0.pool_user"]')
    expect(note).to_have_text(words["pool"])
    outcome = page.locator("#rc-exchange-settings-result")
    expect(outcome).to_contain_text(words["pool"])
    no_raw(outcome.inner_text(), language)


@pytest.mark.parametrize("language", ["ru", "en"])
def test_exchange_refusals_are_sentences(b24: B24, live_server: LiveServer, page: Page, language: str):
    words = TEXT[language]
    configure_exchange(b24.our_portal())
    create_incoming(b24, title="Заявка с сайта")
    open_app(page, live_server, b24, 2, language)
    page.get_by_role("tab", name=words["exchange"]).click()
    row = page.locator("#rc-exchange-lots tbody tr", has_text="Заявка с сайта")
    expect(row).to_have_count(1)
    lot_id = row.get_attribute("data-lot")
    taken = b24.client.post(f"/api/exchange/lots/{lot_id}/claim", headers=token(b24.our_portal().id, 3))
    assert taken.status_code == 200
    row.get_by_role("button").click()
    expect(page.locator("#rc-exchange-result")).to_have_text(words["taken"])

    open_app(page, live_server, b24, 3, language)
    page.get_by_role("tab", name=words["exchange"]).click()
    mine = page.locator("#rc-exchange-mine tbody tr", has_text="Заявка с сайта")
    mine.get_by_role("button").click()
    expect(page.locator("#rc-exchange-result")).to_have_text(words["reason"])


@pytest.mark.parametrize("language", ["ru", "en"])
def test_a_frame_the_app_cannot_verify_is_a_page_in_its_language(
    b24: B24, live_server: LiveServer, page: Page, language: str
):
    words = TEXT[language]
    post_frame(page, f"{live_server.url}/b24/app?LANG={language}", {**b24.frame(1), "member_id": "nobody"})
    expect(page.locator("#rc-frame-error")).to_have_text(words["frame"])
    expect(page.locator("html")).to_have_attribute("lang", language)
    post_frame(page, f"{live_server.url}/b24/placement/deal-tab?LANG={language}", {"member_id": ""})
    expect(page.locator("#rc-frame-error")).to_have_text(words["bad_frame"])


@pytest.mark.parametrize("language", ["ru", "en"])
def test_cpl_errors_name_the_field_and_the_source(b24: B24, live_server: LiveServer, page: Page, language: str):
    words = TEXT[language]
    open_app(page, live_server, b24, 1, language)
    page.get_by_role("tab", name=words["settings"]).click()
    cpl = page.locator("#rc-cpl")
    web = cpl.locator('input[name="by_source"][data-key="WEB"]')
    expect(web).to_be_visible()
    cpl.locator('input[name="currency"]').fill("RU")
    web.fill("дорого")
    cpl.get_by_role("button", name=words["save"]).click()
    result = page.locator("#rc-cpl-result")
    if language == "ru":
        expect(result).to_contain_text("Нужно ровно 3 символа, например RUB.")
        expect(result).to_contain_text("Веб-сайт: Введите число, например 1500 или 1500,50.")
    else:
        expect(result).to_contain_text("Exactly 3 characters, e.g. RUB.")
        expect(result).to_contain_text("Веб-сайт: Enter a number, e.g. 1500 or 1500.50.")
    expect(cpl.locator('.rc-field-error[data-field="by_source.WEB"]')).to_be_visible()
    assert "{" not in result.inner_text() and "by_source" not in result.inner_text()
