"""CPL resolution and the penalty ledger: the order of the CPL rules, appeals as appended reversals."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import Penalty, Portal, RefusalCase
from app.domain.penalties import AppealError, OwnFineError, appeal, balances, issue_penalty, resolve_cpl
from tests.unit.conftest import HEAD, MAIN, MANAGER, OTHER, QA, configure, refused_deal
from tests.unit.fake_crm import InMemoryCrm


@pytest.fixture
def priced(portal: Portal) -> Portal:
    """CPL: 1500 from the website, 900 in the other pipeline, 700 otherwise."""
    configure(portal, "cpl", by_pipeline={OTHER: "900"})
    return portal


def test_the_deals_own_cpl_field_comes_first(priced: Portal, crm: InMemoryCrm) -> None:
    deal = crm.add_deal(stage_id="WORKING", responsible_id=MANAGER, source_id="WEB", cpl=Decimal("2100.5"))

    cpl = resolve_cpl(priced, deal)

    assert (cpl.amount, cpl.currency, cpl.rule) == (Decimal("2100.50"), "RUB", "deal_cpl")


def test_without_a_deal_cpl_the_table_by_source_applies(priced: Portal, crm: InMemoryCrm) -> None:
    deal = crm.add_deal(stage_id="C5:WORKING", responsible_id=MANAGER, source_id="WEB")

    cpl = resolve_cpl(priced, deal)

    assert (cpl.amount, cpl.rule) == (Decimal("1500.00"), "source:WEB")


def test_a_source_not_in_the_table_falls_back_to_the_pipeline_default(priced: Portal, crm: InMemoryCrm) -> None:
    deal = crm.add_deal(stage_id="C5:WORKING", responsible_id=MANAGER, source_id="CALL")

    cpl = resolve_cpl(priced, deal)

    assert (cpl.amount, cpl.rule) == (Decimal("900.00"), f"pipeline:{OTHER}")


def test_with_nothing_else_the_portal_default_applies(priced: Portal, crm: InMemoryCrm) -> None:
    deal = crm.add_deal(stage_id="WORKING", responsible_id=MANAGER, source_id="CALL", cpl=Decimal("0"))

    cpl = resolve_cpl(priced, deal)

    assert deal.pipeline_id == MAIN
    assert (cpl.amount, cpl.rule) == (Decimal("700.00"), "portal_default")


def fine_for_a_leak(portal: Portal, crm: InMemoryCrm) -> Penalty:
    """The manager's refusal turned out to be a leak: QA fines him the lead's cost."""
    deal_id, case = refused_deal(portal, crm, source_id="WEB")
    case.state = RefusalCase.LEAKED
    fine = issue_penalty(portal, case, crm.deals[deal_id], created_by=QA)
    db.session.commit()
    return fine


def test_issuing_a_fine_twice_for_one_case_gives_one_row(portal: Portal, crm: InMemoryCrm) -> None:
    fine = fine_for_a_leak(portal, crm)
    case = db.session.get(RefusalCase, fine.case_id)
    assert case is not None

    again = issue_penalty(portal, case, crm.deals[fine.deal_id], created_by=HEAD)

    assert again.id == fine.id
    assert db.session.scalar(sa.select(sa.func.count(Penalty.id))) == 1


def test_an_appeal_appends_a_reversal_and_keeps_the_fine(portal: Portal, crm: InMemoryCrm) -> None:
    fine = fine_for_a_leak(portal, crm)
    assert balances(portal.id) == {MANAGER: Decimal("1500.00")}

    reversal = appeal(portal, fine.id, by=HEAD, reason="the client called back himself")
    db.session.commit()

    rows = list(db.session.scalars(sa.select(Penalty).order_by(Penalty.id)))
    assert [(row.kind, row.amount, row.reverses_id) for row in rows] == [
        (Penalty.PENALTY, Decimal("1500.00"), None),
        (Penalty.REVERSAL, Decimal("-1500.00"), fine.id),
    ]
    assert (reversal.manager_id, reversal.created_by) == (MANAGER, HEAD)
    assert balances(portal.id) == {MANAGER: Decimal("0.00")}


def test_a_fine_is_cancelled_only_once(portal: Portal, crm: InMemoryCrm) -> None:
    fine = fine_for_a_leak(portal, crm)
    appeal(portal, fine.id, by=HEAD, reason="a mistake")
    db.session.commit()

    with pytest.raises(AppealError, match="already cancelled"):
        appeal(portal, fine.id, by=HEAD, reason="again")


def test_nobody_cancels_his_own_fine(portal: Portal, crm: InMemoryCrm) -> None:
    fine = fine_for_a_leak(portal, crm)

    with pytest.raises(OwnFineError):
        appeal(portal, fine.id, by=MANAGER, reason="I was right")

    assert db.session.scalar(sa.select(sa.func.count(Penalty.id)).where(Penalty.kind == Penalty.REVERSAL)) == 0


def test_an_appeal_needs_a_reason(portal: Portal, crm: InMemoryCrm) -> None:
    fine = fine_for_a_leak(portal, crm)

    with pytest.raises(AppealError, match="reason"):
        appeal(portal, fine.id, by=HEAD, reason="  ")
