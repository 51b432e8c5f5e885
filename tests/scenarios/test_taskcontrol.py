"""Task control on both CRMs: the scan's notices (deals without an open task, overdue tasks) and their dedupe,
the heads' digest and report, the forward-move rule, and the «Проверить задачи» / «Перезвонить через N дней»
robots as the CRM's automation runs them.

The Bitrix24 portal is seeded with deals and tasks of its own, the amoCRM account is empty: assertions name
this test's deals and tasks, and counts are compared with a scan before the step."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, TaskNotice, utcnow
from app.core.security import Identity, issue_token
from app.crm.factory import client_for
from app.domain import taskcontrol
from tests.scenarios.driver import ADMIN, HEAD, MANAGER, OTHER_MANAGER, QA, QA2, CrmDriver

DAY = timedelta(days=1)
REPORT = "/api/taskcontrol/report"
SETTINGS = "/api/taskcontrol/settings"


def scan(crm: CrmDriver) -> dict[str, int]:
    """One task-control scan of the portal (what the periodic job runs), then a fresh session."""
    counts = taskcontrol.scan_portal(crm.portal().id)
    db.session.expire_all()
    return counts


def configure(crm: CrmDriver, **changes: Any) -> None:
    """An admin changes the task-control settings."""
    taskcontrol.update_taskcontrol_settings(crm.portal(), changes)
    db.session.commit()


def overdue_task(
    crm: CrmDriver,
    deal_id: str,
    responsible: int = MANAGER,
    title: str = "Отправить КП",
    auditors: tuple[int, ...] = (),
) -> str:
    """The head sets a task that was due two days ago."""
    return crm.create_task(deal_id, responsible, utcnow() - 2 * DAY, title, by=HEAD, auditors=auditors)


def open_task(crm: CrmDriver, deal_id: str, responsible: int = MANAGER) -> str:
    """The responsible plans the next step, due in two days."""
    return crm.create_task(deal_id, responsible, utcnow() + 2 * DAY, "Перезвонить", by=responsible)


def report_row(crm: CrmDriver, user_id: int) -> dict[str, Any]:
    """A manager's row in the last scan's report (all zeros when the scan found nothing of theirs)."""
    report = taskcontrol.overdue_report(crm.portal()) or {"managers": []}
    empty = {"deals_without_tasks": 0, "overdue_tasks": 0, "deals": [], "tasks": []}
    return next((row for row in report["managers"] if row["user_id"] == str(user_id)), empty)


def deal_ids(row: dict[str, Any]) -> list[str]:
    return [deal["id"] for deal in row["deals"]]


def notice_rows(kind: str) -> list[TaskNotice]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(TaskNotice).where(TaskNotice.kind == kind)))


# ---------------------------------------------------------------------------------------------- the scan


def test_a_deal_without_an_open_task_is_told_to_its_responsible_once(crm: CrmDriver):
    bare = crm.new_deal(title="Сделка без шага")
    planned = crm.new_deal(title="Сделка с задачей")
    open_task(crm, planned)
    # The periodic job queues a scan of the installed portal; a worker runs it.
    assert taskcontrol.scan_due_portals() == 1
    crm.work()
    [notice] = crm.notices(MANAGER)
    assert "Сделка «Сделка без шага» без открытой задачи" in notice and crm.deal_url(bare) in notice
    assert "Сделка с задачей" not in notice
    assert bare in deal_ids(report_row(crm, MANAGER)) and planned not in deal_ids(report_row(crm, MANAGER))
    # The interval has not passed: nothing queued; a scan run anyway the same day sends nothing new.
    assert taskcontrol.scan_due_portals() == 0
    again = scan(crm)
    assert (again["planned"], again["sent"]) == (0, 0)
    assert crm.notices(MANAGER) == [notice]
    # Once the manager plans a next step the deal drops out of the report.
    open_task(crm, bare)
    scan(crm)
    assert bare not in deal_ids(report_row(crm, MANAGER))


def test_two_workers_scanning_at_once_send_each_notice_once(crm: CrmDriver):
    crm.new_deal(title="Сделка без шага")
    overdue_task(crm, crm.new_deal(manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    portal = crm.portal()
    client = client_for(portal)
    # Both plan before either sends: one row per notice.
    first = taskcontrol.Scanner(portal, client).collect()
    second = taskcontrol.Scanner(portal, client).collect()
    assert first["planned"] > 0 and second["planned"] == 0
    assert taskcontrol.send_notices(portal, client) == first["planned"]
    assert taskcontrol.send_notices(portal, client) == 0
    assert [len(crm.notices(user)) for user in (MANAGER, OTHER_MANAGER, HEAD)] == [1, 1, 1]


def test_an_overdue_task_is_told_to_its_responsible_its_creator_and_its_auditors(crm: CrmDriver):
    late = crm.new_deal(manager=OTHER_MANAGER, title="Сделка с просрочкой")
    auditors = (QA,) if crm.task_auditors else ()
    overdue_task(crm, late, responsible=OTHER_MANAGER, title="Согласовать договор", auditors=auditors)
    scan(crm)
    told = {
        user
        for user in (MANAGER, OTHER_MANAGER, QA, QA2, HEAD)
        for notice in crm.notices(user)
        if "Просрочена задача «Согласовать договор»" in notice and crm.deal_url(late) in notice
    }
    assert told == {OTHER_MANAGER, HEAD, *auditors}
    # The deal's overdue task is still open, so the deal has a next step: no "without task" line for it.
    assert not any("Сделка с просрочкой" in notice for notice in crm.notices(OTHER_MANAGER))


def test_a_completed_task_no_longer_counts(crm: CrmDriver):
    deal = crm.new_deal(title="Сделка с одной задачей")
    task = overdue_task(crm, deal, title="Выслать договор")
    first = scan(crm)
    before = report_row(crm, MANAGER)
    [first_notice] = crm.notices(MANAGER)
    assert "«Выслать договор»" in first_notice and "«Сделка с одной задачей»" not in first_notice
    crm.complete_task(task, by=MANAGER)
    second = scan(crm)
    assert (second["overdue"], second["without_tasks"]) == (first["overdue"] - 1, first["without_tasks"] + 1)
    after = report_row(crm, MANAGER)
    assert after["overdue_tasks"] == before["overdue_tasks"] - 1
    assert after["deals_without_tasks"] == before["deals_without_tasks"] + 1
    assert {"id": deal, "title": "Сделка с одной задачей", "url": crm.deal_url(deal)} in after["deals"]
    assert "Выслать договор" not in [task["title"] for task in after["tasks"]]
    _, second_notice = crm.notices(MANAGER)
    assert "Сделка «Сделка с одной задачей» без открытой задачи" in second_notice
    assert "Выслать договор" not in second_notice


def test_won_and_lost_deals_are_not_chased(crm: CrmDriver):
    base = scan(crm)
    won = crm.new_deal(title="Выигранная")
    lost = crm.new_deal(title="Проигранная")
    crm.move(won, "won", by=MANAGER)
    crm.move(lost, "lost", by=HEAD)
    crm.settle()
    assert (crm.stage_of(won), crm.stage_of(lost)) == ("won", "lost")
    open_deal = crm.new_deal(title="Открытая")
    counts = scan(crm)
    assert (counts["deals"], counts["without_tasks"]) == (base["deals"] + 1, base["without_tasks"] + 1)
    notice = crm.notices(MANAGER)[-1]
    assert "«Открытая»" in notice and crm.deal_url(open_deal) in notice
    assert "Выигранная" not in notice and "Проигранная" not in notice
    listed = deal_ids(report_row(crm, MANAGER))
    assert open_deal in listed and won not in listed and lost not in listed


def test_notices_switched_off_send_managers_nothing_but_the_report_counts(crm: CrmDriver):
    configure(crm, notify_deals_without_tasks=False, notify_overdue=False)
    bare = crm.new_deal(title="Сделка без шага")
    overdue_task(crm, crm.new_deal(manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    counts = scan(crm)
    assert notice_rows("no_task") == [] and notice_rows("overdue") == []
    assert crm.notices(MANAGER) == [] and crm.notices(OTHER_MANAGER) == []
    assert bare in deal_ids(report_row(crm, MANAGER)) and report_row(crm, OTHER_MANAGER)["overdue_tasks"] >= 1
    report = taskcontrol.overdue_report(crm.portal())
    assert report is not None
    assert sum(row["deals_without_tasks"] for row in report["managers"]) == counts["without_tasks"]
    assert sum(row["overdue_tasks"] for row in report["managers"]) == counts["overdue"]


# ---------------------------------------------------------------------------------------------- the heads


def test_the_head_gets_the_digest_once_a_day(crm: CrmDriver):
    configure(crm, digest_hour=0)
    overdue_task(crm, crm.new_deal(manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    scan(crm)
    scan(crm)
    assert [row.user_id for row in notice_rows("digest")] == [str(HEAD)]
    [digest] = [notice for notice in crm.notices(HEAD) if "Просрочки на" in notice]
    row = report_row(crm, OTHER_MANAGER)
    assert row["overdue_tasks"] >= 1
    line = f"{crm.user_name(OTHER_MANAGER)}: сделок без задач — {row['deals_without_tasks']}, просроченных задач — "
    assert f"{line}{row['overdue_tasks']} (самая старая с " in digest


def test_the_task_report_answers_heads_and_refuses_managers(crm: CrmDriver):
    deal = crm.new_deal(manager=OTHER_MANAGER)
    scan(crm)
    before = report_row(crm, OTHER_MANAGER)["overdue_tasks"]
    overdue_task(crm, deal, responsible=OTHER_MANAGER, title="Согласовать договор")
    scan(crm)
    answer = crm.client.get(REPORT, headers=crm.token(HEAD))
    assert answer.status_code == 200, answer.get_json()
    row = next(r for r in answer.get_json()["managers"] if r["user_id"] == str(OTHER_MANAGER))
    assert row["name"] == crm.user_name(OTHER_MANAGER)
    assert row["overdue_tasks"] == before + 1 and row["oldest_overdue"] and row["oldest_overdue_text"] != "—"
    assert {"title": "Согласовать договор", "url": crm.deal_url(deal)} in [
        {"title": task["title"], "url": task["url"]} for task in row["tasks"]
    ]
    assert crm.client.get(REPORT, headers=crm.token(MANAGER)).status_code == 403
    assert crm.client.get(REPORT, headers=crm.token(ADMIN, admin=True)).status_code == 200
    assert crm.client.get(SETTINGS, headers=crm.token(ADMIN, admin=True)).status_code == 200
    assert crm.client.post("/api/taskcontrol/scan", headers=crm.token(HEAD)).status_code == 202
    elsewhere = issue_token(Identity(crm.portal().id + 999, str(HEAD)))
    assert crm.client.get(REPORT, headers={"X-RC-Token": elsewhere}).status_code == 404
    assert crm.client.get(REPORT).status_code == 401


def test_the_settings_endpoint_validates_and_is_for_admins(crm: CrmDriver):
    admin = crm.token(ADMIN, admin=True)
    bad = crm.client.put(SETTINGS, json={"scan_interval_minutes": 1}, headers=admin)
    assert bad.status_code == 400 and "scan_interval_minutes" in bad.get_json()["fields"]
    assert crm.client.put(SETTINGS, json={"enabeld": True}, headers=admin).status_code == 400
    good = crm.client.put(SETTINGS, json={"digest_hour": 8}, headers=admin)
    assert good.status_code == 200 and good.get_json()["settings"]["digest_hour"] == 8
    assert crm.client.put(SETTINGS, json={}, headers=crm.token(MANAGER)).status_code == 403


# ---------------------------------------------------------------------------------------------- the rule


def forward_audit(deal_id: str) -> list[AuditEntry]:
    db.session.expire_all()
    query = sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id, AuditEntry.attempted == "move forward")
    return list(db.session.scalars(query))


def test_with_the_rule_on_a_deal_without_a_next_step_cannot_move_forward(crm: CrmDriver):
    configure(crm, require_task_to_advance=True)
    deal = crm.new_deal(stage="working", title="Сделка без шага")
    crm.move(deal, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "working"
    [notice] = crm.notices(MANAGER)
    assert "«Сделка без шага» нельзя двигать дальше без открытой задачи" in notice and crm.deal_url(deal) in notice
    assert [row.outcome for row in forward_audit(deal)] == ["reverted"]
    # A move back never needs a task.
    crm.move(deal, "new", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "new"
    # With a next step planned the move forward stands.
    open_task(crm, deal)
    crm.move(deal, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "late working"
    assert len(crm.notices(MANAGER)) == 1


def test_with_the_rule_off_a_deal_moves_forward_without_a_task(crm: CrmDriver):
    configure(crm, require_task_to_advance=False)
    deal = crm.new_deal(stage="working")
    crm.move(deal, "late working", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal) == "late working"
    assert crm.notices(MANAGER) == [] and forward_audit(deal) == []


# ---------------------------------------------------------------------------------------------- the robots


def test_the_check_tasks_robot_reports_an_open_task_and_the_overdue_count(crm: CrmDriver):
    deal = crm.new_deal()
    assert crm.check_tasks_robot(deal) == (False, 0)
    late = [overdue_task(crm, deal), overdue_task(crm, deal, title="Выслать договор")]
    open_task(crm, deal)
    assert crm.check_tasks_robot(deal) == (True, 2)
    for task in late:
        crm.complete_task(task, by=MANAGER)
    assert crm.check_tasks_robot(deal) == (True, 0)


def test_the_callback_robot_sets_a_call_task_days_ahead_at_the_hour_in_portal_time(crm: CrmDriver):
    deal = crm.new_deal(manager=OTHER_MANAGER)
    assert crm.callback_robot(deal, days="7", hour="11", text="Клиент думает") == ""
    zone = ZoneInfo(crm.portal().timezone)
    due = datetime.combine(datetime.now(zone).date() + timedelta(days=7), time(11), tzinfo=zone)
    [task] = [task for task in crm.deal_tasks(deal) if task.title.startswith("Клиент думает")]
    assert (task.responsible, task.is_open) == (OTHER_MANAGER, True)
    assert task.deadline is not None and abs((task.deadline - due).total_seconds()) < 1
    # Days out of range: the robot says why and sets nothing.
    assert "days must be a whole number from 1 to 365" in crm.callback_robot(deal, days="0")
    assert len(crm.deal_tasks(deal)) == 1
