"""A group action on both CRMs: a manager sets 100 deals to lost at once (one event per deal), at the CRM's
production rate limit (Bitrix24 2 requests/s with a burst of 50, amoCRM 7 requests/s). The events waiting for
a portal are decided together, so every deal comes back with a handful of requests, and our own reverts'
echoes cost none."""

import time

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, InboxItem, RefusalCase
from tests.scenarios.driver import MANAGER, CrmDriver, qa_tasks

GROUP = 100


def _reverted(deal_ids: list[str]) -> dict[str, int]:
    db.session.expire_all()
    rows = db.session.scalars(
        sa.select(AuditEntry).where(AuditEntry.deal_id.in_(deal_ids), AuditEntry.outcome == "reverted")
    ).all()
    counts = dict.fromkeys(deal_ids, 0)
    for row in rows:
        counts[str(row.deal_id)] += 1
    return counts


def test_a_hundred_deals_set_to_lost_at_once_all_come_back_with_a_few_requests(crm: CrmDriver):
    deal_ids = [crm.new_deal(title=f"Сделка {n}") for n in range(GROUP)]
    crm.settle()
    before = crm.http_requests()

    for deal_id in deal_ids:
        crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()

    assert [crm.stage_of(deal_id) for deal_id in deal_ids] == ["working"] * GROUP
    notices = crm.notices(MANAGER)
    assert len(notices) == GROUP, "the manager is told about every deal"
    assert all(any(crm.deal_url(deal_id) in notice for notice in notices) for deal_id in deal_ids)
    assert set(_reverted(deal_ids).values()) == {1}, "one audit row per deal"
    requests = crm.http_requests() - before
    assert requests / GROUP <= 0.15, f"{requests} requests for {GROUP} deals, their echoes included"
    db.session.expire_all()
    left = db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem).where(InboxItem.status != "done"))
    assert left == 0, "every event, the echoes included, is decided"


def test_a_deal_moved_again_after_the_group_revert_is_decided_again(crm: CrmDriver):
    deal_ids = [crm.new_deal(title=f"Сделка {n}") for n in range(10)]
    crm.settle()
    for deal_id in deal_ids:
        crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()

    again = deal_ids[3]
    time.sleep(1.05)  # a later second: amoCRM's last_modified (and so its delivery's key) has whole seconds
    crm.move(again, "lost", by=MANAGER)
    crm.settle()

    assert crm.stage_of(again) == "working"
    assert _reverted(deal_ids)[again] == 2
    assert len(crm.notices(MANAGER)) == 11


def _cases(deal_ids: list[str]) -> list[RefusalCase]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(RefusalCase).where(RefusalCase.deal_id.in_(deal_ids))))


def test_a_group_closed_with_reasons_gets_its_qa_tasks_and_its_withdrawal_completes_them_in_a_few_requests(
    crm: CrmDriver,
):
    deal_ids = [crm.new_deal(title=f"Сделка {n}") for n in range(GROUP)]
    for deal_id in deal_ids:
        crm.fill_refusal(deal_id, MANAGER, "price", "Дорого")
    crm.settle()
    before = crm.http_requests()

    for deal_id in deal_ids:
        crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()

    assert [crm.stage_of(deal_id) for deal_id in deal_ids] == ["refusal"] * GROUP
    tasks = {deal_id: qa_tasks(crm, deal_id) for deal_id in deal_ids}
    assert all(len(found) == 1 and found[0].is_open for found in tasks.values()), "one open QA task per deal"
    cases = _cases(deal_ids)
    assert len(cases) == GROUP
    assert all(case.qa_task_id == tasks[str(case.deal_id)][0].id for case in cases)
    requests = crm.http_requests() - before
    assert requests / GROUP <= 0.15, f"{requests} requests for {GROUP} deals, their QA tasks included"

    before = crm.http_requests()
    for deal_id in deal_ids:
        crm.move(deal_id, "late working", by=MANAGER)
    crm.settle()

    assert [crm.stage_of(deal_id) for deal_id in deal_ids] == ["late working"] * GROUP
    assert {case.state for case in _cases(deal_ids)} == {RefusalCase.WITHDRAWN}
    assert not any(task.is_open for deal_id in deal_ids for task in qa_tasks(crm, deal_id)), "every QA task done"
    requests = crm.http_requests() - before
    assert requests / GROUP <= 0.15, f"{requests} requests for {GROUP} withdrawals, the tasks' completion included"
