"""The install page in a real Chromium: progress, then success, then BX24.installFinish()."""

import re

import pytest
from playwright.sync_api import Page, expect

from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser

BX24_STUB = """
window.__rc = {finished: 0};
window.BX24 = {
  init: function (callback) { callback(); },
  installFinish: function () { window.__rc.finished += 1; }
};
"""


def test_install_page_shows_progress_then_calls_install_finish(app, live_server, page: Page):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        page.route(
            "https://api.bitrix24.com/api/v1/",
            lambda route: route.fulfill(body=BX24_STUB, content_type="text/javascript"),
        )
        post_frame(page, f"{live_server.url}/b24/install?DOMAIN={portal.domain}&LANG=ru", harness.frame())
        expect(page.locator("h1")).to_have_text("Установка приложения")
        expect(page.locator('[data-step="stages"] .rc-step-state')).to_have_text("ожидание")
        assert page.evaluate("window.__rc.finished") == 0, "installFinish must wait for the installer"
        harness.work()
        expect(page.locator("#rc-result")).to_have_text(re.compile("Приложение установлено"), timeout=10_000)
        expect(page.locator('[data-step="robots"]')).to_have_attribute("data-state", "done")
        assert page.evaluate("window.__rc.finished") == 1


def test_install_page_shows_a_failure_and_offers_a_retry(app, live_server, page: Page):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        page.route(
            "https://api.bitrix24.com/api/v1/",
            lambda route: route.fulfill(body=BX24_STUB, content_type="text/javascript"),
        )
        post_frame(page, f"{live_server.url}/b24/install?DOMAIN={portal.domain}&LANG=en", harness.frame())
        expect(page.locator("h1")).to_have_text("Installing the app")
        sandbox.force_operation_limit(portal, "placement.bind", times=-1)
        app.config["B24_RETRY_ATTEMPTS"] = 1
        harness.work()
        expect(page.locator("#rc-result")).to_have_text(re.compile("Installation failed"), timeout=10_000)
        expect(page.locator('[data-step="placement"]')).to_have_attribute("data-state", "failed")
        assert page.evaluate("window.__rc.finished") == 0
        sandbox.force_operation_limit(portal, "placement.bind", times=0)
        page.get_by_role("button", name="Try again").click()
        page.wait_for_timeout(300)
        harness.work()
        expect(page.locator("#rc-result")).to_have_text(re.compile("The app is installed"), timeout=10_000)
        assert page.evaluate("window.__rc.finished") == 1
