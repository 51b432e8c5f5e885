"""The time-zone section of the settings tab in a real Chromium: the zone in force by its readable name, an admin's
own zone saved (the reports' period line follows it), a wrong name answered in the page's language, and nothing of
it for a head of sales who is not an admin."""

import re

import pytest
import responses
from playwright.sync_api import Page, expect

from app.core.db import db
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
ADMIN, HEAD = 1, 9


@pytest.fixture
def novosibirsk(app) -> B24:
    """A Bitrix24 portal in Novosibirsk (its settings and its admin's profile say so)."""
    sandbox, portal = make_b24(app)
    portal.time_zone = "Asia/Novosibirsk"
    portal.users[ADMIN]["TIME_ZONE"] = "Asia/Novosibirsk"
    return B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)


def open_app(page: Page, live_url: str, b24: B24, user_id: int, lang: str = "ru") -> None:
    post_frame(page, f"{live_url}/b24/app?DOMAIN={b24.portal.domain}&LANG={lang}", b24.frame(user_id))


def test_an_admin_sees_the_zone_in_force_and_chooses_another(novosibirsk: B24, live_server, page: Page):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(novosibirsk.sandbox, mock, passthru=(live_server.url,))
        configure_guard(novosibirsk.install())
        open_app(page, live_server.url, novosibirsk, ADMIN)
        page.get_by_role("tab", name="Настройки").click()
        section = page.locator("#rc-tz-settings")
        expect(section.locator("legend")).to_have_text("Часовой пояс")
        expect(page.locator("#rc-tz-current")).to_have_text("Новосибирск (UTC+7)")
        expect(page.locator("#rc-tz-current")).to_have_attribute("title", "Asia/Novosibirsk")
        expect(page.locator("#rc-tz-crm")).to_have_text("Новосибирск (UTC+7)")
        expect(section.get_by_text("Asia/Novosibirsk")).to_have_count(0)  # the zone by its city, not its code

        # A select of zones: «follow the CRM» first (naming the CRM's zone), then Russia's by city, then the rest.
        zone = section.get_by_label("Пояс приложения")
        expect(zone).to_have_value("")
        expect(zone.locator("option").first).to_have_text("Как в CRM — Новосибирск (UTC+7)")
        russia = zone.locator('optgroup[label="Россия"] option')
        expect(russia.first).to_have_text("Калининград (UTC+2)")
        expect(russia.nth(1)).to_have_text("Москва (UTC+3)")
        expect(zone.locator('optgroup[label="Другие страны"] option[value="Europe/Berlin"]')).to_have_text(
            re.compile(r"^Берлин \(UTC\+[12]\)$")
        )
        zone.select_option(label="Омск (UTC+6)")
        section.get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-tz-result")).to_have_text("Настройки сохранены.")
        expect(page.locator("#rc-tz-current")).to_have_text("Омск (UTC+6)")
        expect(page.locator("#rc-tz-crm")).to_have_text("Новосибирск (UTC+7)")
        db.session.expire_all()
        assert novosibirsk.our_portal().timezone == "Asia/Omsk"

        page.get_by_role("tab", name="Отчёты").click()
        expect(page.locator("#rc-report-zone")).to_have_text("Омск (UTC+6)", timeout=10_000)
        expect(page.locator("#rc-report-zone")).to_have_attribute("title", "Asia/Omsk")

        # Emptied, the field follows the CRM again.
        page.get_by_role("tab", name="Настройки").click()
        expect(zone).to_have_value("Asia/Omsk")
        zone.select_option("")
        section.get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-tz-current")).to_have_text("Новосибирск (UTC+7)")
        assert novosibirsk.our_portal().timezone == "Asia/Novosibirsk"


@pytest.mark.parametrize(
    ("lang", "tab", "save", "error", "summary"),
    [
        (
            "ru",
            "Настройки",
            "Сохранить",
            "Неизвестный часовой пояс: укажите его как Europe/Moscow или Asia/Novosibirsk.",
            "Исправьте ошибки: Пояс приложения: Неизвестный часовой пояс",
        ),
        (
            "en",
            "Settings",
            "Save",
            "Unknown time zone: write it as Europe/Moscow or Asia/Novosibirsk.",
            "Please fix: The app's zone: Unknown time zone",
        ),
    ],
)
def test_a_wrong_zone_is_a_field_error_in_the_pages_language(
    novosibirsk: B24, live_server, page: Page, lang: str, tab: str, save: str, error: str, summary: str
):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(novosibirsk.sandbox, mock, passthru=(live_server.url,))
        novosibirsk.install()
        open_app(page, live_server.url, novosibirsk, ADMIN, lang)
        page.get_by_role("tab", name=tab).click()
        section = page.locator("#rc-tz-settings")
        field = section.locator('select[name="time_zone"]')
        # A name the server does not know (a stale page, a forged form): the select cannot offer one, so add it.
        field.evaluate("(select) => select.add(new Option('Novosibirsk', 'Novosibirsk'))")
        field.select_option("Novosibirsk")
        section.get_by_role("button", name=save).click()
        expect(section.locator('.rc-field-error[data-field="time_zone"]')).to_have_text(error)
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#rc-tz-result")).to_contain_text(summary)
        db.session.expire_all()
        assert novosibirsk.our_portal().timezone == "Asia/Novosibirsk"

        field.select_option("Asia/Novosibirsk")
        section.get_by_role("button", name=save).click()
        expect(section.locator(".rc-field-error")).to_have_count(0)
        expect(field).not_to_have_attribute("aria-invalid", "true")


def test_a_head_of_sales_who_is_not_an_admin_does_not_see_the_section(novosibirsk: B24, live_server, page: Page):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(novosibirsk.sandbox, mock, passthru=(live_server.url,))
        configure_guard(novosibirsk.install())
        open_app(page, live_server.url, novosibirsk, HEAD)
        expect(page.get_by_role("tab", name="Отчёты")).to_be_visible()
        expect(page.get_by_role("tab", name="Настройки")).to_have_count(0)
        expect(page.locator("#rc-tz-settings")).to_have_count(0)
        expect(page.get_by_text("Часовой пояс", exact=True)).to_have_count(0)
        # The zone still governs what he sees: the reports' period line names it.
        expect(page.locator("#rc-report-zone")).to_have_text("Новосибирск (UTC+7)", timeout=10_000)
