"""The stage guard on both CRMs: real handlers, a real worker, the sandbox portal or account."""

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, RefusalCase
from app.domain.reconcile import reconcile_portal
from tests.integration.b24 import configure_guard
from tests.scenarios.driver import HEAD, MANAGER, QA, CrmDriver, qa_tasks


def cases(deal_id: str) -> list[RefusalCase]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(RefusalCase).where(RefusalCase.deal_id == deal_id)))


def audit_rows(deal_id: str) -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id).order_by(AuditEntry.id)))


def test_manager_closing_as_lost_with_reason_lands_in_conditional_refusal(crm: CrmDriver):
    deal_id = crm.new_deal()
    crm.fill_refusal(deal_id, MANAGER, "price", "Клиент сказал, что дорого")
    crm.settle()
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "refusal"
    [case] = cases(deal_id)
    assert case.state == RefusalCase.AWAITING_REVIEW
    assert case.manager_id == str(MANAGER)
    assert case.reason == "price"
    assert case.previous_stage_id == crm.stage_id("working")
    assert case.qa_user_id in ("7", "8")
    [task] = qa_tasks(crm, deal_id)
    assert str(task.responsible) == case.qa_user_id and task.is_open
    [notice] = crm.notices(MANAGER)
    assert "Условный отказ" in notice and "Дорого" in notice
    assert crm.deal_url(deal_id) in notice
    assert any(row.outcome == "moved to conditional refusal" for row in audit_rows(deal_id))


def test_manager_closing_as_lost_without_reason_goes_back_with_a_notice(crm: CrmDriver):
    deal_id = crm.new_deal(stage="late working")
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "late working"
    assert cases(deal_id) == []
    [notice] = crm.notices(MANAGER)
    assert "нельзя закрыть" in notice
    assert audit_rows(deal_id)[-1].outcome == "reverted"


