"""ABC qualification in a real Chromium: a manager sees the exchange's deals A, B, C, then unclassified, with their
class; a head sees the deals by class on the reports tab."""

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24
from tests.integration.exchange_helpers import add_people, configure_exchange, create_incoming

pytestmark = pytest.mark.browser
HEAD = 9


def qualify(harness: B24, deal_id: int, **answers: str) -> None:
    """The manager picks need, budget and urgency ("yes"/"no") in the deal card."""
    fields = harness.our_portal().settings["b24_fields"]
    values: dict[str, Any] = {
        fields[f"abc_{name}"]["field"]: fields[f"abc_{name}"]["enum"][answer] for name, answer in answers.items()
    }
    harness.sandbox.act(harness.portal, 2).update_deal(deal_id, values)


def test_the_exchange_lists_a_b_c_then_unclassified_and_the_report_counts_by_class(app, live_server, page: Page):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        add_people(harness)
        harness.install()
        configure_guard(harness.our_portal(), heads=[str(HEAD)])
        configure_exchange(harness.our_portal())
        plain = create_incoming(harness, title="Без квалификации")
        c_deal = create_incoming(harness, title="Нужда без денег")
        a_deal = create_incoming(harness, title="Горящий клиент")
        qualify(harness, c_deal, need="yes", budget="no")
        qualify(harness, a_deal, need="yes", budget="yes", urgency="yes")
        harness.settle()
        assert plain

        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(3))
        page.get_by_role("tab", name="Биржа лидов").click()
        rows = page.locator("#rc-exchange-lots tbody tr")
        expect(rows).to_have_count(3)
        expect(page.locator("#rc-exchange-lots thead")).to_contain_text("Класс")
        expect(rows.nth(0)).to_contain_text("Горящий клиент")
        expect(rows.nth(0).locator("td[data-class]")).to_have_text("A")
        expect(rows.nth(1)).to_contain_text("Нужда без денег")
        expect(rows.nth(1).locator("td[data-class]")).to_have_text("C")
        expect(rows.nth(2)).to_contain_text("Без квалификации")
        expect(rows.nth(2).locator("td[data-class]")).to_have_text("—")

        head = page.context.new_page()
        post_frame(head, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG=ru", harness.frame(HEAD))
        head.get_by_role("tab", name="Отчёты").click()
        table = head.locator("#rc-table-abc")
        expect(table).to_be_visible(timeout=10_000)
        expect(head.locator('[data-table="abc"] h2')).to_have_text("Сделки по классам ABC")
        expect(table.locator("tbody tr").nth(0)).to_contain_text("A")
        expect(table.locator("tfoot td").nth(1)).to_have_text("2")
        head.close()
