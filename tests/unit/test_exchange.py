"""Lead exchange claims against the in-memory CRM: one winner, the per-manager cap, returns to the pool."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, ExchangeClaim, ExchangeLot, Portal
from app.domain import exchange
from tests.unit.conftest import MAIN, MANAGER, OTHER_MANAGER, POOL, event
from tests.unit.fake_crm import InMemoryCrm


@pytest.fixture
def market(portal: Portal) -> Portal:
    """The main pipeline routes new deals to the exchange (pool user 12), at most 2 open deals a manager."""
    exchange.update_exchange_settings(portal, {"pipelines": {MAIN: {"mode": "exchange", "pool_user": POOL, "cap": 2}}})
    db.session.commit()
    return portal


def pooled_deal(portal: Portal, crm: InMemoryCrm) -> ExchangeLot:
    """A new website deal arrives: the app gives it to the pool user and puts it on the exchange."""
    deal = crm.add_deal(stage_id="NEW", responsible_id=MANAGER, source_id="WEB")
    event(portal, deal.id, is_new=True)
    lot = exchange.lot_for(portal.id, deal.id)
    assert lot is not None
    return lot


def test_a_new_deal_goes_to_the_pool_user(market: Portal, crm: InMemoryCrm) -> None:
    lot = pooled_deal(market, crm)

    assert lot.status == ExchangeLot.OPEN
    assert crm.deals[lot.deal_id].responsible_id == POOL


def test_when_two_managers_claim_one_deal_only_the_first_gets_it(market: Portal, crm: InMemoryCrm) -> None:
    lot = pooled_deal(market, crm)
    seen_by_second = exchange.lot_for(market.id, lot.deal_id)
    assert seen_by_second is not None
    db.session.expunge(seen_by_second)  # the second manager's page still shows the deal as open

    won = exchange.claim(market, crm, lot, MANAGER)
    with pytest.raises(exchange.ClaimRefused) as refused:
        exchange.claim(market, crm, seen_by_second, OTHER_MANAGER)

    assert refused.value.code == "already_taken"
    refusals = sa.select(AuditEntry.actor).where(AuditEntry.outcome == "refused", AuditEntry.reason == "already taken")
    assert db.session.scalars(refusals).all() == [OTHER_MANAGER], "the conditional update decided, not the page"
    assert won.manager_id == MANAGER
    assert db.session.scalars(sa.select(ExchangeClaim.manager_id)).all() == [MANAGER]
    assert crm.deals[lot.deal_id].responsible_id == MANAGER
    assert [change.responsible_id for change in crm.deal_changes(lot.deal_id)] == [POOL, MANAGER]


def test_a_manager_at_his_cap_cannot_claim(market: Portal, crm: InMemoryCrm) -> None:
    for _ in range(2):
        crm.add_deal(stage_id="WORKING", responsible_id=OTHER_MANAGER)
    crm.add_deal(stage_id="LOSE", responsible_id=OTHER_MANAGER)  # a closed deal does not count
    lot = pooled_deal(market, crm)

    with pytest.raises(exchange.ClaimRefused) as refused:
        exchange.claim(market, crm, lot, OTHER_MANAGER)

    assert refused.value.code == "cap"
    db.session.expire_all()
    assert exchange.lot_for(market.id, lot.deal_id).status == ExchangeLot.OPEN  # type: ignore[union-attr]
    assert crm.deals[lot.deal_id].responsible_id == POOL


def test_a_manager_below_his_cap_may_claim(market: Portal, crm: InMemoryCrm) -> None:
    crm.add_deal(stage_id="WORKING", responsible_id=OTHER_MANAGER)
    lot = pooled_deal(market, crm)

    exchange.claim(market, crm, lot, OTHER_MANAGER)

    assert crm.count_open_deals(OTHER_MANAGER, MAIN) == 2


def test_taking_a_pool_deal_in_the_crm_beyond_the_cap_is_reverted(market: Portal, crm: InMemoryCrm) -> None:
    for _ in range(2):
        crm.add_deal(stage_id="WORKING", responsible_id=OTHER_MANAGER)
    lot = pooled_deal(market, crm)

    crm.reassign(lot.deal_id, OTHER_MANAGER, by=OTHER_MANAGER)
    event(market, lot.deal_id)

    assert crm.deals[lot.deal_id].responsible_id == POOL
    assert len(crm.inbox(OTHER_MANAGER)) == 1


def test_a_returned_deal_goes_back_to_the_pool_with_its_reason(market: Portal, crm: InMemoryCrm) -> None:
    lot = pooled_deal(market, crm)
    exchange.claim(market, crm, lot, MANAGER)
    db.session.expire_all()
    lot = exchange.lot_for(market.id, lot.deal_id)  # type: ignore[assignment]

    returned = exchange.return_to_pool(market, crm, lot, MANAGER, "the client wants a specialist in lathes")

    assert (returned.outcome, returned.reason) == (ExchangeClaim.RETURNED, "the client wants a specialist in lathes")
    assert returned.ended_at is not None
    db.session.expire_all()
    assert exchange.lot_for(market.id, lot.deal_id).status == ExchangeLot.OPEN  # type: ignore[union-attr]
    assert crm.deals[lot.deal_id].responsible_id == POOL
    assert exchange.claim(market, crm, lot, OTHER_MANAGER).manager_id == OTHER_MANAGER, "open for others again"


def test_a_deal_nobody_holds_cannot_be_returned(market: Portal, crm: InMemoryCrm) -> None:
    lot = pooled_deal(market, crm)

    with pytest.raises(exchange.ClaimRefused) as refused:
        exchange.return_to_pool(market, crm, lot, MANAGER, "not mine")

    assert refused.value.code == "not_taken"


def test_a_deal_event_reads_the_deal_once_for_the_exchange_and_the_guard(market: Portal, crm: InMemoryCrm) -> None:
    """One lock, one read: the exchange routes the new deal and the guard decides on it as the exchange's writes
    will leave it, without reading it again; the echo of our own assignment changes nothing."""
    deal = crm.add_deal(stage_id="NEW", responsible_id=MANAGER, source_id="WEB")
    event(market, deal.id, is_new=True)
    assert crm.reads["get_deal"] == 1
    assert crm.deals[deal.id].responsible_id == POOL

    event(market, deal.id)  # the CRM reports our own assignment back
    assert crm.reads["get_deal"] == 2
    assert [change.responsible_id for change in crm.deal_changes(deal.id)] == [POOL]  # nothing written again
    lot = exchange.lot_for(market.id, deal.id)
    assert lot is not None and lot.status == ExchangeLot.OPEN


def test_a_manager_who_takes_a_pool_deal_and_closes_it_as_lost_is_stopped_with_one_read(
    market: Portal, crm: InMemoryCrm
) -> None:
    lot = pooled_deal(market, crm)
    crm.reassign(lot.deal_id, MANAGER, by=MANAGER)  # he takes it in the CRM
    crm.move(lot.deal_id, "LOSE", by=MANAGER)  # and closes it as lost
    before = crm.reads["get_deal"]
    event(market, lot.deal_id)
    assert crm.reads["get_deal"] == before + 1
    assert crm.deals[lot.deal_id].stage_id != "LOSE"  # the guard moved it back
    assert any("нельзя закрыть" in message for message in crm.inbox(MANAGER))
