"""The ABC settings on the admin's settings tab in a real Chromium, in Russian and in English: the A-idle hours and
"notify the heads too" are shown, saved, and a value out of range is refused with the field's translated error."""

import pytest
import responses
from playwright.sync_api import Page, expect

from app.domain.settings import guard_settings
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser


def test_admin_sets_the_a_idle_notice_in_russian_then_in_english(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()

        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(1))
        page.get_by_role("tab", name="Настройки").click()
        form = page.locator("#rc-settings")
        hours = form.get_by_label("Уведомлять о сделке класса A без активности через, ч (0 — не уведомлять)")
        heads = form.get_by_label("Уведомлять о простое сделок класса A и руководителей")
        expect(hours).to_have_value("24")
        expect(heads).not_to_be_checked()
        hours.fill("48")
        heads.check()
        form.get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-settings-result")).to_have_text("Настройки сохранены.")
        saved = guard_settings(harness.our_portal())
        assert saved.abc_a_idle_hours == 48 and saved.abc_a_idle_heads is True

        hours.fill("-1")
        with page.expect_response(lambda r: r.request.method == "PUT" and "/settings" in r.url) as answer:
            form.get_by_role("button", name="Сохранить").click()
        assert answer.value.status == 400
        assert answer.value.json()["field_errors"]["abc_a_idle_hours"]["text"] == "Допустимо от 0 до 720."
        expect(page.locator("#rc-settings-result")).to_have_text(
            "Исправьте ошибки: Уведомлять о сделке класса A без активности через, ч (0 — не уведомлять): "
            "Допустимо от 0 до 720."
        )
        expect(hours).to_have_attribute("aria-invalid", "true")
        expect(form.locator('.rc-field-error[data-field="abc_a_idle_hours"]')).to_have_text("Допустимо от 0 до 720.")
        assert guard_settings(harness.our_portal()).abc_a_idle_hours == 48

        english = page.context.new_page()
        post_frame(english, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=en", harness.frame(1))
        english.get_by_role("tab", name="Settings").click()
        form = english.locator("#rc-settings")
        hours = form.get_by_label("Notify about a class A deal with no activity after, h (0: never)")
        heads = form.get_by_label("Also notify the heads about idle class A deals")
        expect(hours).to_have_value("48")
        expect(heads).to_be_checked()
        hours.fill("721")
        form.get_by_role("button", name="Save").click()
        expect(english.locator("#rc-settings-result")).to_have_text(
            "Please fix: Notify about a class A deal with no activity after, h (0: never): Allowed: 0 to 720."
        )
        expect(form.locator('.rc-field-error[data-field="abc_a_idle_hours"]')).to_have_text("Allowed: 0 to 720.")
        assert guard_settings(harness.our_portal()).abc_a_idle_hours == 48
        hours.fill("0")
        heads.uncheck()
        form.get_by_role("button", name="Save").click()
        expect(english.locator("#rc-settings-result")).to_have_text("Settings saved.")
        saved = guard_settings(harness.our_portal())
        assert saved.abc_a_idle_hours == 0 and saved.abc_a_idle_heads is False
        english.close()
