"""The guard scenarios of test_guard.py on an amoCRM account: real handlers, a real worker, the sandbox."""

import time

import pytest
import sqlalchemy as sa

from app.db import db
from app.models import AuditEntry, InboxItem, RefusalCase
from app.reconcile import reconcile_portal
from tests.integration.amo import (
    HEAD,
    MANAGER,
    QA,
    Amo,
    fill_refusal,
    new_lead,
    notice_tasks,
    qa_tasks,
)
from tests.integration.b24 import configure_guard

LOST = 143


@pytest.fixture
def guarded(amo_installed: Amo) -> Amo:
    configure_guard(amo_installed.our_portal())
    return amo_installed


def cases(lead_id: int) -> list[RefusalCase]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(RefusalCase).where(RefusalCase.deal_id == str(lead_id))))


def audit_rows(lead_id: int) -> list[AuditEntry]:
    return list(
        db.session.scalars(sa.select(AuditEntry).where(AuditEntry.deal_id == str(lead_id)).order_by(AuditEntry.id))
    )


def test_manager_closing_as_lost_with_reason_lands_in_conditional_refusal(guarded: Amo):
    lead_id = new_lead(guarded)
    fill_refusal(guarded, lead_id, MANAGER, "price", "Клиент сказал, что дорого")
    guarded.settle()
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == guarded.statuses()["refusal"]
    [case] = cases(lead_id)
    assert case.state == RefusalCase.AWAITING_REVIEW
    assert case.manager_id == str(MANAGER)
    assert case.reason == "price"
    assert case.previous_stage_id == str(guarded.statuses()["Переговоры"])
    assert case.qa_user_id in ("7", "8")
    [task] = qa_tasks(guarded, lead_id)
    assert str(task["responsible_user_id"]) == case.qa_user_id
    [notice] = notice_tasks(guarded, MANAGER)
    assert "Условный отказ" in notice["text"] and "Дорого" in notice["text"]
    assert f"https://{guarded.account.domain}/leads/detail/{lead_id}" in notice["text"]
    assert any(row.outcome == "moved to conditional refusal" for row in audit_rows(lead_id))


def test_manager_closing_as_lost_without_reason_goes_back_with_a_notice_task(guarded: Amo):
    lead_id = new_lead(guarded, status="Принимают решение")
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == guarded.statuses()["Принимают решение"]
    assert cases(lead_id) == []
    [notice] = notice_tasks(guarded, MANAGER)
    assert "нельзя закрыть" in notice["text"]
    assert audit_rows(lead_id)[-1].outcome == "reverted"


def test_entering_conditional_refusal_without_comment_goes_back(guarded: Amo):
    lead_id = new_lead(guarded)
    fill_refusal(guarded, lead_id, MANAGER, "price", comment="")
    guarded.settle()
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, guarded.statuses()["refusal"])
    guarded.settle()
    assert guarded.status(lead_id) == guarded.statuses()["Переговоры"]
    assert cases(lead_id) == []
    assert "причина отказа и комментарий" in notice_tasks(guarded, MANAGER)[0]["text"]


def test_entering_conditional_refusal_with_reason_and_comment_opens_a_case(guarded: Amo):
    lead_id = new_lead(guarded)
    fill_refusal(guarded, lead_id, MANAGER, "no_budget", "Бюджет урезали")
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, guarded.statuses()["refusal"])
    guarded.settle()
    assert guarded.status(lead_id) == guarded.statuses()["refusal"]
    assert [c.state for c in cases(lead_id)] == [RefusalCase.AWAITING_REVIEW]
    assert len(qa_tasks(guarded, lead_id)) == 1


@pytest.mark.parametrize("reviewer", [QA, HEAD])
def test_qa_and_heads_may_close_as_lost(guarded: Amo, reviewer: int):
    lead_id = new_lead(guarded)
    guarded.sandbox.act(guarded.account, reviewer).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == LOST
    assert notice_tasks(guarded, reviewer) == []
    assert audit_rows(lead_id)[-1].outcome == "closed without review"


def test_a_manager_leaving_conditional_refusal_withdraws_the_case(guarded: Amo):
    lead_id = new_lead(guarded)
    fill_refusal(guarded, lead_id, MANAGER, "price", "Дорого")
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, guarded.statuses()["refusal"])
    guarded.settle()
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, guarded.statuses()["Принимают решение"])
    guarded.settle()
    [case] = cases(lead_id)
    assert case.state == RefusalCase.WITHDRAWN and case.closed_at is not None


def test_our_own_revert_fires_webhooks_but_causes_no_further_write(guarded: Amo):
    lead_id = new_lead(guarded)
    path = f"/api/v4/leads/{lead_id}"
    patches_before = guarded.sandbox.api_calls(guarded.account, "PATCH", path)
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.deliver()
    guarded.work()
    assert guarded.sandbox.pending_hooks(), "the revert must fire update_lead/status_lead back, like amoCRM"
    reads_before_echo = guarded.sandbox.api_calls(guarded.account, "GET", path)
    guarded.settle()
    assert guarded.sandbox.api_calls(guarded.account, "PATCH", path) - patches_before == 1
    assert guarded.sandbox.api_calls(guarded.account, "GET", path) - reads_before_echo == 1  # one re-read, no write
    assert guarded.status(lead_id) == guarded.statuses()["Переговоры"]


