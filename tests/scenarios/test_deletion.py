"""Deleting a deal on both CRMs (issue #19): a manager's deletion is recorded, audited and reported to the heads at
once (and fined with `fine_deletions` on); QA's or a head's deletion is recorded without a notice."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, DealDeletion, Penalty, RefusalCase
from app.domain import reports
from app.domain.settings import update_guard_settings
from tests.scenarios.driver import HEAD, MANAGER, QA, CrmDriver
from tests.scenarios.steps import case_in_review

DELETED = "удалил(а) сделку"


def deletions(deal_id: str) -> list[DealDeletion]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(DealDeletion).where(DealDeletion.deal_id == deal_id)))


def audit_rows(deal_id: str) -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id).order_by(AuditEntry.id)))


def report(crm: CrmDriver) -> dict:
    today = reports.today(crm.portal()).isoformat()
    answer = crm.client.get(f"/api/reports?from={today}&to={today}", headers=crm.token(HEAD))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def test_a_manager_deleting_a_deal_is_recorded_and_the_heads_are_told_at_once(crm: CrmDriver):
    deal_id = crm.new_deal(title="Станки для завода", amount=250000)
    crm.delete(deal_id, by=MANAGER)
    crm.settle()

    [deletion] = deletions(deal_id)
    assert (deletion.deleted_by, deletion.role, deletion.violation) == (str(MANAGER), "manager", True)
    assert deletion.title == "Станки для завода" and Decimal(deletion.amount) == Decimal("250000")
    assert deletion.responsible_id == str(MANAGER) and deletion.stage_id == crm.stage_id("working")
    [row] = [r for r in audit_rows(deal_id) if r.attempted == "delete deal"]
    assert row.actor == str(MANAGER) and row.details["violation"] is True

    [notice] = [text for text in crm.notices(HEAD) if DELETED in text]
    assert "Станки для завода" in notice and crm.user_name(MANAGER) in notice
    assert not [text for text in crm.notices(MANAGER) if DELETED in text]
    assert db.session.scalars(sa.select(Penalty)).all() == [], "no fine unless the portal asks for it"

    data = report(crm)
    [listed] = data["deletions"]
    assert listed["title"] == "Станки для завода" and listed["by"] == crm.user_name(MANAGER)
    assert listed["amount"].replace(" ", "").replace("\u00a0", "").startswith("250")
    [manager] = [m for m in data["managers"] if m["manager_id"] == str(MANAGER)]
    assert manager["deletions"] == 1
    assert data["totals"]["deletions"] == 1

    today = reports.today(crm.portal()).isoformat()
    csv = crm.client.get(f"/api/reports/deletions.csv?from={today}&to={today}", headers=crm.token(HEAD))
    assert csv.status_code == 200
    assert "Станки для завода" in csv.get_data(as_text=True)


def test_deleting_a_deal_under_review_withdraws_its_case(crm: CrmDriver):
    deal_id, case = case_in_review(crm, manager=MANAGER)
    crm.delete(deal_id, by=MANAGER)
    crm.settle()
    db.session.expire_all()
    case = db.session.get(RefusalCase, case.id)
    assert case is not None and case.state == RefusalCase.WITHDRAWN and case.closed_at is not None
    [deletion] = deletions(deal_id)
    assert deletion.case_id == case.id


def test_qa_or_a_head_deleting_a_deal_is_recorded_without_a_notice(crm: CrmDriver):
    for deleter in (QA, HEAD):
        deal_id = crm.new_deal(title=f"Сделка {deleter}")
        crm.delete(deal_id, by=deleter)
        crm.settle()
        [deletion] = deletions(deal_id)
        assert deletion.deleted_by == str(deleter) and deletion.violation is False
        assert any(r.attempted == "delete deal" for r in audit_rows(deal_id))
    assert not [text for text in crm.notices(HEAD) if DELETED in text]
    assert not [text for text in crm.notices(QA) if DELETED in text]


def test_with_fines_on_the_deleting_manager_is_fined_the_cpl(crm: CrmDriver):
    portal = crm.portal()
    update_guard_settings(portal, {"fine_deletions": True})
    db.session.commit()
    deal_id = crm.new_deal(source="WEB")
    crm.delete(deal_id, by=MANAGER)
    crm.settle()
    db.session.expire_all()
    [fine] = db.session.scalars(sa.select(Penalty).where(Penalty.deal_id == deal_id)).all()
    assert (fine.manager_id, fine.amount, fine.currency, fine.kind) == (
        str(MANAGER),
        Decimal("1500.00"),
        "RUB",
        "penalty",
    )
    [deletion] = deletions(deal_id)
    assert deletion.penalty_id == fine.id
