"""The lead exchange shows and takes lead sources by their CRM names: the pool's source column, the source
filter (a list, not a typed code) and the admin's incoming sources (ticked from the CRM's list)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from app.domain import exchange
from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import add_people, configure_exchange, create_incoming

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    ("language", "tab", "save"),
    [("ru", "Биржа лидов", "Сохранить маршрутизацию"), ("en", "Lead exchange", "Save routing")],
)
def test_sources_by_name(app, live_server, page: Page, language: str, tab: str, save: str):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        harness.install()
        configure_exchange(harness.our_portal())
        create_incoming(harness, title="С сайта", source="WEB")
        create_incoming(harness, title="По звонку", source="CALL")

        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={language}", harness.frame(1))
        page.get_by_role("tab", name=tab).click()
        rows = page.locator("#rc-exchange-lots tbody tr")
        expect(rows).to_have_count(2)
        # Columns: deal, ABC class, age, amount, source.
        expect(page.locator("#rc-exchange-lots tbody tr", has_text="С сайта").locator("td").nth(4)).to_have_text(
            "Веб-сайт"
        )
        page.locator('#rc-exchange-filters select[name="source"]').select_option(label="Веб-сайт")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("С сайта")

        page.get_by_role("tab", name="Настройки" if language == "ru" else "Settings").click()
        block = page.locator('#rc-exchange-settings [data-pipeline="0"]')
        block.get_by_label("Веб-сайт").check()
        page.locator("#rc-exchange-settings").get_by_role("button", name=save).click()
        expect(page.locator("#rc-exchange-settings-result")).to_have_attribute("data-outcome", "saved")
        assert exchange.routing_for(harness.our_portal(), "0").incoming_sources == ("WEB",)
        expect(page.locator("#rc-exchange-settings")).not_to_contain_text("коды через запятую")
