"""The admin settings tab in a real Chromium: pick people by name, save, see validation messages."""

import pytest
import responses
from playwright.sync_api import Page, expect

from app.domain.settings import guard_settings
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser


def test_admin_picks_qa_staff_by_name_and_saves(app, live_server, page: Page):
    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        qa_name = portal.users[7]["NAME"]
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(1))
        page.get_by_role("tab", name="Настройки").click()
        picker = page.locator('[data-picker="qa_users"]')
        picker.get_by_role("searchbox").fill(qa_name.lower()[:4])
        picker.get_by_label(qa_name, exact=False).first.check()
        page.locator('input[name="review_sla_hours"]').fill("36")
        page.locator("#rc-settings").get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-settings-result")).to_have_text("Настройки сохранены.")
        saved = guard_settings(harness.our_portal())
        assert "7" in saved.qa_users and saved.review_sla_hours == 36

        page.locator('input[name="review_sla_hours"]').fill("0")
        page.locator("#rc-settings").get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-settings-result")).to_have_text(
            "Исправьте ошибки: Срок проверки ОКК, часов: Допустимо от 1 до 720."
        )
        assert guard_settings(harness.our_portal()).review_sla_hours == 36


def test_admin_changes_task_control_settings(app, live_server, page: Page):
    from app.domain.taskcontrol import taskcontrol_settings

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        harness.install()
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(1))
        page.get_by_role("tab", name="Настройки").click()
        form = page.locator("#rc-tc-settings")
        expect(form.locator('input[name="scan_interval_minutes"]')).to_have_value("120")
        form.get_by_label("Не пускать сделку на следующую стадию без открытой задачи").check()
        form.locator('input[name="scan_interval_minutes"]').fill("60")
        form.get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-tc-settings-result")).to_have_text("Настройки сохранены.")
        saved = taskcontrol_settings(harness.our_portal())
        assert saved.require_task_to_advance is True and saved.scan_interval_minutes == 60

        form.locator('input[name="scan_interval_minutes"]').fill("5")
        form.get_by_role("button", name="Сохранить").click()
        expect(page.locator("#rc-tc-settings-result")).to_contain_text("Допустимо от 15 до 1440.")
        assert taskcontrol_settings(harness.our_portal()).scan_interval_minutes == 60
