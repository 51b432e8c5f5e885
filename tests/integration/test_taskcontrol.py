"""Task control through the sandbox portal: scan notices and their dedupe, the report, robots, the rule."""

import math
import time

import pytest
import sqlalchemy as sa

from app import taskcontrol
from app.crm.factory import client_for
from app.db import db
from app.models import AuditEntry, TaskNotice
from app.sandbox import generate_bulk
from app.security import TOKEN_HEADER, Identity, issue_token
from tests.integration.b24 import B24, configure_guard, new_deal

MANAGER, OTHER_MANAGER, QA, HEAD, ADMIN = 2, 3, 8, 9, 1


@pytest.fixture
def tc(installed: B24) -> B24:
    configure_guard(installed.our_portal())
    return installed


def scan(b24: B24) -> dict:
    counts = taskcontrol.scan_portal(b24.our_portal().id)
    db.session.expire_all()
    return counts


def texts(b24: B24, user_id: int) -> str:
    return "\n".join(n.message for n in b24.sandbox.notifications(b24.portal, user_id))


def overdue_task(b24: B24, deal_id: int, responsible: int = MANAGER, title: str = "Отправить КП") -> int:
    return b24.sandbox.act(b24.portal, HEAD).create_task(
        TITLE=title,
        RESPONSIBLE_ID=responsible,
        DEADLINE=time.time() - 2 * 86400,
        UF_CRM_TASK=[f"D_{deal_id}"],
        AUDITORS=[QA],
    )


def open_task(b24: B24, deal_id: int, responsible: int = MANAGER) -> int:
    return b24.sandbox.act(b24.portal, responsible).create_task(
        TITLE="Перезвонить",
        RESPONSIBLE_ID=responsible,
        DEADLINE=time.time() + 2 * 86400,
        UF_CRM_TASK=[f"D_{deal_id}"],
    )


def test_scan_notifies_deal_without_task_and_overdue_task_recipients(tc: B24):
    new_deal(tc, title="Сделка без шага")
    planned = new_deal(tc, title="Сделка с задачей")
    open_task(tc, planned)
    late = new_deal(tc, manager=OTHER_MANAGER, title="Сделка с просрочкой")
    overdue_task(tc, late, responsible=OTHER_MANAGER, title="Согласовать договор")
    counts = scan(tc)
    assert counts["sent"] > 0
    manager_text = texts(tc, MANAGER)
    assert "Сделка без шага" in manager_text and "без открытой задачи" in manager_text
    assert "Сделка с задачей" not in manager_text
    # Overdue: the responsible, the creator (head) and the auditor (QA) hear about it.
    for user_id in (OTHER_MANAGER, HEAD, QA):
        assert "Согласовать договор" in texts(tc, user_id)
    # The deal with an overdue (still open) task has a next step, so no "without task" line for it.
    assert "Сделка с просрочкой" not in texts(tc, OTHER_MANAGER)
    # One digest message per user per scan, not one per line.
    assert len(tc.sandbox.notifications(tc.portal, MANAGER)) == 1


