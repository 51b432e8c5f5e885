"""The stage guard against the in-memory CRM: who may close a deal as lost, Conditional refusal, echoes, robots."""

from __future__ import annotations

import pytest

from app.core.models import Portal, RefusalCase
from app.domain.guard import Decision
from tests.unit.conftest import (
    HEAD,
    MANAGER,
    QA,
    configure,
    decide,
    event,
    guard_settings_for,
    refused_deal,
    seen_deal,
    the_case,
)
from tests.unit.fake_crm import InMemoryCrm


def test_a_manager_who_closes_a_deal_as_lost_without_a_reason_is_moved_back_and_told(
    portal: Portal, crm: InMemoryCrm
) -> None:
    deal_id = seen_deal(portal, crm, stage="LATE")

    crm.move(deal_id, "LOSE", by=MANAGER)
    assert decide(portal, deal_id).outcome == "reverted"

    assert crm.deals[deal_id].stage_id == "LATE", "back where he moved it from"
    assert [change.stage_id for change in crm.deal_changes(deal_id)] == ["LATE"]
    assert len(crm.inbox(MANAGER)) == 1
    assert crm.deal_url(deal_id) in crm.inbox(MANAGER)[0]
    assert the_case(deal_id) is None


def test_a_deal_never_seen_before_goes_back_to_the_stage_in_its_history(portal: Portal, crm: InMemoryCrm) -> None:
    deal = crm.add_deal(stage_id="NEW", responsible_id=MANAGER)
    crm.move(deal.id, "WORKING", by=MANAGER)
    crm.move(deal.id, "LOSE", by=MANAGER)

    event(portal, deal.id)

    assert crm.deals[deal.id].stage_id == "WORKING"


def test_a_manager_who_gives_a_reason_and_a_comment_lands_in_conditional_refusal_and_a_case_opens(
    portal: Portal, crm: InMemoryCrm
) -> None:
    deal_id, case = refused_deal(portal, crm)

    assert crm.deals[deal_id].stage_id == "REFUSAL"
    assert case.state == RefusalCase.AWAITING_REVIEW
    assert (case.manager_id, case.qa_user_id, case.reason) == (MANAGER, QA, "price")
    assert case.previous_stage_id == "WORKING"
    qa_tasks = [task for task in crm.tasks.values() if task.deal_id == deal_id]
    assert [(task.responsible_id, task.is_open) for task in qa_tasks] == [(QA, True)]
    assert case.qa_task_id == qa_tasks[0].id
    assert len(crm.inbox(MANAGER)) == 1, "the manager hears that the deal went to Conditional refusal"


def test_new_cases_go_to_qa_staff_in_turn(portal: Portal, crm: InMemoryCrm) -> None:
    first = refused_deal(portal, crm)[1]
    second = refused_deal(portal, crm)[1]

    assert (first.qa_user_id, second.qa_user_id) == ("7", "8")


