"""The QA review state machine against the in-memory CRM: every path from awaiting_review to a closed case."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import Penalty, Portal, RefusalCase, ReviewCallback, utcnow
from app.domain.review import ActionRequest, Review, ReviewError, allowed_actions, timeline, version_of
from tests.unit.conftest import HEAD, MANAGER, OTHER_MANAGER, QA, configure, event, refused_deal, the_case
from tests.unit.fake_crm import InMemoryCrm


def act(portal: Portal, crm: InMemoryCrm, deal_id: str, user: str, action: str, note: str = "", **params: str) -> None:
    """A reviewer acts in our tab with what the page showed, then the CRM's echo of our writes arrives."""
    case = the_case(deal_id)
    assert case is not None
    deal = crm.deals[deal_id]
    request = ActionRequest(action, version_of(case), deal.stage_id, deal.responsible_id, note, dict(params))
    Review(portal, crm, user).perform(case.id, request)
    event(portal, deal_id)


def later(minutes: int = 60) -> str:
    """A moment ahead in portal time, as the tab's date-time field sends it."""
    moment = utcnow() + timedelta(minutes=minutes)
    return moment.astimezone(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%dT%H:%M:%S")


def state(deal_id: str) -> str:
    case = the_case(deal_id)
    assert case is not None
    return case.state


def steps(deal_id: str) -> list[tuple[str, str, str]]:
    """(who, what, state after) of every step of the deal's case."""
    case = the_case(deal_id)
    assert case is not None
    return [(step.actor, step.action, step.state_after) for step in timeline(case)]


def fines(deal_id: str) -> list[Any]:
    return list(db.session.scalars(sa.select(Penalty).where(Penalty.deal_id == deal_id).order_by(Penalty.id)))


def test_a_confirmed_refusal_is_closed_as_lost_by_qa(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)

    act(portal, crm, deal_id, QA, "recordings_confirm", "the client refuses on the recording")
    assert state(deal_id) == RefusalCase.CONFIRMED
    act(portal, crm, deal_id, QA, "close_lost")

    assert state(deal_id) == RefusalCase.CLOSED_LOST
    deal = crm.deals[deal_id]
    assert (deal.stage_id, deal.qa_verdict) == ("LOSE", "confirmed")
    assert steps(deal_id) == [
        (MANAGER, "opened", RefusalCase.AWAITING_REVIEW),
        (QA, "recordings_confirm", RefusalCase.CONFIRMED),
        (QA, "close_lost", RefusalCase.CLOSED_LOST),
    ]
    assert fines(deal_id) == []


def test_the_echo_of_closing_as_lost_is_not_taken_for_a_managers_move(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    act(portal, crm, deal_id, QA, "recordings_confirm")
    act(portal, crm, deal_id, QA, "close_lost")
    writes = list(crm.writes)

    event(portal, deal_id)

    assert crm.writes == writes
    assert crm.deals[deal_id].stage_id == "LOSE"


def test_a_confirmed_refusal_may_be_offered_again_and_the_manager_is_told(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    act(portal, crm, deal_id, QA, "recordings_confirm")
    told = len(crm.inbox(MANAGER))

    act(portal, crm, deal_id, HEAD, "offer_again", stage_id="LATE")

    assert state(deal_id) == RefusalCase.WIN_BACK
    deal = crm.deals[deal_id]
    assert (deal.stage_id, deal.responsible_id, deal.qa_verdict) == ("LATE", MANAGER, "win_back")
    assert len(crm.inbox(MANAGER)) == told + 1
    assert [who for who, _what, _state in steps(deal_id)] == [MANAGER, QA, HEAD]


def test_a_refusal_not_heard_on_the_recordings_needs_a_callback(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, case = refused_deal(portal, crm)

    act(portal, crm, deal_id, QA, "recordings_not_confirmed")

    assert state(deal_id) == RefusalCase.AWAITING_REVIEW
    assert allowed_actions(the_case(deal_id) or case, "qa") == ["schedule_callback"]
    with pytest.raises(ReviewError) as refused:
        act(portal, crm, deal_id, QA, "close_lost")
    assert refused.value.code == "wrong_state"


def test_a_client_who_did_not_refuse_leaks_the_deal_to_another_manager_with_a_fine_of_the_cpl(
    portal: Portal, crm: InMemoryCrm
) -> None:
    deal_id, _case = refused_deal(portal, crm, source_id="WEB")
    act(portal, crm, deal_id, QA, "recordings_not_confirmed")
    act(portal, crm, deal_id, QA, "schedule_callback", at=later(), assignee=QA)
    assert state(deal_id) == RefusalCase.CALLBACK_SCHEDULED
    told = len(crm.inbox(MANAGER))

    act(portal, crm, deal_id, QA, "client_denies", "the client is still interested", stage_id="WORKING")

    assert state(deal_id) == RefusalCase.LEAKED
    deal = crm.deals[deal_id]
    assert (deal.stage_id, deal.responsible_id, deal.qa_verdict) == ("WORKING", OTHER_MANAGER, "leaked")
    [fine] = fines(deal_id)
    assert (fine.manager_id, fine.amount, fine.currency) == (MANAGER, Decimal("1500.00"), "RUB")
    assert (fine.rule, fine.created_by) == ("source:WEB", QA)
    assert len(crm.inbox(MANAGER)) > told, "the leaker hears about the fine"
    assert len(crm.inbox(OTHER_MANAGER)) == 1, "the new manager hears the deal is his"
    assert steps(deal_id) == [
        (MANAGER, "opened", RefusalCase.AWAITING_REVIEW),
        (QA, "recordings_not_confirmed", RefusalCase.AWAITING_REVIEW),
        (QA, "schedule_callback", RefusalCase.CALLBACK_SCHEDULED),
        (QA, "client_denies", RefusalCase.CALLBACK_SCHEDULED),
        (QA, "return_to_sales", RefusalCase.LEAKED),
    ]


def test_a_leaked_deal_never_goes_back_to_the_manager_who_leaked_it(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    act(portal, crm, deal_id, QA, "recordings_not_confirmed")
    act(portal, crm, deal_id, QA, "schedule_callback", at=later(), assignee=QA)

    with pytest.raises(ReviewError, match="manager who leaked"):
        act(portal, crm, deal_id, QA, "client_denies", manager_id=MANAGER)
    assert state(deal_id) == RefusalCase.CALLBACK_SCHEDULED
    assert fines(deal_id) == []


def test_a_client_who_never_answers_makes_the_case_unreachable_for_the_heads(portal: Portal, crm: InMemoryCrm) -> None:
    configure(portal, "review", callback_attempts=2)
    deal_id, _case = refused_deal(portal, crm)
    act(portal, crm, deal_id, QA, "recordings_not_confirmed")
    act(portal, crm, deal_id, QA, "schedule_callback", at=later(), assignee=QA)

    act(portal, crm, deal_id, QA, "no_answer")
    assert state(deal_id) == RefusalCase.CALLBACK_SCHEDULED, "one more attempt is scheduled"
    act(portal, crm, deal_id, QA, "no_answer")

    assert state(deal_id) == RefusalCase.UNREACHABLE
    case = the_case(deal_id)
    assert case is not None
    assert [c.status for c in db.session.scalars(sa.select(ReviewCallback).order_by(ReviewCallback.id))] == [
        ReviewCallback.NO_ANSWER,
        ReviewCallback.NO_ANSWER,
    ]
    assert crm.deals[deal_id].qa_verdict == "unreachable"
    assert crm.deals[deal_id].stage_id == "REFUSAL"
    assert len(crm.inbox(HEAD)) == 1
    assert allowed_actions(case, "qa") == [] and "return_to_sales" in allowed_actions(case, "head")
    assert [(who, what) for who, what, _state in steps(deal_id)][-3:] == [
        (QA, "no_answer"),
        (QA, "no_answer"),
        (QA, "unreachable"),
    ]


def test_a_head_decides_an_unreachable_case(portal: Portal, crm: InMemoryCrm) -> None:
    configure(portal, "review", callback_attempts=1)
    deal_id, _case = refused_deal(portal, crm)
    act(portal, crm, deal_id, QA, "recordings_not_confirmed")
    act(portal, crm, deal_id, QA, "schedule_callback", at=later(), assignee=QA)
    act(portal, crm, deal_id, QA, "no_answer")

    with pytest.raises(ReviewError) as refused:
        act(portal, crm, deal_id, QA, "close_lost")
    assert refused.value.status == 403
    act(portal, crm, deal_id, HEAD, "close_lost")

    assert state(deal_id) == RefusalCase.CLOSED_LOST
    assert steps(deal_id)[-1] == (HEAD, "close_lost", RefusalCase.CLOSED_LOST)


def test_a_manager_cannot_act_on_a_case(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)

    with pytest.raises(ReviewError) as refused:
        act(portal, crm, deal_id, MANAGER, "recordings_confirm")

    assert refused.value.status == 403
    assert state(deal_id) == RefusalCase.AWAITING_REVIEW


def test_a_page_loaded_before_the_deal_moved_writes_nothing(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, case = refused_deal(portal, crm)
    act(portal, crm, deal_id, QA, "recordings_confirm")
    case = the_case(deal_id) or case
    shown = crm.deals[deal_id]
    crm.reassign(deal_id, OTHER_MANAGER, by=HEAD)
    writes = list(crm.writes)

    request = ActionRequest("close_lost", version_of(case), shown.stage_id, shown.responsible_id)
    with pytest.raises(ReviewError) as refused:
        Review(portal, crm, QA).perform(case.id, request)

    assert refused.value.code == "stale_deal"
    assert crm.writes == writes
