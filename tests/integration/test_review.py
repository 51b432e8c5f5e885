"""The QA review through the deal tab's endpoints, a real worker and the sandbox portal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask

from app import review
from app.db import db
from app.models import Effect, Penalty, RefusalCase, ReviewCallback, utcnow
from app.penalties import update_cpl_settings
from app.queue import get_queue
from app.sandbox.mount import responses_sandbox
from app.security import Identity, issue_token
from tests.integration.b24 import APP_URL, B24, configure_guard, new_deal
from tests.integration.conftest import make_b24
from tests.integration.review_helpers import (
    HEAD,
    MANAGER,
    OTHER_MANAGER,
    QA,
    QA2,
    Reviewer,
    case_in_review,
    deal_field,
    open_tab,
    tab_form,
    the_case,
)


@pytest.fixture
def guarded(installed: B24) -> B24:
    configure_guard(installed.our_portal())
    update_cpl_settings(installed.our_portal(), {"by_source": {"WEB": "1500"}})
    db.session.commit()
    return installed


@pytest.fixture
def two_portals(app: Flask) -> Iterator[tuple[B24, B24]]:
    """Two installed portals of the same app in one sandbox."""
    sandbox, first = make_b24(app)
    second = sandbox.seed_portal(
        domain="b.bitrix24.test",
        installed=False,
        app_url=APP_URL,
        seed=7,
        client_id=first.client_id,
        client_secret=first.client_secret,
    )
    sandbox.set_rate_limit(second, rate=200, burst=200)
    with responses_sandbox(sandbox):
        ours = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=first)
        theirs = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=second)
        for b24 in (ours, theirs):
            b24.install()
            configure_guard(b24.our_portal())
        yield ours, theirs


def local(minutes: float = 0, seconds: float = 0) -> str:
    """A moment from now as the tab's date-time field sends it (portal time, Moscow)."""
    moment = utcnow() + timedelta(minutes=minutes, seconds=seconds)
    return moment.astimezone(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%dT%H:%M:%S")


def todos(b24: B24, deal_id: int) -> list[dict]:
    return [
        a
        for a in b24.portal.activities.values()
        if a["PROVIDER_ID"] == "CRM_TODO" and a["OWNER_ID"] == deal_id and a["OWNER_TYPE_ID"] == 2
    ]


def deal_updates(b24: B24, deal_id: int) -> int:
    """Successful crm.deal.update calls on the deal."""
    calls = b24.sandbox.calls(b24.portal, "crm.deal.update")
    return sum(1 for c in calls if str(c.params.get("id")) == str(deal_id) and c.status == 200)


# -- the paths ---------------------------------------------------------------------------------


def test_recordings_confirm_then_close_as_lost(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    assert qa.view["actions"] == ["recordings_confirm", "recordings_not_confirmed", "recordings_none"]
    assert qa.view["case"]["manager"]["id"] == str(MANAGER)
    assert qa.view["case"]["cpl"].startswith("1") and "RUB" in qa.view["case"]["cpl"]
    qa.act("recordings_confirm", "На записи клиент говорит про цену")
    assert qa.view["case"]["state"] == RefusalCase.CONFIRMED
    assert qa.view["actions"] == ["close_lost", "offer_again"]
    qa.act("close_lost", reason="price")
    assert guarded.stage(deal_id) == "LOSE"
    assert deal_field(guarded, deal_id, "qa_verdict") == "confirmed"
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert [step["action"] for step in qa.view["timeline"]][-2:] == ["recordings_confirm", "close_lost"]
    assert qa.view["actions"] == []
    # The echo of our own write was recognised: the deal stayed lost and nobody got a violation notice.
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE"
    assert guarded.sandbox.notifications(guarded.portal, QA) == []


def test_not_confirmed_callback_client_confirms_close_lost_with_another_reason(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_not_confirmed", "Про цену на записях ни слова")
    assert qa.view["actions"] == ["schedule_callback"]
    qa.act("schedule_callback", at=local(minutes=60), assignee=str(QA2))
    assert qa.view["case"]["state"] == RefusalCase.CALLBACK_SCHEDULED
    assert qa.view["callback"]["assignee"]["id"] == str(QA2)
    qa.act("client_confirms", "Клиент купил у конкурента")
    assert qa.view["case"]["state"] == RefusalCase.CONFIRMED
    assert review.scheduled_callback_jobs(guarded.our_portal().id, the_case(deal_id).id) == []
    qa.act("close_lost", reason="bought_elsewhere")
    assert guarded.stage(deal_id) == "LOSE"
    assert deal_field(guarded, deal_id, "refusal_reason") == "bought_elsewhere"
    assert the_case(deal_id).reason == "bought_elsewhere"


def test_client_denies_returns_the_deal_to_another_manager_with_a_fine(guarded: B24):
    deal_id, case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    qa.act("client_denies", "Клиент ждёт КП", stage_id="EXECUTING")
    deal = guarded.sandbox.deal(guarded.portal, deal_id)
    assert deal["STAGE_ID"] == "EXECUTING"
    assert deal["ASSIGNED_BY_ID"] not in (str(MANAGER), MANAGER)
    assert int(deal["ASSIGNED_BY_ID"]) in (3, 4, 5, 6)
    assert deal_field(guarded, deal_id, "qa_verdict") == "leaked"
    [fine] = db.session.scalars(sa.select(Penalty).where(Penalty.case_id == case.id)).all()
    assert (fine.manager_id, fine.amount, fine.currency) == (str(MANAGER), Decimal("1500.00"), "RUB")
    [notice] = guarded.sandbox.notifications(guarded.portal, MANAGER)[-1:]
    assert "штраф" in notice.message and "1" in notice.message
    assert guarded.sandbox.notifications(guarded.portal, int(deal["ASSIGNED_BY_ID"]))
    assert the_case(deal_id).state == RefusalCase.LEAKED
    guarded.settle()
    assert guarded.stage(deal_id) == "EXECUTING"  # our own write did not trip the guard


def test_returning_to_sales_never_gives_the_deal_back_to_the_leaker(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    answer = qa.post("client_denies", stage_id="EXECUTING", manager_id=str(MANAGER))
    assert answer.status_code == 400 and "leaked" in answer.get_json()["message"]
    answer = qa.post("client_denies", stage_id="WON", manager_id=str(OTHER_MANAGER))
    assert answer.status_code == 400 and "stage" in answer.get_json()["message"]
    qa.act("client_denies", stage_id="EXECUTING", manager_id=str(OTHER_MANAGER))
    assert str(guarded.sandbox.deal(guarded.portal, deal_id)["ASSIGNED_BY_ID"]) == str(OTHER_MANAGER)


def test_no_answer_until_the_limit_makes_the_client_unreachable_and_heads_decide(guarded: B24):
    portal = guarded.our_portal()
    review.update_review_settings(portal, {"callback_attempts": 2, "callback_interval_minutes": 30})
    db.session.commit()
    deal_id, case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
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
    assert deal_field(guarded, deal_id, "qa_verdict") == "unreachable"
    [notice] = guarded.sandbox.notifications(guarded.portal, HEAD)
    assert "не ответил" in notice.message
    assert qa.post("close_lost").status_code == 403
    head = Reviewer(guarded, HEAD, deal_id)
    assert head.view["actions"] == ["close_lost", "offer_again", "return_to_sales"]
    head.act("return_to_sales", stage_id="PREPARATION")
    assert the_case(deal_id).state == RefusalCase.LEAKED
    assert int(guarded.sandbox.deal(guarded.portal, deal_id)["ASSIGNED_BY_ID"]) in (3, 4, 5, 6)


def test_offer_again_returns_the_deal_to_the_same_manager(guarded: B24):
    deal_id, _case = case_in_review(guarded, stage="EXECUTING")
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_confirm")
    assert qa.view["choices"]["default_stage"] == "EXECUTING"
    qa.act("offer_again", "Предложить скидку")
    deal = guarded.sandbox.deal(guarded.portal, deal_id)
    assert (deal["STAGE_ID"], str(deal["ASSIGNED_BY_ID"])) == ("EXECUTING", str(MANAGER))
    assert deal_field(guarded, deal_id, "qa_verdict") == "win_back"
    assert the_case(deal_id).state == RefusalCase.WIN_BACK
    assert any("снова" in n.message for n in guarded.sandbox.notifications(guarded.portal, MANAGER))
    guarded.settle()
    assert guarded.stage(deal_id) == "EXECUTING"
    assert the_case(deal_id).state == RefusalCase.WIN_BACK


def test_cancelling_a_callback_goes_back_to_scheduling(guarded: B24):
    deal_id, case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_not_confirmed")
    qa.act("schedule_callback", at=local(minutes=10), assignee=str(QA))
    qa.act("cancel_callback")
    assert qa.view["case"]["state"] == RefusalCase.AWAITING_REVIEW
    assert qa.view["actions"] == ["schedule_callback"]
    assert review.scheduled_callback_jobs(guarded.our_portal().id, case.id) == []


def test_bad_callback_input_is_refused_with_a_message(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_none")
    for params, words in (
        ({"at": local(minutes=-5), "assignee": str(QA)}, "future"),
        ({"at": "tomorrow", "assignee": str(QA)}, "YYYY"),
        ({"at": local(minutes=5), "assignee": str(OTHER_MANAGER)}, "QA"),
    ):
        answer = qa.post("schedule_callback", **params)
        assert answer.status_code == 400 and words in answer.get_json()["message"]
    answer = guarded.client.post(
        qa.config["actionUrl"].replace("ACTION", "schedule_callback"), json={"note": 5}, headers=qa.headers
    )
    assert answer.status_code == 400 and answer.get_json()["message"]
    answer = qa.post("no_such_action")
    assert answer.status_code == 404


# -- who may do what ---------------------------------------------------------------------------


def test_a_manager_sees_the_tab_read_only_and_cannot_act(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    manager = Reviewer(guarded, MANAGER, deal_id)
    assert manager.view["role"] == "manager"
    assert manager.view["actions"] == []
    answer = manager.post("recordings_confirm")
    assert answer.status_code == 403 and "QA" in answer.get_json()["message"]
    assert the_case(deal_id).state == RefusalCase.AWAITING_REVIEW
    queue = guarded.client.get("/api/review/queue", headers=manager.headers)
    assert queue.status_code == 403


def test_a_forged_or_incomplete_frame_is_refused(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    url = f"/b24/placement/deal-tab?DOMAIN={guarded.portal.domain}&LANG=ru"
    forged = {**tab_form(guarded, QA, deal_id), "APPLICATION_TOKEN": "f" * 32}
    assert guarded.client.post(url, data=forged).status_code == 401
    bogus_user = {**tab_form(guarded, QA, deal_id), "AUTH_ID": "not-a-token"}
    assert guarded.client.post(url, data=bogus_user).status_code == 401
    unknown = {**tab_form(guarded, QA, deal_id), "member_id": "0" * 32}
    assert guarded.client.post(url, data=unknown).status_code == 401
    no_deal = {**tab_form(guarded, QA, deal_id), "PLACEMENT_OPTIONS": "{}"}
    answer = guarded.client.post(url, data=no_deal)
    assert answer.status_code == 400 and answer.get_json()["message"]
    page = open_tab(guarded, QA, deal_id)
    assert page.headers["Content-Security-Policy"] == f"frame-ancestors https://{guarded.portal.domain}"
    assert "Set-Cookie" not in page.headers


def test_a_deal_without_a_case_says_so(guarded: B24):
    deal_id = new_deal(guarded)
    page = open_tab(guarded, QA, deal_id)
    assert page.status_code == 200
    assert "По этой сделке нет проверки отказа" in page.get_data(as_text=True)


# -- safety ------------------------------------------------------------------------------------


def test_an_action_on_a_deal_changed_since_the_page_loaded_is_refused_and_writes_nothing(guarded: B24):
    deal_id, case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_confirm")
    shown = qa.view
    writes = deal_updates(guarded, deal_id)
    guarded.sandbox.act(guarded.portal, HEAD).update_deal(deal_id, {"ASSIGNED_BY_ID": OTHER_MANAGER})
    guarded.settle()
    answer = qa.post("close_lost", view=shown)
    assert answer.status_code == 409
    assert "changed in the CRM" in answer.get_json()["message"]
    assert deal_updates(guarded, deal_id) == writes
    assert guarded.stage(deal_id) == "RC_REFUSAL"
    assert the_case(deal_id).state == RefusalCase.CONFIRMED
    assert db.session.scalar(sa.select(Effect).where(Effect.key == f"case:{case.id}:outcome")) is None


def test_a_double_submit_writes_once(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_confirm")
    shown = qa.view
    writes = deal_updates(guarded, deal_id)
    first = qa.post("close_lost", view=shown)
    second = qa.post("close_lost", view=shown)
    assert first.status_code == 200
    assert second.status_code == 409 and "already" in second.get_json()["message"]
    assert deal_updates(guarded, deal_id) == writes + 1
    assert [e.action for e in review.timeline(the_case(deal_id))].count("close_lost") == 1


# -- callbacks in a real worker ----------------------------------------------------------------


def test_a_callback_fires_in_the_worker_and_creates_the_crm_todo(guarded: B24):
    deal_id, case = case_in_review(guarded)
    portal = guarded.our_portal()
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_not_confirmed")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    qa.act("schedule_callback", at=local(seconds=2), assignee=str(QA2))  # rescheduled: replaces the job
    job_id = review.callback_job_id(portal.id, case.id)
    assert get_queue("callbacks").scheduled_job_registry.get_job_ids() == [job_id]
    statuses = [c.status for c in review.callbacks_of(the_case(deal_id))]
    assert statuses == [ReviewCallback.CANCELLED, ReviewCallback.SCHEDULED]
    guarded.work()
    assert todos(guarded, deal_id) == []  # not yet due
    time.sleep(2.3)
    guarded.work()
    [todo] = todos(guarded, deal_id)
    assert todo["RESPONSIBLE_ID"] == QA2
    assert "Перезвонить клиенту" in todo["SUBJECT"]
    [notice] = guarded.sandbox.notifications(guarded.portal, QA2)
    assert "перезвонить" in notice.message
    assert get_queue("callbacks").scheduled_job_registry.get_job_ids() == []
    callback = review.active_callback(the_case(deal_id))
    assert callback is not None and callback.status == ReviewCallback.DUE and callback.todo_id == str(todo["ID"])
    guarded.work()
    assert len(todos(guarded, deal_id)) == 1  # never twice


# -- recordings --------------------------------------------------------------------------------


def _deal_with_call(b24: B24) -> tuple[int, RefusalCase]:
    deal_id = new_deal(b24)
    b24.sandbox.act(b24.portal, MANAGER).make_call(deal_id, duration=42)
    from tests.integration.b24 import fill_refusal

    fill_refusal(b24, deal_id, MANAGER, "price", "Дорого")
    b24.settle()
    b24.sandbox.act(b24.portal, MANAGER).move_deal(deal_id, "LOSE")
    b24.settle()
    return deal_id, the_case(deal_id)


def test_a_recording_plays_through_our_endpoint_for_qa_only(guarded: B24):
    deal_id, _case = _deal_with_call(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    [call] = qa.view["calls"]
    assert call["playable"] and call["duration"]
    url = qa.config["recordingUrl"].replace("CALL", call["id"])
    audio = guarded.client.get(url, headers=qa.headers)
    assert audio.status_code == 200
    assert audio.mimetype == "audio/wav"
    assert audio.get_data()[:4] == b"RIFF"
    shown = json.dumps(qa.view)
    assert "/recordings/" not in shown and guarded.our_portal().access_token not in shown  # no portal URL or token
    someone_else = Reviewer(guarded, OTHER_MANAGER, deal_id)
    assert someone_else.view["calls"][0]["playable"] is False
    assert guarded.client.get(url, headers=someone_else.headers).status_code == 403
    missing = guarded.client.get(qa.config["recordingUrl"].replace("CALL", "999999"), headers=qa.headers)
    assert missing.status_code == 404


# -- tenants -----------------------------------------------------------------------------------


def test_another_portals_token_gets_404_on_every_case_endpoint(two_portals: tuple[B24, B24]):
    ours, theirs = two_portals
    deal_id, case = _deal_with_call(ours)
    qa = Reviewer(ours, QA, deal_id)
    call_id = qa.view["calls"][0]["id"]
    foreign = {"X-RC-Token": issue_token(Identity(portal_id=theirs.our_portal().id, user_id=str(QA)))}
    body = {"version": qa.view["version"], "expected": qa.view["expected"], "note": "", "params": {}}
    assert ours.client.get(qa.config["caseUrl"], headers=foreign).status_code == 404
    action = qa.config["actionUrl"].replace("ACTION", "recordings_confirm")
    assert ours.client.post(action, json=body, headers=foreign).status_code == 404
    recording = qa.config["recordingUrl"].replace("CALL", call_id)
    assert ours.client.get(recording, headers=foreign).status_code == 404
    assert the_case(deal_id).state == RefusalCase.AWAITING_REVIEW
    their_queue = ours.client.get("/api/review/queue", headers=foreign)
    assert their_queue.status_code == 200 and their_queue.get_json()["cases"] == []
    our_queue = ours.client.get("/api/review/queue", headers=qa.headers)
    assert [row["id"] for row in our_queue.get_json()["cases"]] == [case.id]
    # A frame of the other portal cannot open our deal's case either: it sees its own (none).
    page = open_tab(theirs, QA, deal_id)
    assert "По этой сделке нет проверки отказа" in page.get_data(as_text=True)


# -- the queue and settings --------------------------------------------------------------------


def test_the_queue_lists_open_cases_overdue_first_with_filters(guarded: B24):
    first_deal, first = case_in_review(guarded)
    second_deal, second = case_in_review(guarded, manager=OTHER_MANAGER)
    second.review_due_at = utcnow() - timedelta(hours=2)
    db.session.commit()
    qa = Reviewer(guarded, QA, first_deal)
    rows = guarded.client.get("/api/review/queue", headers=qa.headers).get_json()["cases"]
    assert [row["id"] for row in rows] == [second.id, first.id]
    assert rows[0]["overdue"] is True and rows[0]["seconds_left"] < 0
    assert rows[1]["overdue"] is False and rows[1]["seconds_left"] > 0
    assert rows[0]["url"].endswith(f"/crm/deal/details/{second_deal}/")
    by_manager = guarded.client.get(f"/api/review/queue?manager={MANAGER}", headers=qa.headers).get_json()
    assert [row["id"] for row in by_manager["cases"]] == [first.id]
    assert {m["id"] for m in by_manager["filters"]["manager"]} == {str(MANAGER), str(OTHER_MANAGER)}
    qa.act("recordings_none")
    qa.act("schedule_callback", at=local(minutes=30), assignee=str(QA))
    by_state = guarded.client.get("/api/review/queue?state=callback_scheduled", headers=qa.headers).get_json()
    assert [row["id"] for row in by_state["cases"]] == [first.id]
    assert by_state["cases"][0]["callback_at"]
    by_qa = guarded.client.get(f"/api/review/queue?qa={first.qa_user_id}", headers=qa.headers).get_json()
    assert first.id in [row["id"] for row in by_qa["cases"]]
    bad = guarded.client.get("/api/review/queue?state=closed_lost", headers=qa.headers)
    assert bad.status_code == 400 and bad.get_json()["message"]


def test_callback_settings_are_validated_and_admin_only(guarded: B24):
    deal_id, _case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    assert (
        guarded.client.put("/api/review/settings", json={"callback_attempts": 2}, headers=qa.headers).status_code == 403
    )
    admin = Reviewer(guarded, 1, deal_id)
    answer = guarded.client.put("/api/review/settings", json={"callback_attempts": 0}, headers=admin.headers)
    assert answer.status_code == 400 and "callback_attempts" in answer.get_json()["fields"]
    answer = guarded.client.put("/api/review/settings", json={"callback_attempts": 4}, headers=admin.headers)
    assert answer.status_code == 200 and answer.get_json()["settings"]["callback_attempts"] == 4
    assert guarded.client.get("/api/review/settings", headers=admin.headers).get_json()["settings"] == {
        "callback_attempts": 4,
        "callback_interval_minutes": 120,
    }


def test_an_outcome_the_crm_refuses_for_now_is_written_once_when_it_answers_again(guarded: B24):
    deal_id, case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    qa.act("recordings_confirm")
    writes = deal_updates(guarded, deal_id)
    guarded.app.config["B24_RETRY_ATTEMPTS"] = 1
    guarded.sandbox.force_operation_limit(guarded.portal, "crm.deal.update", times=-1)
    answer = qa.post("close_lost")
    assert answer.status_code == 200  # the decision is recorded; the CRM catches up later
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert guarded.stage(deal_id) == "RC_REFUSAL"
    pending = db.session.scalar(sa.select(Effect).where(Effect.key == f"case:{case.id}:outcome"))
    assert pending is not None and pending.status == Effect.PENDING
    guarded.sandbox.force_operation_limit(guarded.portal, "crm.deal.update", times=0)
    guarded.settle()
    assert guarded.stage(deal_id) == "LOSE"
    assert deal_updates(guarded, deal_id) == writes + 1


def test_the_tab_speaks_the_portals_language(guarded: B24):
    portal = guarded.our_portal()
    portal.language = "en"
    db.session.commit()
    deal_id, _case = case_in_review(guarded)
    page = open_tab(guarded, QA, deal_id).get_data(as_text=True)
    assert "Refusal review" in page and "Recordings confirm the reason" in page
    qa = Reviewer(guarded, QA, deal_id)
    assert qa.view["case"]["state_label"] == "Awaiting review"
    assert qa.view["case"]["reason_label"] == "Price too high"