def test_a_move_to_conditional_refusal_without_a_comment_is_moved_back(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = seen_deal(portal, crm)
    crm.fill_refusal(deal_id, by=MANAGER, reason="price", comment="   ")
    event(portal, deal_id)

    crm.move(deal_id, "REFUSAL", by=MANAGER)
    assert decide(portal, deal_id).outcome == "reverted"

    assert crm.deals[deal_id].stage_id == "WORKING"
    assert the_case(deal_id) is None


@pytest.mark.parametrize("reviewer", [QA, HEAD], ids=["qa", "head"])
def test_qa_and_heads_may_close_a_deal_as_lost(portal: Portal, crm: InMemoryCrm, reviewer: str) -> None:
    deal_id = seen_deal(portal, crm)

    crm.move(deal_id, "LOSE", by=reviewer)
    assert decide(portal, deal_id).outcome == "allowed"

    assert crm.deals[deal_id].stage_id == "LOSE"
    assert crm.writes == []


def test_a_reviewer_closing_a_deal_in_review_closes_its_case(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)

    crm.move(deal_id, "LOSE", by=HEAD)
    event(portal, deal_id)

    case = the_case(deal_id)
    assert case is not None and case.state == RefusalCase.CLOSED_LOST and case.closed_at is not None


def test_a_move_out_of_conditional_refusal_withdraws_the_case_and_tells_qa(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, case = refused_deal(portal, crm)
    told_before = len(crm.inbox(QA))

    crm.move(deal_id, "WORKING", by=MANAGER)
    assert decide(portal, deal_id).outcome == "case withdrawn"

    withdrawn = the_case(deal_id)
    assert withdrawn is not None and withdrawn.id == case.id
    assert withdrawn.state == RefusalCase.WITHDRAWN and withdrawn.closed_at is not None
    assert len(crm.inbox(QA)) == told_before + 1
    assert crm.deals[deal_id].stage_id == "WORKING", "the manager's move stands"


def test_our_own_write_comes_back_as_an_echo_and_is_not_acted_on_twice(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = seen_deal(portal, crm)
    crm.move(deal_id, "LOSE", by=MANAGER)
    crm.drain_deal_changes(lambda ids: None)  # the events so far were delivered
    event(portal, deal_id)
    writes, told = list(crm.writes), crm.inbox(MANAGER)

    decisions: list[str] = []
    drained = crm.drain_deal_changes(lambda ids: decisions.extend(decide(portal, i).outcome for i in ids))

    assert drained == 1, "our move back is one change event"
    assert decisions == ["unchanged"]
    assert crm.writes == writes
    assert crm.inbox(MANAGER) == told


def test_a_repeated_event_for_the_same_move_plans_nothing_new(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    writes = list(crm.writes)

    event(portal, deal_id)
    event(portal, deal_id)

    assert crm.writes == writes
    assert len([task for task in crm.tasks.values() if task.deal_id == deal_id]) == 1


def test_automation_counts_as_not_allowed_and_its_notice_goes_to_the_responsible(
    portal: Portal, crm: InMemoryCrm
) -> None:
    deal_id = seen_deal(portal, crm)

    crm.move(deal_id, "LOSE", by=None)
    assert decide(portal, deal_id, automation=True).outcome == "reverted"

    assert crm.deals[deal_id].stage_id == "WORKING"
    assert len(crm.inbox(MANAGER)) == 1


def test_automation_may_close_as_lost_when_the_portal_exempts_it(portal: Portal, crm: InMemoryCrm) -> None:
    configure(portal, "guard", **guard_settings_for(exempt_automation=True))
    deal_id = seen_deal(portal, crm)

    crm.move(deal_id, "LOSE", by=None)
    assert decide(portal, deal_id, automation=True).outcome == "allowed"

    assert crm.deals[deal_id].stage_id == "LOSE"
    assert crm.writes == []


def test_an_exempt_user_may_close_as_lost(portal: Portal, crm: InMemoryCrm) -> None:
    configure(portal, "guard", **guard_settings_for(exempt_users=[MANAGER]))
    deal_id = seen_deal(portal, crm)

    crm.move(deal_id, "LOSE", by=MANAGER)
    assert decide(portal, deal_id) == Decision("allowed", "exempt")

    assert crm.deals[deal_id].stage_id == "LOSE"


def test_a_failed_move_back_is_carried_out_by_the_next_decision(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = seen_deal(portal, crm)
    crm.move(deal_id, "LOSE", by=MANAGER)
    crm.fail_next("update_deal")

    with pytest.raises(Exception, match="injected failure"):
        decide(portal, deal_id)
    assert crm.deals[deal_id].stage_id == "LOSE"
    assert crm.inbox(MANAGER) == [], "no notice while the move failed"

    event(portal, deal_id)

    assert crm.deals[deal_id].stage_id == "WORKING"
    assert len(crm.inbox(MANAGER)) == 1