def test_the_guard_takes_two_calls_read_and_write(guarded: Amo):
    lead_id = new_lead(guarded)
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.settle()  # warms the directory cache (users, pipelines)
    time.sleep(1.05)  # a new move in a later second: amoCRM's last_modified has one-second resolution
    before = guarded.sandbox.api_calls(guarded.account)
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.deliver()
    guarded.work()
    calls = [(method, path) for method, path, _status in guarded.account.calls[before:]]
    assert calls == [
        ("GET", f"/api/v4/leads/{lead_id}"),
        ("PATCH", f"/api/v4/leads/{lead_id}"),
        ("POST", "/api/v4/tasks"),  # the notice
    ]


def test_the_same_webhook_five_times_gives_one_outcome(guarded: Amo):
    lead_id = new_lead(guarded)
    fill_refusal(guarded, lead_id, MANAGER, "price", "Дорого")
    guarded.settle()
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    [hook] = guarded.sandbox.pending_hooks()
    for _ in range(5):
        response = guarded.client.post(hook.url, data=hook.body, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200
    guarded.settle()
    guarded.client.post(hook.url, data=hook.body, content_type="application/x-www-form-urlencoded")
    guarded.settle()
    assert guarded.status(lead_id) == guarded.statuses()["refusal"]
    assert len(cases(lead_id)) == 1
    assert len(qa_tasks(guarded, lead_id)) == 1
    assert len(notice_tasks(guarded, MANAGER)) == 1


def test_one_body_with_three_leads_gives_three_decisions(guarded: Amo):
    statuses = guarded.statuses()
    complete = new_lead(guarded, title="С причиной")
    fill_refusal(guarded, complete, MANAGER, "price", "Дорого")
    bare = new_lead(guarded, title="Без причины", status="Принимают решение")
    reviewed = new_lead(guarded, title="Проверено")
    guarded.settle()
    guarded.sandbox.act(guarded.account, MANAGER).move_leads(
        [(complete, LOST, None), (bare, LOST, None), (reviewed, statuses["Первичный контакт"], None)]
    )
    [hook] = guarded.sandbox.pending_hooks()
    assert hook.body.count("%5Bstatus%5D%5B") and "leads%5Bstatus%5D%5B2%5D" in hook.body
    guarded.settle()
    assert guarded.status(complete) == statuses["refusal"]
    assert guarded.status(bare) == statuses["Принимают решение"]
    assert guarded.status(reviewed) == statuses["Первичный контакт"]
    assert [c.state for c in cases(complete)] == [RefusalCase.AWAITING_REVIEW]
    assert cases(bare) == []
    rows = db.session.scalars(sa.select(InboxItem).where(InboxItem.body.contains(f'"lead_id": "{bare}"'))).all()
    assert rows and all(row.status == InboxItem.DONE for row in rows)
    # duplicates of that body change nothing
    for _ in range(3):
        response = guarded.client.post(hook.url, data=hook.body, content_type="application/x-www-form-urlencoded")
        assert response.get_json()["duplicates"] == 3
    guarded.settle()
    assert len(notice_tasks(guarded, MANAGER)) == 2


def test_moving_to_lost_of_another_pipeline_goes_back(guarded: Amo):
    main, other = guarded.pipelines()
    lead_id = new_lead(guarded, status="Принимают решение")
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST, pipeline_id=other)
    guarded.settle()
    assert guarded.sandbox.status_of(guarded.account, lead_id) == (main, guarded.statuses()["Принимают решение"])


def test_a_second_pipeline_is_guarded(guarded: Amo):
    other = guarded.pipelines()[1]
    lead_id = new_lead(guarded, status="В работе", pipeline=other)
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.sandbox.status_of(guarded.account, lead_id) == (other, guarded.statuses(other)["В работе"])


def test_automation_close_is_not_allowed_unless_exempted(guarded: Amo):
    lead_id = new_lead(guarded, status="Принимают решение")
    guarded.sandbox.act_as_automation(guarded.account).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == guarded.statuses()["Принимают решение"]
    assert audit_rows(lead_id)[-1].actor == "automation"
    assert len(notice_tasks(guarded, MANAGER)) == 1, "the responsible manager is told"
    configure_guard(guarded.our_portal(), exempt_automation=True)
    guarded.sandbox.act_as_automation(guarded.account).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == LOST


def test_a_dropped_webhook_is_caught_from_the_events_api(guarded: Amo):
    lead_id = new_lead(guarded, status="Принимают решение")
    guarded.sandbox.drop_next(1)
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == LOST, "the webhook was lost, nothing happened yet"
    counts = reconcile_portal(guarded.our_portal().id)
    guarded.settle()
    assert counts["offline_events"] >= 1 and counts["decided"] == 1
    assert guarded.status(lead_id) == guarded.statuses()["Принимают решение"]
    assert len(notice_tasks(guarded, MANAGER)) == 1
    again = reconcile_portal(guarded.our_portal().id)
    assert again["decided"] == 0


def test_unguarded_pipeline_is_left_alone(guarded: Amo):
    other = guarded.pipelines()[1]
    configure_guard(guarded.our_portal(), guarded_pipelines=[str(other)])
    lead_id = new_lead(guarded)
    guarded.sandbox.act(guarded.account, MANAGER).move_lead(lead_id, LOST)
    guarded.settle()
    assert guarded.status(lead_id) == LOST