def test_second_scan_and_second_worker_send_nothing_twice(tc: B24):
    deal = new_deal(tc, title="Сделка без шага")
    overdue_task(tc, new_deal(tc, manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    portal = tc.our_portal()
    crm = client_for(portal)
    # Two workers plan the same scan before either sends: the unique keys keep one row per notice.
    first = taskcontrol.Scanner(portal, crm).collect()
    second = taskcontrol.Scanner(portal, crm).collect()
    assert first["planned"] > 0 and second["planned"] == 0
    sent_a = taskcontrol.send_notices(portal, crm)
    sent_b = taskcontrol.send_notices(portal, crm)
    assert sent_a == first["planned"] and sent_b == 0
    before = {user: len(tc.sandbox.notifications(tc.portal, user)) for user in (MANAGER, OTHER_MANAGER, HEAD, QA)}
    assert all(before.values())
    # A later scan the same day sends nothing new.
    again = scan(tc)
    assert again["planned"] == 0 and again["sent"] == 0
    after = {user: len(tc.sandbox.notifications(tc.portal, user)) for user in before}
    assert after == before
    # A task set for the deal: it drops out of the report.
    open_task(tc, deal)
    scan(tc)
    report = taskcontrol.overdue_report(tc.our_portal())
    assert all(d["id"] != str(deal) for row in report["managers"] for d in row["deals"])


def test_head_digest_once_a_day(tc: B24):
    portal = tc.our_portal()
    taskcontrol.update_taskcontrol_settings(portal, {"digest_hour": 0})
    db.session.commit()
    overdue_task(tc, new_deal(tc, manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    scan(tc)
    scan(tc)
    digests = db.session.scalars(sa.select(TaskNotice).where(TaskNotice.kind == "digest")).all()
    assert [d.user_id for d in digests] == [str(HEAD)]
    assert "Просрочки на" in texts(tc, HEAD) and "Дмитрий Попов" in texts(tc, HEAD)


def test_notices_off_plans_nothing_but_report_counts(tc: B24):
    portal = tc.our_portal()
    taskcontrol.update_taskcontrol_settings(
        portal, {"notify_deals_without_tasks": False, "notify_overdue": False, "digest_hour": 23}
    )
    db.session.commit()
    new_deal(tc)
    counts = scan(tc)
    if taskcontrol.utcnow().astimezone(taskcontrol._zone(portal)).hour < 23:
        assert counts["planned"] == 0
    assert counts["without_tasks"] >= 1
    report = taskcontrol.overdue_report(tc.our_portal())
    assert sum(row["deals_without_tasks"] for row in report["managers"]) == counts["without_tasks"]


def test_scan_requests_stay_near_the_floor(tc: B24):
    generate_bulk(tc.portal, deals=3000, tasks=6000)
    rows = {"tasks": 0, "activities": 0, "deals": 0}
    for task in tc.portal.tasks.values():
        rows["tasks"] += task["STATUS"] != 5
    for activity in tc.portal.activities.values():
        rows["activities"] += activity["COMPLETED"] == "N" and activity["OWNER_TYPE_ID"] == 2
    for deal_id in tc.portal.deal_ids:
        rows["deals"] += tc.sandbox.deal(tc.portal, deal_id)["CLOSED"] == "N"
    pages = sum(max(1, math.ceil(count / 50)) for count in rows.values())
    floor = pages / 50
    portal = tc.our_portal()
    crm = client_for(portal)
    from app import directory

    directory.users(portal.id, crm)
    directory.pipelines(portal.id, crm)
    before = tc.sandbox.rest_calls(tc.portal)
    counts = taskcontrol.Scanner(portal, crm).collect()
    reads = tc.sandbox.rest_calls(tc.portal) - before
    assert counts["deals"] > 1000
    assert reads <= math.ceil(1.1 * floor), (reads, floor)
    assert tc.sandbox.rest_calls(tc.portal, "batch") >= reads


def test_report_endpoint_for_heads_only(tc: B24):
    overdue_task(tc, new_deal(tc, manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    scan(tc)
    portal = tc.our_portal()

    def get(user: str, admin: bool = False, portal_id: int = portal.id):
        token = issue_token(Identity(portal_id=portal_id, user_id=user, is_admin=admin))
        return tc.client.get("/api/taskcontrol/report", headers={TOKEN_HEADER: token})

    answer = get(str(HEAD))
    assert answer.status_code == 200
    row = next(r for r in answer.json["managers"] if r["user_id"] == str(OTHER_MANAGER))
    assert row["overdue_tasks"] >= 1 and row["oldest_overdue"] and row["oldest_overdue_text"] != "—"
    assert get(str(MANAGER)).status_code == 403
    assert get(str(ADMIN), admin=True).status_code == 200
    assert get(str(HEAD), portal_id=portal.id + 999).status_code == 404
    assert tc.client.get("/api/taskcontrol/report").status_code == 401


def test_settings_endpoint_validates(tc: B24):
    portal = tc.our_portal()
    token = issue_token(Identity(portal_id=portal.id, user_id="1", is_admin=True))
    bad = tc.client.put("/api/taskcontrol/settings", json={"scan_interval_minutes": 1}, headers={TOKEN_HEADER: token})
    assert bad.status_code == 400 and "scan_interval_minutes" in bad.json["fields"]
    typo = tc.client.put("/api/taskcontrol/settings", json={"enabeld": True}, headers={TOKEN_HEADER: token})
    assert typo.status_code == 400
    good = tc.client.put("/api/taskcontrol/settings", json={"digest_hour": 8}, headers={TOKEN_HEADER: token})
    assert good.status_code == 200 and good.json["settings"]["digest_hour"] == 8
    manager = issue_token(Identity(portal_id=portal.id, user_id="2"))
    assert tc.client.put("/api/taskcontrol/settings", json={}, headers={TOKEN_HEADER: manager}).status_code == 403


def test_check_tasks_robot_end_to_end(tc: B24):
    assert {"rc_check_tasks", "rc_callback"} <= set(tc.sandbox.robots(tc.portal))
    bare = new_deal(tc)
    token = tc.sandbox.run_robot(tc.portal, "rc_check_tasks", bare)
    tc.settle()
    result = tc.sandbox.robot_result(tc.portal, token)
    assert result["has_open_task"] == "N" and str(result["overdue_count"]) == "0"
    overdue_task(tc, bare)
    overdue_task(tc, bare)
    token = tc.sandbox.run_robot(tc.portal, "rc_check_tasks", bare)
    tc.settle()
    result = tc.sandbox.robot_result(tc.portal, token)
    assert result["has_open_task"] == "Y" and str(result["overdue_count"]) == "2"


def test_callback_robot_creates_a_task_in_portal_time(tc: B24):
    deal = new_deal(tc, manager=OTHER_MANAGER)
    token = tc.sandbox.run_robot(tc.portal, "rc_callback", deal, {"days": "7", "hour": "11", "text": "Клиент думает"})
    tc.settle()
    result = tc.sandbox.robot_result(tc.portal, token)
    assert result["error"] == "" and result["task_id"]
    task = tc.portal.tasks[int(result["task_id"])]
    assert task["RESPONSIBLE_ID"] == OTHER_MANAGER and task["UF_CRM_TASK"] == [f"D_{deal}"]
    assert task["TITLE"] == "Клиент думает"
    portal = tc.our_portal()
    expected = taskcontrol.callback_deadline(portal, 7, 11)
    assert abs(task["DEADLINE"] - expected.timestamp()) < 1
    assert expected.astimezone(taskcontrol._zone(portal)).hour == 11
    # The same robot run processed again creates no second task.
    tasks_before = len(tc.portal.tasks)
    from app.robots import RobotInvocation

    again = taskcontrol.callback_robot(
        RobotInvocation(portal.id, "rc_callback", str(deal), {"days": "7", "hour": "11"}, "1", event_token=token)
    )
    assert again["task_id"] == result["task_id"] and len(tc.portal.tasks) == tasks_before
    bad = tc.sandbox.run_robot(tc.portal, "rc_callback", deal, {"days": "0"})
    tc.settle()
    assert "days" in tc.sandbox.robot_result(tc.portal, bad)["error"]


@pytest.mark.parametrize("enabled", [True, False])
def test_forward_move_without_task(tc: B24, enabled: bool):
    portal = tc.our_portal()
    taskcontrol.update_taskcontrol_settings(portal, {"require_task_to_advance": enabled})
    db.session.commit()
    deal = new_deal(tc, stage="PREPARATION")
    tc.sandbox.act(tc.portal, MANAGER).move_deal(deal, "EXECUTING")
    tc.settle()
    if enabled:
        assert tc.stage(deal) == "PREPARATION"
        assert "без открытой задачи" in texts(tc, MANAGER)
        assert db.session.scalars(sa.select(AuditEntry).where(AuditEntry.attempted == "move forward")).first()
        # With a task the move stands; a move back never needs one.
        open_task(tc, deal)
        tc.sandbox.act(tc.portal, MANAGER).move_deal(deal, "EXECUTING")
        tc.settle()
        assert tc.stage(deal) == "EXECUTING"
    else:
        assert tc.stage(deal) == "EXECUTING"
        assert texts(tc, MANAGER) == ""
    tc.sandbox.act(tc.portal, MANAGER).move_deal(deal, "NEW")
    tc.settle()
    assert tc.stage(deal) == "NEW"