def test_entering_conditional_refusal_without_comment_goes_back(crm: CrmDriver):
    deal_id = crm.new_deal()
    crm.fill_refusal(deal_id, MANAGER, "price", comment="")
    crm.settle()
    crm.move(deal_id, "refusal", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "working"
    assert cases(deal_id) == []
    assert "причина отказа и комментарий" in crm.notices(MANAGER)[0]


def test_entering_conditional_refusal_with_reason_and_comment_opens_a_case(crm: CrmDriver):
    deal_id = crm.new_deal()
    crm.fill_refusal(deal_id, MANAGER, "no_budget", "Бюджет урезали")
    crm.move(deal_id, "refusal", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "refusal"
    assert [c.state for c in cases(deal_id)] == [RefusalCase.AWAITING_REVIEW]
    assert len(qa_tasks(crm, deal_id)) == 1


@pytest.mark.parametrize("reviewer", [QA, HEAD], ids=["qa", "head"])
def test_qa_and_heads_may_close_as_lost(crm: CrmDriver, reviewer: int):
    deal_id = crm.new_deal()
    crm.move(deal_id, "lost", by=reviewer)
    crm.settle()
    assert crm.stage_of(deal_id) == "lost"
    assert crm.notices(reviewer) == []
    assert crm.notices(MANAGER) == []
    assert audit_rows(deal_id)[-1].outcome == "closed without review"


def test_a_manager_leaving_conditional_refusal_withdraws_the_case(crm: CrmDriver):
    deal_id = crm.new_deal()
    crm.fill_refusal(deal_id, MANAGER, "price", "Дорого")
    crm.move(deal_id, "refusal", by=MANAGER)
    crm.settle()
    crm.move(deal_id, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "late working"
    [case] = cases(deal_id)
    assert case.state == RefusalCase.WITHDRAWN and case.closed_at is not None


def test_our_own_revert_fires_back_but_causes_no_further_write(crm: CrmDriver):
    deal_id = crm.new_deal()
    writes_before = crm.deal_writes(deal_id)
    crm.move(deal_id, "lost", by=MANAGER)
    crm.deliver()
    crm.work()
    assert crm.pending_deliveries(), "the revert must fire an update back, like the CRM does"
    reads_before_echo = crm.deal_reads(deal_id)
    crm.settle()
    assert crm.deal_writes(deal_id) - writes_before == 1
    assert crm.deal_reads(deal_id) - reads_before_echo == 0  # the echo is told by its stamp: no read, no write
    assert crm.stage_of(deal_id) == "working"


def test_the_same_delivery_five_times_gives_one_outcome(crm: CrmDriver):
    deal_id = crm.new_deal()
    crm.fill_refusal(deal_id, MANAGER, "price", "Дорого")
    crm.settle()
    crm.move(deal_id, "lost", by=MANAGER)
    [delivery] = crm.pending_deliveries()
    for _ in range(5):
        assert crm.post_delivery(delivery).status_code == 200
    crm.settle()
    crm.post_delivery(delivery)
    crm.settle()
    assert crm.stage_of(deal_id) == "refusal"
    assert len(cases(deal_id)) == 1
    assert len(qa_tasks(crm, deal_id)) == 1
    assert len(crm.notices(MANAGER)) == 1


def test_a_second_pipeline_is_guarded(crm: CrmDriver):
    deal_id = crm.new_deal(stage="late working", pipeline="other")
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert (crm.pipeline_of(deal_id), crm.stage_of(deal_id)) == ("other", "late working")


def test_moving_to_the_lost_stage_of_another_pipeline_goes_back_to_the_first(crm: CrmDriver):
    deal_id = crm.new_deal(stage="late working")
    crm.move(deal_id, "lost", by=MANAGER, pipeline="other")
    crm.settle()
    assert (crm.pipeline_of(deal_id), crm.stage_of(deal_id)) == ("main", "late working")


def test_automation_closing_as_lost_is_not_allowed_unless_exempted(crm: CrmDriver):
    deal_id = crm.new_deal(stage="late working")
    crm.move(deal_id, "lost", by=None)
    crm.settle()
    assert crm.stage_of(deal_id) == "late working"
    assert audit_rows(deal_id)[-1].actor == "automation"
    assert len(crm.notices(MANAGER)) == 1, "the responsible manager is told"
    configure_guard(crm.portal(), exempt_automation=True)
    crm.move(deal_id, "lost", by=None)
    crm.settle()
    assert crm.stage_of(deal_id) == "lost"


def test_an_unguarded_pipeline_is_left_alone(crm: CrmDriver):
    configure_guard(crm.portal(), guarded_pipelines=[crm.pipeline_id("other")])
    deal_id = crm.new_deal()
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "lost"
    assert crm.notices(MANAGER) == []


def test_a_lost_delivery_is_caught_up_by_reconciliation_once(crm: CrmDriver):
    deal_id = crm.new_deal(stage="late working")
    crm.drop_next_delivery()
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "lost", "the delivery was lost, nothing happened yet"
    counts = reconcile_portal(crm.portal().id)
    crm.settle()
    assert counts["offline_events"] >= 1 and counts["decided"] == 1
    assert crm.stage_of(deal_id) == "late working"
    assert len(crm.notices(MANAGER)) == 1
    again = reconcile_portal(crm.portal().id)
    assert again["decided"] == 0, "what was caught up is acknowledged"


def test_cases_go_round_robin_to_active_qa_staff_only(crm: CrmDriver):
    configure_guard(crm.portal(), qa_users=["7", "10", "8"])  # 10 is an inactive user
    assigned = []
    for title in ("Первая", "Вторая", "Третья"):
        deal_id = crm.new_deal(title=title)
        crm.fill_refusal(deal_id, MANAGER, "price", "Дорого")
        crm.move(deal_id, "refusal", by=MANAGER)
        crm.settle()
        [case] = cases(deal_id)
        assigned.append(case.qa_user_id)
        [task] = qa_tasks(crm, deal_id)
        assert str(task.responsible) == case.qa_user_id
    assert assigned == ["7", "8", "7"]
