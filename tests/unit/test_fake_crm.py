"""The fake keeps the port's contracts (so a rule that passes here relies on nothing a real CRM would not do)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.crm.errors import CrmError
from app.crm.port import Deal, DealChange, NewTodo, Notice, Task
from tests.unit.conftest import MANAGER, QA, seeded_crm
from tests.unit.fake_crm import InMemoryCrm


def test_a_keyed_notice_sent_again_shows_once() -> None:
    crm = seeded_crm()

    crm.notify(MANAGER, "first", key="k")
    crm.notify(MANAGER, "again", key="k")
    crm.notify(MANAGER, "plain")
    crm.notify(MANAGER, "plain")

    assert crm.inbox(MANAGER) == ["again", "plain", "plain"]
    assert len(crm.writes) == 4, "every write is recorded"


def test_update_and_notify_gives_one_outcome_per_write_and_no_notice_after_a_failed_change() -> None:
    crm = seeded_crm()
    deal = crm.add_deal(stage_id="LOSE", responsible_id=MANAGER)
    notices = [Notice(MANAGER, "moved back"), Notice(QA, "fyi")]

    crm.fail_next("update_deal")
    failed = crm.update_deal_and_notify(deal.id, DealChange(stage_id="WORKING"), notices)
    crm.fail_next("notify")
    partly = crm.update_deal_and_notify(deal.id, DealChange(stage_id="WORKING"), notices)

    assert len(failed) == 3 and all(isinstance(outcome, CrmError) for outcome in failed)
    assert partly[0] is None and isinstance(partly[1], CrmError) and partly[2] is None
    assert crm.deals[deal.id].stage_id == "WORKING"
    assert (crm.inbox(MANAGER), crm.inbox(QA)) == ([], ["fyi"])


def test_drained_changes_are_acknowledged_only_after_the_handler_returns() -> None:
    crm = seeded_crm()
    first = crm.add_deal(stage_id="NEW", responsible_id=MANAGER)
    crm.move(first.id, "WORKING", by=MANAGER)

    def broken(ids: list[str]) -> None:
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        crm.drain_deal_changes(broken)
    seen: list[list[str]] = []

    assert crm.drain_deal_changes(seen.append) == 2
    assert seen == [[first.id]]
    assert crm.drain_deal_changes(seen.append) == 0
    assert InMemoryCrm(keeps_change_queue=False).drain_deal_changes(seen.append) is None, "no queue: sweep instead"


def test_open_work_lists_every_task_before_the_first_deal() -> None:
    crm = seeded_crm()
    deals = [crm.add_deal(stage_id="WORKING", responsible_id=MANAGER) for _ in range(2)]
    crm.add_deal(stage_id="WON", responsible_id=MANAGER)
    done = crm.add_task(deals[0].id, MANAGER)
    crm.complete_task(done.id)
    crm.add_task(deals[1].id, MANAGER, deadline=crm.clock - timedelta(days=1))
    crm.create_todo(NewTodo("Call", MANAGER, deals[0].id, crm.clock + timedelta(days=1)))
    crm.add_task(None, MANAGER)  # bound to no deal

    work = list(crm.iter_open_work())

    kinds = ["deal" if isinstance(item, Deal) else "task" for item in work]
    assert kinds == ["task", "task", "deal", "deal"]
    tasks = [item for item in work if isinstance(item, Task)]
    assert [(task.kind, task.overdue) for task in tasks] == [("task", True), ("todo", False)]
    assert [task.kind for task in crm.open_deal_tasks(deals[0].id)] == ["todo"]
    assert crm.list_deal_tasks(deals[0].id)[0].is_open is False


def test_stage_before_reads_the_stage_history() -> None:
    crm = seeded_crm()
    deal = crm.add_deal(stage_id="NEW", responsible_id=MANAGER)
    for stage in ("WORKING", "LOSE", "LATE", "LOSE"):
        crm.move(deal.id, stage, by=MANAGER)

    assert crm.stage_before(deal.id, "LOSE") == "LATE"
    assert crm.stage_before(deal.id, "NEW") is None
    assert crm.stage_before(deal.id, "WON") is None


def test_our_writes_carry_the_apps_user_and_a_robots_move_no_user() -> None:
    crm = seeded_crm()
    deal = crm.add_deal(stage_id="NEW", responsible_id=MANAGER)

    crm.move(deal.id, "WORKING", by=None)
    assert crm.deals[deal.id].moved_by_id is None
    crm.update_deal(deal.id, DealChange(stage_id="LATE", qa_verdict="confirmed"))

    moved = crm.get_deal(deal.id)
    assert (moved.moved_by_id, moved.stage_semantics, moved.qa_verdict) == (crm.app_user_id, "process", "confirmed")
    assert crm.get_deals([deal.id, "404"]) == {deal.id: moved}
    with pytest.raises(CrmError):
        crm.get_deal("404")
