"""Fines on both CRMs: a leak found by QA fines the manager, a head's appeal cancels it, each notice reaches the
manager once, and balances and the report follow the ledger."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from app.core.db import db
from app.core.models import Penalty, RefusalCase
from app.domain import ledger, penalties, reports
from tests.scenarios.driver import HEAD, MANAGER, OTHER_MANAGER, QA, CrmDriver
from tests.scenarios.steps import Reviewer, case_in_review, local

FINED = "Вам начислен штраф"
CANCELLED = "отменён руководителем"


def returned_to_sales(crm: CrmDriver, manager: int) -> tuple[str, RefusalCase, Penalty]:
    """A manager's refusal turns out to be a leak: QA returns the deal to sales and the manager is fined."""
    deal_id, case = case_in_review(crm, manager=manager)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    qa.act("client_denies", "Клиент ждёт КП", stage_id=crm.stage_id("late working"))
    db.session.expire_all()
    [fine] = db.session.scalars(sa.select(Penalty).where(Penalty.case_id == case.id)).all()
    return deal_id, case, fine


def appeal(crm: CrmDriver, fine: Penalty, user_id: int, reason: str = "Клиент сам вернулся") -> tuple[int, dict]:
    answer = crm.client.post(f"/api/penalties/{fine.id}/appeal", json={"reason": reason}, headers=crm.token(user_id))
    return answer.status_code, answer.get_json()


def test_a_fine_and_its_cancellation_each_reach_the_manager_once(crm: CrmDriver):
    deal_id, case, fine = returned_to_sales(crm, MANAGER)
    assert (fine.manager_id, fine.amount, fine.currency) == (str(MANAGER), Decimal("1500.00"), "RUB")
    crm.settle()
    ledger.sweep_notices()
    [notice] = [text for text in crm.notices(MANAGER) if text.startswith(FINED)]
    assert "1 500 ₽" in notice and "Поставка станков" in notice and crm.deal_url(deal_id) in notice
    assert [text for text in crm.notices(MANAGER) if "штраф" in text] == [notice], "the fine is told once"

    assert appeal(crm, fine, MANAGER)[0] == 403, "a manager cannot cancel their own fine"
    assert appeal(crm, fine, HEAD, reason=" ")[0] == 400
    status, body = appeal(crm, fine, HEAD)
    assert status == 201, body
    assert appeal(crm, fine, HEAD, reason="ещё раз")[0] == 409
    crm.work()
    crm.settle()
    ledger.sweep_notices()
    fined = [text for text in crm.notices(MANAGER) if text.startswith(FINED)]
    cancelled = [text for text in crm.notices(MANAGER) if CANCELLED in text]
    assert fined == [notice]
    assert len(cancelled) == 1 and "Клиент сам вернулся" in cancelled[0] and "1 500 ₽" in cancelled[0]

    rows = db.session.scalars(sa.select(Penalty).where(Penalty.case_id == case.id).order_by(Penalty.id)).all()
    assert [(row.kind, row.amount) for row in rows] == [
        ("penalty", Decimal("1500.00")),
        ("reversal", Decimal("-1500.00")),
    ]
    today = reports.today(crm.portal()).isoformat()
    report = crm.client.get(f"/api/reports?from={today}&to={today}", headers=crm.token(HEAD)).get_json()
    assert report["totals"]["penalties"] == {"RUB": "0.00"}
    [manager] = report["managers"]
    assert manager["name"] == crm.user_name(MANAGER)


def test_balances_keep_an_unappealed_fine_and_drop_a_cancelled_one(crm: CrmDriver):
    _first, _case, cancelled = returned_to_sales(crm, MANAGER)
    _second, _other_case, kept = returned_to_sales(crm, OTHER_MANAGER)
    assert appeal(crm, cancelled, HEAD)[0] == 201
    assert penalties.balances(crm.portal().id) == {str(MANAGER): Decimal("0.00"), str(OTHER_MANAGER): kept.amount}
    today = reports.today(crm.portal()).isoformat()
    report = crm.client.get(f"/api/reports?from={today}&to={today}", headers=crm.token(HEAD)).get_json()
    assert report["totals"]["penalties"] == {"RUB": "1500.00"}
    crm.settle()
    ledger.sweep_notices()
    assert not [text for text in crm.notices(OTHER_MANAGER) if CANCELLED in text]
    assert len([text for text in crm.notices(OTHER_MANAGER) if text.startswith(FINED)]) == 1
