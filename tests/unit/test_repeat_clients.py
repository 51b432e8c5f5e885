"""Repeat clients on the in-memory CRM: a new incoming deal of a client someone already works with goes to that
manager instead of the exchange or the manager on duty; the heads hear of it; it is audited; a setting turns it off."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, DutyDay, Portal, utcnow
from app.domain import exchange
from app.domain.settings import update_guard_settings
from tests.unit.conftest import ADMIN, HEAD, MAIN, MANAGER, OTHER_MANAGER, POOL, SALES, event
from tests.unit.fake_crm import InMemoryCrm


@pytest.fixture
def market(portal: Portal) -> Portal:
    exchange.update_exchange_settings(portal, {"pipelines": {MAIN: {"mode": "exchange", "pool_user": POOL}}})
    db.session.commit()
    return portal


def incoming(portal: Portal, crm: InMemoryCrm, **client: str) -> str:
    """A website deal comes in (created by the admin's form), linked to the given clients: kind -> detail."""
    deal = crm.add_deal(stage_id="NEW", responsible_id=ADMIN, source_id="WEB", title="Новая заявка")
    for kind, detail in client.items():
        crm.add_client(kind, ADMIN, deals=[deal.id], details=[detail])
    event(portal, deal.id, is_new=True)
    return deal.id


def routed(deal_id: str) -> AuditEntry:
    return db.session.scalars(
        sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id, AuditEntry.attempted == "route new deal")
    ).one()


def test_a_client_with_an_open_deal_gets_his_new_deal_through_its_manager(market: Portal, crm: InMemoryCrm) -> None:
    earlier = crm.add_deal(stage_id="WORKING", responsible_id=OTHER_MANAGER, title="Станки, 2-я очередь")
    crm.add_client("contact", OTHER_MANAGER, deals=[earlier.id], details=["+79001234567"])

    deal_id = incoming(market, crm, contact="+79001234567")  # a new contact with the same phone

    assert crm.deals[deal_id].responsible_id == OTHER_MANAGER
    assert exchange.lot_for(market.id, deal_id) is None, "not on the exchange"
    entry = routed(deal_id)
    assert (entry.outcome, entry.details["via"], entry.details["client_id"]) == (
        "to the client's manager",
        "open deal",
        earlier.id,
    )
    [mine] = crm.inbox(OTHER_MANAGER)
    assert "Повторный клиент" in mine and "Новая заявка" in mine
    [told] = crm.inbox(HEAD)
    assert ("Станки, 2-я очередь" in told and "Other" in told) or "Станки, 2-я очередь" in told


def test_a_known_company_brings_its_deal_to_its_responsible(market: Portal, crm: InMemoryCrm) -> None:
    company = crm.add_client("company", MANAGER, created_at=utcnow() - timedelta(days=30))
    deal = crm.add_deal(stage_id="NEW", responsible_id=ADMIN, source_id="WEB")
    crm.deal_clients[deal.id].append(("company", company.id))
    event(market, deal.id, is_new=True)

    assert crm.deals[deal.id].responsible_id == MANAGER
    assert routed(deal.id).details["via"] == "company"


def test_a_client_first_seen_with_the_deal_goes_to_the_exchange(market: Portal, crm: InMemoryCrm) -> None:
    deal_id = incoming(market, crm, contact="new@client.test")

    assert crm.deals[deal_id].responsible_id == POOL
    assert routed(deal_id).outcome == "to exchange"


def test_a_fired_manager_or_the_pool_user_is_not_the_clients_manager(market: Portal, crm: InMemoryCrm) -> None:
    crm.add_user("44", "Fired", departments=[SALES], active=False)
    fired_deal = crm.add_deal(stage_id="WORKING", responsible_id="44")
    crm.add_client("contact", "44", deals=[fired_deal.id], details=["a@b.test"])
    pooled = crm.add_deal(stage_id="WORKING", responsible_id=POOL)
    crm.add_client("contact", POOL, deals=[pooled.id], details=["a@b.test"])

    deal_id = incoming(market, crm, contact="a@b.test")

    assert crm.deals[deal_id].responsible_id == POOL
    assert exchange.lot_for(market.id, deal_id) is not None


def test_the_rule_beats_the_duty_rota(portal: Portal, crm: InMemoryCrm) -> None:
    exchange.update_exchange_settings(
        portal, {"pipelines": {MAIN: {"mode": "duty", "pool_user": POOL, "duty_department": SALES}}}
    )
    db.session.add(
        DutyDay(portal_id=portal.id, department_id=SALES, day=exchange.portal_day(portal, utcnow()), user_id=MANAGER)
    )
    db.session.commit()
    earlier = crm.add_deal(stage_id="WORKING", responsible_id=OTHER_MANAGER)
    crm.add_client("contact", OTHER_MANAGER, deals=[earlier.id], details=["+79007654321"])

    deal_id = incoming(portal, crm, contact="+79007654321")

    assert crm.deals[deal_id].responsible_id == OTHER_MANAGER
    assert not crm.inbox(MANAGER), "the manager on duty is not bothered"


def test_turned_off_the_deal_goes_to_the_exchange_as_before(market: Portal, crm: InMemoryCrm) -> None:
    update_guard_settings(market, {"repeat_clients": False})
    db.session.commit()
    earlier = crm.add_deal(stage_id="WORKING", responsible_id=OTHER_MANAGER)
    crm.add_client("contact", OTHER_MANAGER, deals=[earlier.id], details=["+79001112233"])

    deal_id = incoming(market, crm, contact="+79001112233")

    assert crm.deals[deal_id].responsible_id == POOL
    assert crm.reads["client_history"] == 0, "the CRM is not even asked"
