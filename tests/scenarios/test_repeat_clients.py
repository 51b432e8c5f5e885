"""Repeat clients on both CRMs: a new incoming deal of a client the company already works with (an open deal, or a
contact or company with a responsible manager, found through the deal's own contact and company or by the same
phone or e-mail) goes to that manager instead of the exchange; the manager and the heads hear of it, the decision is
audited, and `flask settings set <portal> repeat_clients=false` turns the rule off."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry
from app.domain import directory, exchange
from tests.scenarios.driver import HEAD, MANAGER, OTHER_MANAGER, POOL, CrmDriver
from tests.scenarios.test_exchange import configure_exchange, lot_of

ROUTED = "Повторный клиент"


@pytest.fixture
def market(crm: CrmDriver) -> CrmDriver:
    """The app installed with the guard configured (head 9) and a pool user «Биржа лидов» in the CRM (each test
    puts the main pipeline on the exchange once its earlier deals exist)."""
    crm.add_pool_user()
    directory.forget(crm.portal().id)  # the pool user joined after install: read the people again
    return crm


def route_audit(deal_id: str) -> AuditEntry:
    db.session.expire_all()
    return db.session.scalars(
        sa.select(AuditEntry).where(AuditEntry.deal_id == str(deal_id), AuditEntry.attempted == "route new deal")
    ).one()


def test_a_client_with_an_open_deal_gets_the_new_deal_through_his_manager(market: CrmDriver):
    known = market.add_client("contact", OTHER_MANAGER, phone="+7 900 123-45-67", name="Иван Петров")
    earlier = market.new_deal(manager=OTHER_MANAGER, title="Станки, 1-я очередь", clients=[known])
    configure_exchange(market)
    same_phone = market.add_client("contact", MANAGER, phone="8 (900) 123-45-67", name="Иван", days_ago=0)

    deal_id = market.new_deal(manager=MANAGER, stage="new", title="Станки, 2-я очередь", clients=[same_phone])

    assert market.responsible(deal_id) == OTHER_MANAGER
    assert exchange.lot_for(market.portal().id, deal_id) is None, "not on the exchange"
    entry = route_audit(deal_id)
    assert entry.outcome == "to the client's manager"
    assert (entry.details["via"], entry.details["client_id"]) == ("open deal", earlier)
    market.settle()
    [mine] = [text for text in market.notices(OTHER_MANAGER) if ROUTED in text]
    assert "Станки, 2-я очередь" in mine
    [told] = [text for text in market.notices(HEAD) if ROUTED in text]
    assert "Станки, 1-я очередь" in told and market.user_name(OTHER_MANAGER) in told


def test_a_known_company_brings_its_new_deal_to_its_responsible(market: CrmDriver):
    configure_exchange(market)
    company = market.add_client("company", OTHER_MANAGER, name="ООО «Меридиан»", days_ago=90)

    deal_id = market.new_deal(manager=MANAGER, stage="new", title="Заявка Меридиана", clients=[company])

    assert market.responsible(deal_id) == OTHER_MANAGER
    assert route_audit(deal_id).details["via"] == "company"


def test_a_new_client_goes_to_the_exchange(market: CrmDriver):
    configure_exchange(market)
    stranger = market.add_client("contact", MANAGER, email="new@client.test", days_ago=0)

    deal_id = market.new_deal(manager=MANAGER, stage="new", title="Новый клиент", clients=[stranger])

    assert market.responsible(deal_id) == POOL
    assert lot_of(deal_id).status == "open"


def test_the_rule_turned_off_from_the_command_line_leaves_the_deal_to_the_exchange(market: CrmDriver):
    known = market.add_client("contact", OTHER_MANAGER, email="ivan@client.test")
    market.new_deal(manager=OTHER_MANAGER, clients=[known])
    configure_exchange(market)
    answer = market.app.test_cli_runner().invoke(
        args=["settings", "set", str(market.portal().id), "repeat_clients=false"]
    )
    assert answer.exit_code == 0, answer.output
    assert '"repeat_clients": false' in answer.output
    again = market.add_client("contact", MANAGER, email="IVAN@client.test", days_ago=0)

    deal_id = market.new_deal(manager=MANAGER, stage="new", title="Снова Иван", clients=[again])

    assert market.responsible(deal_id) == POOL
    assert route_audit(deal_id).outcome == "to exchange"
