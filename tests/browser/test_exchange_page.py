"""The lead exchange tab in a real Chromium: take a deal, it is gone for another manager, return it."""

import re

import pytest
from playwright.sync_api import Page, expect

from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import POOL, add_people, configure_exchange, create_incoming, responsible

pytestmark = pytest.mark.browser


def open_exchange(page: Page, url: str, harness: B24, user_id: int) -> None:
    post_frame(page, f"{url}/b24/app?DOMAIN={harness.portal.domain}&LANG=ru", harness.frame(user_id))
    page.get_by_role("tab", name="Биржа лидов").click()


def test_take_is_gone_for_another_manager_then_return(app, live_server, page: Page, browser):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        harness.install()
        configure_exchange(harness.our_portal())
        deal_id = create_incoming(harness, title="Заявка с сайта")

        open_exchange(page, live_server.url, harness, 2)
        row = page.locator("#rc-exchange-lots tbody tr", has_text="Заявка с сайта")
        expect(row).to_have_count(1)
        row.get_by_role("button", name="Взять").click()
        expect(page.locator("#rc-exchange-result")).to_have_text("Сделка ваша.")
        expect(page.locator("#rc-exchange-lots tbody tr", has_text="Заявка с сайта")).to_have_count(0)
        expect(page.locator("#rc-exchange-mine tbody tr", has_text="Заявка с сайта")).to_have_count(1)
        assert responsible(harness, deal_id) == "2"

        other = browser.new_page()
        open_exchange(other, live_server.url, harness, 3)
        expect(other.locator("#rc-exchange-empty")).to_be_visible()
        expect(other.locator("#rc-exchange-lots tbody tr")).to_have_count(0)

        mine = page.locator("#rc-exchange-mine tbody tr", has_text="Заявка с сайта")
        mine.get_by_placeholder("Причина возврата").fill("Клиент просит другого менеджера")
        mine.get_by_role("button", name="Вернуть на биржу").click()
        expect(page.locator("#rc-exchange-result")).to_have_text("Сделка возвращена на биржу.")
        expect(page.locator("#rc-exchange-lots tbody tr", has_text="Заявка с сайта")).to_have_count(1)
        assert responsible(harness, deal_id) == str(POOL)

        other.get_by_role("button", name="Показать").click()
        expect(other.locator("#rc-exchange-lots tbody tr", has_text=re.compile("Заявка с сайта"))).to_have_count(1)
        other.close()
