"""The lead exchange's figures where a head reads the period's results, on both CRMs: the reports JSON
(`/api/reports`, next to the money saved) and the scheduled summary sent to the heads."""

from __future__ import annotations

import pytest

from app.domain import reports
from tests.integration.b24 import configure_guard
from tests.scenarios.driver import HEAD, MANAGER, OTHER_MANAGER, CrmDriver
from tests.scenarios.test_exchange import claim, configure_exchange, incoming


@pytest.fixture
def exchange_market(bare_crm: CrmDriver) -> CrmDriver:
    """The CRM with a pool user, the app installed, the main pipeline on the exchange, one head."""
    bare_crm.add_pool_user()
    bare_crm.install()
    configure_exchange(bare_crm)
    configure_guard(bare_crm.portal(), heads=[str(HEAD)])
    return bare_crm


def test_the_exchange_is_in_the_reports_json_and_in_the_scheduled_summary(exchange_market: CrmDriver):
    market = exchange_market
    won, kept = incoming(market, title="Выигранная"), incoming(market, title="Взятая")
    assert claim(market, won, MANAGER).status_code == 200
    assert claim(market, kept, OTHER_MANAGER).status_code == 200
    market.settle()
    market.move(won, "won", by=MANAGER)
    market.settle()
    portal = market.portal()
    today = reports.today(portal).isoformat()

    answer = market.client.get(f"/api/reports?from={today}&to={today}", headers=market.token(HEAD))
    assert answer.status_code == 200
    rows = {row["manager_id"]: row for row in answer.get_json()["exchange"]}
    assert (rows[str(MANAGER)]["taken"], rows[str(MANAGER)]["won"]) == (1, 1)
    assert rows[str(MANAGER)]["name"] == market.user_name(MANAGER)
    assert (rows[str(OTHER_MANAGER)]["taken"], rows[str(OTHER_MANAGER)]["won"]) == (1, 0)

    period = reports.parse_period(portal, today, today)
    due = reports.Due("weekly", period, "weekly:test")
    summary = reports.summary_text(portal, due, reports.build_report(portal, period))
    assert "Биржа лидов: взято сделок — 2, выиграно — 1, возвращено на биржу — 0." in summary
    assert "из ложных отказов" not in summary, "no deal was returned from a false refusal"
