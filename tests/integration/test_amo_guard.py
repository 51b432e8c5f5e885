"""amoCRM-only guard cases: the API calls per decision (a read, a write, the notice's note and task) and several
leads in one webhook body. The scenarios shared with Bitrix24 are in tests/scenarios/test_guard.py."""

import time

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import InboxItem, RefusalCase
from sandbox import ManualClock
from tests.integration.amo import (
    MANAGER,
    Amo,
    fill_refusal,
    new_lead,
    notice_tasks,
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


def test_the_guard_reads_once_writes_once_and_notifies_on_the_lead(guarded: Amo):
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
        ("POST", "/api/v4/leads/notes"),  # the notice on the lead
        ("POST", "/api/v4/tasks"),  # and the manager's task linked to it
    ]


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


def test_a_loss_reason_picked_in_amocrm_counts_as_the_company_reason_of_that_name(guarded: Amo):
    """The account has loss reasons («Дорого», «Купили у конкурентов»): a manager who closes a lead as lost with
    «Дорого» in amoCRM's own dialog and a comment in ours lands in Conditional refusal with the reason «Дорого»; a
    loss reason the company has no reason for counts as no reason."""
    account = guarded.account
    by_name = {name: rid for rid, name in account.loss_reasons.items()}
    lead_id = new_lead(guarded)
    fill_refusal(guarded, lead_id, MANAGER, reason=None, comment="Говорит, что дорого")
    guarded.settle()
    guarded.sandbox.act(account, MANAGER).lose_lead(lead_id, by_name["Дорого"])
    guarded.settle()
    [case] = cases(lead_id)
    assert case.reason == "price"
    assert guarded.sandbox.lead(account, lead_id)["status_id"] != LOST

    other = new_lead(guarded, title="Другая сделка")
    fill_refusal(guarded, other, MANAGER, reason=None, comment="Ушли к конкурентам")
    guarded.settle()
    guarded.sandbox.act(account, MANAGER).lose_lead(other, by_name["Купили у конкурентов"])
    guarded.settle()
    assert cases(other) == []
    assert any("нельзя закрыть" in task["text"] for task in notice_tasks(guarded, MANAGER))


def test_a_retry_of_a_processed_webhook_is_a_duplicate_but_a_same_second_change_is_not(guarded: Amo):
    """amoCRM resends a body it thinks we missed (after 5 and 15 minutes, and after an hour): even once the first
    delivery was decided, the retry is recognised. Another change of the lead in the same second by the same
    manager (amoCRM stamps whole seconds) differs in what it reports of the lead and is decided."""
    lead_id = new_lead(guarded)
    guarded.settle()
    guarded.sandbox.clock = ManualClock()  # the account's clock stands still: one second for both changes
    guarded.account.rate_limit = None
    comment = guarded.our_portal().settings["amo_fields"]["refusal_comment"]["field"]
    guarded.sandbox.act(guarded.account, MANAGER).set_fields(lead_id, {comment: "первая правка"})
    [first] = guarded.sandbox.pending_hooks()
    guarded.settle()
    reads = guarded.sandbox.api_calls(guarded.account, "GET", f"/api/v4/leads/{lead_id}")

    retry = guarded.client.post(first.url, data=first.body, content_type="application/x-www-form-urlencoded")
    assert retry.status_code == 200 and retry.get_json()["duplicates"] == 1
    guarded.settle()
    assert guarded.sandbox.api_calls(guarded.account, "GET", f"/api/v4/leads/{lead_id}") == reads

    guarded.sandbox.act(guarded.account, MANAGER).set_fields(lead_id, {comment: "вторая правка"})
    [second] = guarded.sandbox.pending_hooks()
    assert second.body != first.body
    answer = guarded.client.post(second.url, data=second.body, content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 200 and answer.get_json()["accepted"] == 1
