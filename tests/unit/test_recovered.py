"""The money saved, against the in-memory CRM: a deal QA returned to sales after a false refusal is followed to its end
(won with its amount, reopened), and the period's figures count it under the manager whose refusal was false."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from app.core.db import db
from app.core.models import Portal, RecoveredDeal, utcnow
from app.domain import recovery, reports
from tests.unit.conftest import MANAGER, OTHER_MANAGER, QA, event, refused_deal
from tests.unit.fake_crm import InMemoryCrm
from tests.unit.test_review import act, later


def returned_deal(portal: Portal, crm: InMemoryCrm) -> str:
    deal_id, _case = refused_deal(portal, crm, source_id="WEB")
    act(portal, crm, deal_id, QA, "recordings_not_confirmed")
    act(portal, crm, deal_id, QA, "schedule_callback", at=later(), assignee=QA)
    act(portal, crm, deal_id, QA, "client_denies", "the client is still interested", stage_id="WORKING")
    return deal_id


def followed(deal_id: str) -> RecoveredDeal:
    db.session.expire_all()
    return db.session.scalars(sa.select(RecoveredDeal).where(RecoveredDeal.deal_id == deal_id)).one()


def today(portal: Portal) -> reports.Period:
    day = reports.today(portal).isoformat()
    return reports.parse_period(portal, day, day)


def test_a_returned_deal_is_followed_until_it_is_won(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = returned_deal(portal, crm)
    row = followed(deal_id)
    assert (row.outcome, row.leaker_id, row.manager_id, row.closed_at) == ("open", MANAGER, OTHER_MANAGER, None)

    crm.deals[deal_id] = replace(crm.deals[deal_id], amount=Decimal("240000"))  # the new manager sold more
    crm.move(deal_id, "WON", by=OTHER_MANAGER)
    event(portal, deal_id)

    row = followed(deal_id)
    assert (row.outcome, Decimal(row.amount)) == ("won", Decimal("240000"))
    assert row.closed_at is not None and row.closed_at >= row.returned_at
    saved = recovery.build(portal, today(portal), reports.Names())
    [leaker] = saved.managers
    assert (leaker["manager_id"], leaker["recovered"], leaker["won"]) == (MANAGER, 1, 1)
    assert leaker["revenue"]["RUB"] == Decimal("240000.00")
    assert leaker["penalties"]["RUB"] == Decimal("1500.00"), "his fine is next to it"
    assert saved.headline == "Возвращено в продажи из ложных отказов: 1; выиграно: 1, на сумму 240\u00a0000\u00a0₽."


def test_a_won_deal_reopened_is_open_again_and_brings_nothing_yet(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = returned_deal(portal, crm)
    crm.move(deal_id, "WON", by=OTHER_MANAGER)
    event(portal, deal_id)
    crm.move(deal_id, "WORKING", by=OTHER_MANAGER)
    event(portal, deal_id)

    row = followed(deal_id)
    assert (row.outcome, row.closed_at) == ("open", None)
    [leaker] = recovery.build(portal, today(portal), reports.Names()).managers
    assert (leaker["recovered"], leaker["won"], leaker["revenue"]["RUB"]) == (1, 0, Decimal("0.00"))


def test_a_deal_won_in_a_later_period_counts_there(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = returned_deal(portal, crm)
    crm.move(deal_id, "WON", by=OTHER_MANAGER)
    event(portal, deal_id)
    row = followed(deal_id)
    row.returned_at = utcnow() - timedelta(days=40)  # returned last month, won now
    db.session.commit()

    [leaker] = recovery.build(portal, today(portal), reports.Names()).managers
    assert (leaker["recovered"], leaker["won"]) == (0, 1)
