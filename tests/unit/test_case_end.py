"""Cases end cleanly: whatever ends a case, its QA task and its callbacks' to-dos are completed in the CRM, once."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import db
from app.core.models import Effect, Portal, RefusalCase, ReviewCallback
from app.crm.errors import CrmUnavailable
from app.domain import deal_events, review
from tests.unit.conftest import HEAD, MANAGER, QA, event, refused_deal, the_case
from tests.unit.fake_crm import InMemoryCrm
from tests.unit.test_review import act, later


def qa_task_of(crm: InMemoryCrm, deal_id: str) -> str:
    case = the_case(deal_id)
    assert case is not None and case.qa_task_id is not None
    assert crm.tasks[case.qa_task_id].deal_id == deal_id
    return case.qa_task_id


def open_steps(crm: InMemoryCrm, deal_id: str) -> list[str]:
    """The deal's next steps as task control sees them."""
    return [task.id for task in crm.open_deal_tasks(deal_id)]


def completions(crm: InMemoryCrm) -> list[tuple[str, str]]:
    return [(w.method, w.target) for w in crm.writes if w.method in ("complete_task", "complete_todo")]


def callback_with_todo(portal: Portal, crm: InMemoryCrm, deal_id: str) -> str:
    """QA schedules a callback and its time comes: the call to-do is on the deal."""
    act(portal, crm, deal_id, QA, "recordings_not_confirmed")
    act(portal, crm, deal_id, QA, "schedule_callback", at=later(30), assignee=QA)
    case = the_case(deal_id)
    assert case is not None
    callback = review.active_callback(case)
    assert callback is not None
    assert review.fire_callback(callback.id) == "fired"
    db.session.expire_all()
    todo_id = db.session.get(ReviewCallback, callback.id).todo_id
    assert todo_id is not None and crm.tasks[todo_id].is_open
    return todo_id


def test_closing_as_lost_completes_the_qa_task_with_the_outcome(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    task_id = qa_task_of(crm, deal_id)
    assert open_steps(crm, deal_id) == [task_id]

    act(portal, crm, deal_id, QA, "recordings_confirm")
    act(portal, crm, deal_id, QA, "close_lost")

    assert not crm.tasks[task_id].is_open
    assert crm.task_results[task_id] == "Проверка отказа завершена: Закрыта как проигранная."
    assert completions(crm) == [("complete_task", task_id)]
    assert open_steps(crm, deal_id) == []


def test_a_returned_deal_has_no_next_step_left_from_the_review(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    task_id = qa_task_of(crm, deal_id)
    todo_id = callback_with_todo(portal, crm, deal_id)
    assert open_steps(crm, deal_id) == [task_id, todo_id]

    act(portal, crm, deal_id, QA, "client_denies", stage_id="WORKING")

    assert the_case(deal_id).state == RefusalCase.LEAKED  # type: ignore[union-attr]
    assert open_steps(crm, deal_id) == []
    assert completions(crm) == [("complete_task", task_id), ("complete_todo", todo_id)]


def test_a_case_ends_once_in_the_crm_when_the_first_attempt_fails(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    task_id = qa_task_of(crm, deal_id)
    act(portal, crm, deal_id, QA, "recordings_confirm")
    crm.fail_next("complete_task", CrmUnavailable("timeout"))

    act(portal, crm, deal_id, QA, "close_lost")  # the action succeeds; the deal's next event catches up

    case = the_case(deal_id)
    assert case is not None and case.state == RefusalCase.CLOSED_LOST
    assert not crm.tasks[task_id].is_open
    assert review.retry_effects(portal.id, deal_id) == 0  # a retry job finds nothing left to do
    event(portal, deal_id)
    assert completions(crm) == [("complete_task", task_id)]
    done = db.session.scalars(sa.select(Effect).where(Effect.kind == "complete_task")).all()
    assert [(e.key, e.status, e.attempts) for e in done] == [(f"case:{case.id}:qa_task:complete", Effect.DONE, 2)]


def test_a_withdrawn_case_completes_its_qa_task(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    task_id = qa_task_of(crm, deal_id)

    crm.move(deal_id, "WORKING", by=MANAGER)
    event(portal, deal_id)

    assert the_case(deal_id).state == RefusalCase.WITHDRAWN  # type: ignore[union-attr]
    assert not crm.tasks[task_id].is_open
    assert open_steps(crm, deal_id) == []


def test_qa_closing_a_confirmed_deal_in_the_crm_completes_its_qa_task(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    task_id = qa_task_of(crm, deal_id)
    act(portal, crm, deal_id, QA, "recordings_confirm")

    crm.move(deal_id, "LOSE", by=HEAD)
    event(portal, deal_id)

    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST  # type: ignore[union-attr]
    assert not crm.tasks[task_id].is_open


def test_deleting_the_deal_ends_its_case_and_completes_its_task_and_todo(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id, _case = refused_deal(portal, crm)
    task_id = qa_task_of(crm, deal_id)
    todo_id = callback_with_todo(portal, crm, deal_id)
    crm.delete_task(todo_id)  # the CRM deleted the deal's to-dos with it: not an error

    deal_events.deal_deleted(portal, crm, deal_id, by=MANAGER)

    case = the_case(deal_id)
    assert case is not None and case.state == RefusalCase.WITHDRAWN and case.closed_at is not None
    assert not crm.tasks[task_id].is_open
    assert completions(crm) == [("complete_task", task_id), ("complete_todo", todo_id)]
    deal_events.deal_deleted(portal, crm, deal_id, by=MANAGER)  # a repeated event changes nothing
    assert len(completions(crm)) == 2


def test_the_fake_completes_a_task_once_and_ignores_missing_ones(crm: InMemoryCrm) -> None:
    deal = crm.add_deal(stage_id="WORKING", responsible_id=MANAGER)
    task = crm.add_task(deal.id, MANAGER)
    crm.complete_task(task.id, "done")
    crm.complete_task(task.id, "again")
    crm.complete_todo("404")
    assert not crm.tasks[task.id].is_open and crm.task_results[task.id] == "done"
