"""The QA review on both CRMs: our tab on the deal card (Bitrix24 placement, amoCRM widget), a real worker,
callbacks, recordings, fines and the queue."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, Effect, Penalty, RefusalCase, ReviewCallback, utcnow
from app.core.queue import get_queue
from app.domain import reports, review
from tests.scenarios.driver import (
    ADMIN,
    HEAD,
    MANAGER,
    OTHER_MANAGER,
    QA,
    QA2,
    QA_TASK_TITLE,
    CrmDriver,
    CrmTask,
)
from tests.scenarios.steps import Reviewer, case_in_review, local, the_case

# -- the paths ---------------------------------------------------------------------------------


def test_recordings_confirm_then_close_as_lost(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    assert qa.view["actions"] == ["recordings_confirm", "recordings_not_confirmed", "recordings_none"]
    assert qa.view["case"]["manager"] == {"id": str(MANAGER), "name": crm.user_name(MANAGER)}
    assert qa.view["case"]["cpl"].startswith("1") and qa.view["case"]["cpl"].endswith("\u00a0₽")
    qa.act("recordings_confirm", "На записи клиент говорит про цену")
    assert qa.view["case"]["state"] == RefusalCase.CONFIRMED
    assert qa.view["actions"] == ["close_lost", "offer_again"]
    qa.act("close_lost", reason="price")
    assert crm.stage_of(deal_id) == "lost"
    assert crm.deal_field(deal_id, "qa_verdict") == "confirmed"
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert [step["action"] for step in qa.view["timeline"]][-2:] == ["recordings_confirm", "close_lost"]
    assert qa.view["actions"] == []
    # The echo of our own write was recognised: the deal stayed lost and nobody got a violation notice.
    crm.settle()
    assert crm.stage_of(deal_id) == "lost"
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert crm.notices(QA) == []
    rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id)).all()
    assert [row.actor for row in rows if (row.details or {}).get("violation")] == [str(MANAGER)]


def test_not_confirmed_callback_client_confirms_close_lost_with_another_reason(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_not_confirmed", "Про цену на записях ни слова")
    assert qa.view["actions"] == ["schedule_callback"]
    qa.act("schedule_callback", at=local(minutes=60), assignee=str(QA2))
    assert qa.view["case"]["state"] == RefusalCase.CALLBACK_SCHEDULED
    assert qa.view["callback"]["assignee"]["id"] == str(QA2)
    qa.act("client_confirms", "Клиент купил у конкурента")
    assert qa.view["case"]["state"] == RefusalCase.CONFIRMED
    assert review.scheduled_callback_jobs(crm.portal().id, the_case(deal_id).id) == []
    qa.act("close_lost", reason="bought_elsewhere")
    assert crm.stage_of(deal_id) == "lost"
    assert crm.deal_field(deal_id, "refusal_reason") == "bought_elsewhere"
    assert the_case(deal_id).reason == "bought_elsewhere"


def test_client_denies_returns_the_deal_to_another_manager_with_a_fine(crm: CrmDriver):
    deal_id, case = case_in_review(crm)
    assert case.source_id == "WEB"
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    qa.act("client_denies", "Клиент ждёт КП", stage_id=crm.stage_id("late working"))
    assert crm.stage_of(deal_id) == "late working"
    new_manager = crm.responsible(deal_id)
    assert new_manager != MANAGER and new_manager in crm.sales_managers
    assert crm.deal_field(deal_id, "qa_verdict") == "leaked"
    [fine] = db.session.scalars(sa.select(Penalty).where(Penalty.case_id == case.id)).all()
    assert (fine.manager_id, fine.amount, fine.currency) == (str(MANAGER), Decimal("1500.00"), "RUB")
    fined = [text for text in crm.notices(MANAGER) if text.startswith("Вам начислен штраф")]
    assert len(fined) == 1 and "1 500 ₽" in fined[0] and crm.deal_url(deal_id) in fined[0]
    assert crm.notices(new_manager), "the new manager hears about the deal"
    assert the_case(deal_id).state == RefusalCase.LEAKED
    crm.settle()
    assert crm.stage_of(deal_id) == "late working"  # our own write did not trip the guard
    # The head's report counts the fine and names the manager and the deal's source.
    today = reports.today(crm.portal()).isoformat()
    body = crm.client.get(f"/api/reports?from={today}&to={today}", headers=crm.token(HEAD)).get_json()
    assert body["totals"]["penalties"] == {"RUB": "1500.00"}
    [manager] = body["managers"]
    assert manager["name"] == crm.user_name(MANAGER)
    assert any(row["source_id"] == "WEB" for row in body["sources"])


def test_returning_to_sales_never_gives_the_deal_back_to_the_leaker(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    back = crm.stage_id("late working")
    answer = qa.post("client_denies", stage_id=back, manager_id=str(MANAGER))
    assert answer.status_code == 400 and "leaked" in answer.get_json()["message"]
    answer = qa.post("client_denies", stage_id=crm.stage_id("won"), manager_id=str(OTHER_MANAGER))
    assert answer.status_code == 400 and "stage" in answer.get_json()["message"]
    qa.act("client_denies", stage_id=back, manager_id=str(OTHER_MANAGER))
    assert crm.responsible(deal_id) == OTHER_MANAGER


def test_no_answer_until_the_limit_makes_the_client_unreachable_and_heads_decide(crm: CrmDriver):
    portal = crm.portal()
    review.update_review_settings(portal, {"callback_attempts": 2, "callback_interval_minutes": 30})
    db.session.commit()
    deal_id, case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_not_confirmed")
    qa.act("schedule_callback", at=local(minutes=10), assignee=str(QA))
    qa.act("no_answer", "Не берёт трубку")
    assert qa.view["case"]["state"] == RefusalCase.CALLBACK_SCHEDULED
    assert qa.view["callback"]["attempt"] == 2
    assert review.scheduled_callback_jobs(portal.id, case.id) == [review.callback_job_id(portal.id, case.id)]
    qa.act("no_answer")
    assert qa.view["case"]["state"] == RefusalCase.UNREACHABLE
    assert qa.view["actions"] == []
    assert review.scheduled_callback_jobs(portal.id, case.id) == []
    assert crm.deal_field(deal_id, "qa_verdict") == "unreachable"
    [notice] = crm.notices(HEAD)
    assert "не ответил" in notice
    assert qa.post("close_lost").status_code == 403
    head = Reviewer(crm, HEAD, deal_id)
    assert head.view["actions"] == ["close_lost", "offer_again", "return_to_sales"]
    head.act("return_to_sales", stage_id=crm.stage_id("working"))
    assert the_case(deal_id).state == RefusalCase.LEAKED
    assert crm.stage_of(deal_id) == "working"
    assert crm.responsible(deal_id) in set(crm.sales_managers) - {MANAGER}


def test_offer_again_returns_the_deal_to_the_same_manager(crm: CrmDriver):
    deal_id, _case = case_in_review(crm, stage="late working")
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_confirm")
    assert qa.view["choices"]["default_stage"] == crm.stage_id("late working")
    qa.act("offer_again", "Предложить скидку")
    assert (crm.stage_of(deal_id), crm.responsible(deal_id)) == ("late working", MANAGER)
    assert crm.deal_field(deal_id, "qa_verdict") == "win_back"
    assert the_case(deal_id).state == RefusalCase.WIN_BACK
    assert any("снова" in text for text in crm.notices(MANAGER))
    crm.settle()
    assert crm.stage_of(deal_id) == "late working"
    assert the_case(deal_id).state == RefusalCase.WIN_BACK


def test_cancelling_a_callback_goes_back_to_scheduling(crm: CrmDriver):
    deal_id, case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_not_confirmed")
    qa.act("schedule_callback", at=local(minutes=10), assignee=str(QA))
    qa.act("cancel_callback")
    assert qa.view["case"]["state"] == RefusalCase.AWAITING_REVIEW
    assert qa.view["actions"] == ["schedule_callback"]
    assert review.scheduled_callback_jobs(crm.portal().id, case.id) == []


def test_bad_callback_input_is_refused_with_a_message(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_none")
    for params, words in (
        ({"at": local(minutes=-5), "assignee": str(QA)}, "future"),
        ({"at": "tomorrow", "assignee": str(QA)}, "YYYY"),
        ({"at": local(minutes=5), "assignee": str(OTHER_MANAGER)}, "QA"),
    ):
        answer = qa.post("schedule_callback", **params)
        assert answer.status_code == 400 and words in answer.get_json()["message"]
    answer = crm.client.post(
        qa.config["actionUrl"].replace("ACTION", "schedule_callback"), json={"note": 5}, headers=qa.headers
    )
    assert answer.status_code == 400 and answer.get_json()["message"]
    assert qa.post("no_such_action").status_code == 404


# -- who may do what ---------------------------------------------------------------------------


def test_a_manager_sees_the_tab_read_only_and_cannot_act(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    manager = Reviewer(crm, MANAGER, deal_id)
    assert manager.view["role"] == "manager"
    assert manager.view["actions"] == []
    answer = manager.post("recordings_confirm")
    assert answer.status_code == 403 and "QA" in answer.get_json()["message"]
    assert the_case(deal_id).state == RefusalCase.AWAITING_REVIEW
    own = manager.get("/api/review/queue")  # «Мои отказы»: his own open cases, nobody else's
    assert own.status_code == 200
    assert [case["deal_id"] for case in own.get_json()["cases"]] == [str(deal_id)]
    other = Reviewer(crm, OTHER_MANAGER, deal_id).get("/api/review/queue")
    assert other.status_code == 200 and other.get_json()["cases"] == []


def test_a_deal_without_a_case_says_so(crm: CrmDriver):
    deal_id = crm.new_deal()
    page = crm.open_review_page(QA, deal_id)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert 'id="rc-no-case"' in body and "По этой сделке нет проверки отказа" in body


# -- safety ------------------------------------------------------------------------------------


def test_an_action_on_a_deal_changed_since_the_page_loaded_is_refused_and_writes_nothing(crm: CrmDriver):
    deal_id, case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_confirm")
    shown = qa.view
    crm.reassign(deal_id, OTHER_MANAGER, by=HEAD)
    crm.settle()
    writes = crm.deal_writes(deal_id)
    answer = qa.post("close_lost", view=shown)
    assert answer.status_code == 409
    assert "changed in the CRM" in answer.get_json()["message"]
    assert crm.deal_writes(deal_id) == writes
    assert crm.stage_of(deal_id) == "refusal"
    assert the_case(deal_id).state == RefusalCase.CONFIRMED
    assert db.session.scalar(sa.select(Effect).where(Effect.key == f"case:{case.id}:outcome")) is None


def test_a_double_submit_writes_once(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_confirm")
    shown = qa.view
    writes = crm.deal_writes(deal_id)
    first = qa.post("close_lost", view=shown)
    second = qa.post("close_lost", view=shown)
    assert first.status_code == 200
    assert second.status_code == 409 and "already" in second.get_json()["message"]
    assert crm.deal_writes(deal_id) == writes + 1
    assert [e.action for e in review.timeline(the_case(deal_id))].count("close_lost") == 1


# -- callbacks in a real worker ----------------------------------------------------------------


def test_a_callback_fires_in_the_worker_and_creates_the_crm_todo(crm: CrmDriver):
    deal_id, case = case_in_review(crm)
    portal = crm.portal()
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_not_confirmed")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    due = time.monotonic() + 4
    qa.act("schedule_callback", at=local(seconds=4), assignee=str(QA2))  # rescheduled: replaces the job
    job_id = review.callback_job_id(portal.id, case.id)
    assert get_queue("callbacks").scheduled_job_registry.get_job_ids() == [job_id]
    statuses = [c.status for c in review.callbacks_of(the_case(deal_id))]
    assert statuses == [ReviewCallback.CANCELLED, ReviewCallback.SCHEDULED]
    crm.work()
    assert crm.callback_todos(deal_id) == []  # not yet due
    time.sleep(max(0.0, due - time.monotonic()) + 1.1)  # the form sends whole seconds
    crm.work()
    [todo] = crm.callback_todos(deal_id)
    assert todo.responsible == QA2 and todo.is_open
    assert todo.title.startswith("Перезвонить клиенту")
    assert todo.deadline is not None and abs((todo.deadline - utcnow()).total_seconds()) < 10  # due now
    assert [text for text in crm.notices(QA2) if "перезвонить" in text]
    assert get_queue("callbacks").scheduled_job_registry.get_job_ids() == []
    callback = review.active_callback(the_case(deal_id))
    assert callback is not None and callback.status == ReviewCallback.DUE and callback.todo_id == todo.id
    crm.work()
    assert len(crm.callback_todos(deal_id)) == 1  # never twice


# -- recordings --------------------------------------------------------------------------------


def test_a_recording_plays_through_our_endpoint_for_qa_only(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    crm.make_call(deal_id, MANAGER, duration=42)
    qa = Reviewer(crm, QA, deal_id)
    [call] = qa.view["calls"]
    assert call["playable"] and call["duration"]
    url = qa.config["recordingUrl"].replace("CALL", call["id"])
    audio = qa.get(url)
    assert audio.status_code == 200 and audio.mimetype.startswith("audio/")
    assert audio.get_data().startswith(crm.recording_magic)
    shown = json.dumps(qa.view)
    assert "/recordings/" not in shown and "crm_show_file" not in shown  # no CRM URL
    assert crm.portal().access_token not in shown  # nor token
    someone_else = Reviewer(crm, OTHER_MANAGER, deal_id)
    assert someone_else.view["calls"][0]["playable"] is False
    assert someone_else.get(url).status_code == 403
    assert qa.get(qa.config["recordingUrl"].replace("CALL", "999999")).status_code == 404


# -- the queue and settings --------------------------------------------------------------------


def test_the_queue_lists_open_cases_overdue_first_with_filters(crm: CrmDriver):
    first_deal, first = case_in_review(crm)
    second_deal, second = case_in_review(crm, manager=OTHER_MANAGER)
    second.review_due_at = utcnow() - timedelta(hours=2)
    db.session.commit()
    qa = Reviewer(crm, QA, first_deal)
    rows = qa.get("/api/review/queue").get_json()["cases"]
    assert [row["id"] for row in rows] == [second.id, first.id]
    assert rows[0]["overdue"] is True and rows[0]["seconds_left"] < 0
    assert rows[1]["overdue"] is False and rows[1]["seconds_left"] > 0
    assert rows[0]["url"] == crm.deal_url(second_deal)
    by_manager = qa.get(f"/api/review/queue?manager={MANAGER}").get_json()
    assert [row["id"] for row in by_manager["cases"]] == [first.id]
    assert {m["id"] for m in by_manager["filters"]["manager"]} == {str(MANAGER), str(OTHER_MANAGER)}
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    by_state = qa.get("/api/review/queue?state=callback_scheduled").get_json()
    assert [row["id"] for row in by_state["cases"]] == [first.id]
    assert by_state["cases"][0]["callback_at"]
    by_qa = qa.get(f"/api/review/queue?qa={first.qa_user_id}").get_json()
    assert first.id in [row["id"] for row in by_qa["cases"]]
    bad = qa.get("/api/review/queue?state=closed_lost")
    assert bad.status_code == 400 and bad.get_json()["message"]


def test_callback_settings_are_validated_and_admin_only(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    assert crm.client.put("/api/review/settings", json={"callback_attempts": 2}, headers=qa.headers).status_code == 403
    admin = Reviewer(crm, ADMIN, deal_id)
    answer = crm.client.put("/api/review/settings", json={"callback_attempts": 0}, headers=admin.headers)
    assert answer.status_code == 400 and "callback_attempts" in answer.get_json()["fields"]
    answer = crm.client.put("/api/review/settings", json={"callback_attempts": 4}, headers=admin.headers)
    assert answer.status_code == 200 and answer.get_json()["settings"]["callback_attempts"] == 4
    assert admin.get("/api/review/settings").get_json()["settings"] == {
        "callback_attempts": 4,
        "callback_interval_minutes": 120,
    }


def test_the_tab_speaks_the_portals_language(crm: CrmDriver):
    portal = crm.portal()
    portal.language = "en"
    db.session.commit()
    deal_id, _case = case_in_review(crm)
    page = crm.open_review_page(QA, deal_id).get_data(as_text=True)
    assert "Refusal review" in page and "Recordings confirm the reason" in page
    qa = Reviewer(crm, QA, deal_id)
    assert qa.view["case"]["state_label"] == "Awaiting review"
    assert qa.view["case"]["reason_label"] == "Price too high"


# -- a case ends cleanly: its QA task and callback to-dos are completed in the CRM ------------------


def qa_task(crm: CrmDriver, deal_id: str) -> CrmTask:
    """Our QA review task on the deal, as people see it in the CRM."""
    [task] = [t for t in crm.deal_tasks(deal_id) if t.title.startswith(QA_TASK_TITLE)]
    return task


def callback_todo_fired(crm: CrmDriver, qa: Reviewer, deal_id: str) -> CrmTask:
    """QA schedules a client callback and its time comes (the callback job runs): the call to-do is on the deal."""
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    callback = review.active_callback(the_case(deal_id))
    assert callback is not None
    assert review.fire_callback(callback.id) == "fired"
    crm.settle()
    qa.reload()
    [todo] = [t for t in crm.callback_todos(deal_id) if t.is_open]
    return todo


def assert_no_next_step_left(crm: CrmDriver, deal_id: str) -> None:
    """Task control (the «Проверить задачи» robot) sees no open task on the deal: nothing of ours counts."""
    assert crm.check_tasks_robot(deal_id) == (False, 0)


def test_closing_as_lost_completes_the_qa_task(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    assert qa_task(crm, deal_id).is_open
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_confirm")
    qa.act("close_lost", reason="price")
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert not qa_task(crm, deal_id).is_open
    crm.settle()
    assert not qa_task(crm, deal_id).is_open and len(crm.deal_tasks(deal_id)) == 1


def test_offer_again_completes_the_qa_task_and_the_deal_has_no_next_step_from_the_review(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    assert crm.check_tasks_robot(deal_id)[0], "the open QA task counts as a next step while the case is open"
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_confirm")
    qa.act("offer_again")
    assert the_case(deal_id).state == RefusalCase.WIN_BACK
    assert not qa_task(crm, deal_id).is_open
    assert_no_next_step_left(crm, deal_id)


def test_client_denies_completes_the_qa_task_and_the_callback_todo(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_none")
    todo = callback_todo_fired(crm, qa, deal_id)
    qa.act("client_denies", stage_id=crm.stage_id("working"))
    assert the_case(deal_id).state == RefusalCase.LEAKED
    assert not qa_task(crm, deal_id).is_open
    assert [t.is_open for t in crm.callback_todos(deal_id) if t.id == todo.id] == [False]
    assert_no_next_step_left(crm, deal_id)


def test_an_unreachable_client_decided_by_the_head_completes_the_task_and_every_callback_todo(crm: CrmDriver):
    portal = crm.portal()
    review.update_review_settings(portal, {"callback_attempts": 2, "callback_interval_minutes": 30})
    db.session.commit()
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_not_confirmed")
    first = callback_todo_fired(crm, qa, deal_id)
    qa.act("no_answer")
    second_callback = review.active_callback(the_case(deal_id))
    assert second_callback is not None and review.fire_callback(second_callback.id) == "fired"
    crm.settle()
    qa.reload()
    qa.act("no_answer")
    assert the_case(deal_id).state == RefusalCase.UNREACHABLE
    assert len([t for t in crm.callback_todos(deal_id) if t.is_open]) == 2  # the case is still open
    head = Reviewer(crm, HEAD, deal_id)
    head.act("offer_again", stage_id=crm.stage_id("working"))
    assert the_case(deal_id).state == RefusalCase.WIN_BACK
    todos = crm.callback_todos(deal_id)
    assert len(todos) == 2 and first.id in {t.id for t in todos}
    assert [t.is_open for t in todos] == [False, False]
    assert not qa_task(crm, deal_id).is_open
    assert_no_next_step_left(crm, deal_id)


def test_qa_closing_a_confirmed_deal_in_the_crm_completes_the_qa_task(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    Reviewer(crm, QA, deal_id).act("recordings_confirm")
    crm.move(deal_id, "lost", by=QA)
    crm.settle()
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert not qa_task(crm, deal_id).is_open


def test_a_withdrawn_case_completes_its_qa_task_and_callback_todo(crm: CrmDriver):
    deal_id, _case = case_in_review(crm)
    qa = Reviewer(crm, QA, deal_id)
    qa.act("recordings_none")
    todo = callback_todo_fired(crm, qa, deal_id)
    crm.move(deal_id, "late working", by=MANAGER)
    crm.settle()
    assert the_case(deal_id).state == RefusalCase.WITHDRAWN
    assert not qa_task(crm, deal_id).is_open
    assert [t.is_open for t in crm.callback_todos(deal_id) if t.id == todo.id] == [False]
    assert_no_next_step_left(crm, deal_id)
    # Each completion was one keyed effect, carried out once.
    case = the_case(deal_id)
    keys = db.session.scalars(
        sa.select(Effect.key).where(Effect.kind.in_(("complete_task", "complete_todo")), Effect.deal_id == deal_id)
    ).all()
    assert sorted(keys) == sorted(
        [f"case:{case.id}:qa_task:complete", *(f"callback:{c.id}:todo:complete" for c in review.callbacks_of(case))]
    )
