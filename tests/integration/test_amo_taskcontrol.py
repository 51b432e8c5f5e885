"""Task control on an amoCRM account (the scenarios of test_taskcontrol.py): the periodic scan through the
queue, notices as amoCRM tasks with lead links, completed tasks, the heads' digest, the report API, the
"check tasks" robot, the forward-move rule through real webhooks, and paging past 250 tasks."""

import time

import pytest
import sqlalchemy as sa

from app import taskcontrol
from app.crm.factory import client_for
from app.db import db
from app.models import AuditEntry, TaskNotice
from app.robots import RobotInvocation
from tests.integration.amo import HEAD, MANAGER, OTHER_MANAGER, QA, Amo, new_lead, notice_tasks
from tests.integration.amo_review_helpers import open_lead_tab, page_config
from tests.integration.b24 import configure_guard

DAY = 86400
ADMIN = 1


@pytest.fixture
def tc(amo_installed: Amo) -> Amo:
    configure_guard(amo_installed.our_portal())
    return amo_installed


def scan(amo: Amo) -> dict:
    counts = taskcontrol.scan_portal(amo.our_portal().id)
    db.session.expire_all()
    return counts


def texts(amo: Amo, user_id: int) -> str:
    return "\n".join(task["text"] for task in notice_tasks(amo, user_id))


def link(amo: Amo, lead_id: int) -> str:
    return f"https://{amo.account.domain}/leads/detail/{lead_id}"


def overdue_task(amo: Amo, lead_id: int, responsible: int = MANAGER, text: str = "Отправить КП") -> int:
    """The head sets a task that was due two days ago."""
    return amo.sandbox.act(amo.account, HEAD).add_task(lead_id, text, time.time() - 2 * DAY, responsible=responsible)


def open_task(amo: Amo, lead_id: int, responsible: int = MANAGER) -> int:
    return amo.sandbox.act(amo.account, responsible).add_task(lead_id, "Перезвонить", time.time() + 2 * DAY)


def test_periodic_scan_sends_notices_as_amocrm_tasks_once(tc: Amo):
    bare = new_lead(tc, title="Сделка без шага")
    planned = new_lead(tc, title="Сделка с задачей")
    open_task(tc, planned)
    late = new_lead(tc, manager=OTHER_MANAGER, title="Сделка с просрочкой")
    overdue_task(tc, late, responsible=OTHER_MANAGER, text="Согласовать договор\nпо почте")
    # The periodic job queues a scan of every installed portal, the amoCRM account among them.
    assert taskcontrol.scan_due_portals() == 1
    tc.work()
    [notice] = notice_tasks(tc, MANAGER)
    assert "Сделка без шага" in notice["text"] and "без открытой задачи" in notice["text"]
    assert link(tc, bare) in notice["text"] and "Сделка с задачей" not in notice["text"]
    assert notice["entity_type"] is None and notice["is_completed"] is False
    assert notice["complete_till"] > time.time()
    # Overdue: its responsible and its creator (the head) hear about it, with the lead's link.
    for user_id in (OTHER_MANAGER, HEAD):
        text = texts(tc, user_id)
        assert "«Согласовать договор»" in text and link(tc, late) in text
    # A lead with an overdue (still open) task has a next step: no "without task" line for it.
    assert "Сделка с просрочкой" not in texts(tc, OTHER_MANAGER)
    assert texts(tc, QA) == ""
    # The interval has not passed: nothing queued; a scan run anyway the same day sends nothing new.
    before = {user: len(notice_tasks(tc, user)) for user in (MANAGER, OTHER_MANAGER, HEAD)}
    assert taskcontrol.scan_due_portals() == 0
    again = scan(tc)
    assert again["planned"] == 0 and again["sent"] == 0
    assert {user: len(notice_tasks(tc, user)) for user in before} == before


def test_a_completed_task_no_longer_counts(tc: Amo):
    lead = new_lead(tc, title="Сделка с одной задачей")
    task = overdue_task(tc, lead, text="Выслать договор")
    first = scan(tc)
    assert (first["overdue"], first["without_tasks"]) == (1, 0)
    assert "Выслать договор" in texts(tc, MANAGER) and "без открытой задачи" not in texts(tc, MANAGER)
    tc.sandbox.act(tc.account, MANAGER).complete_task(task, "Договор выслан")
    second = scan(tc)
    assert (second["overdue"], second["without_tasks"]) == (0, 1)
    report = taskcontrol.overdue_report(tc.our_portal())
    [row] = [r for r in report["managers"] if r["user_id"] == str(MANAGER)]
    assert (row["overdue_tasks"], row["deals_without_tasks"]) == (0, 1)
    assert [d["url"] for d in row["deals"]] == [link(tc, lead)]
    first_notice, second_notice = (task["text"] for task in notice_tasks(tc, MANAGER))
    assert "Выслать договор" in first_notice
    assert "Сделка с одной задачей" in second_notice and "без открытой задачи" in second_notice
    assert "Выслать договор" not in second_notice


def test_won_lost_and_refusal_leads_are_not_chased(tc: Amo):
    won = new_lead(tc, title="Выигранная")
    lost = new_lead(tc, title="Проигранная")
    tc.sandbox.act(tc.account, MANAGER).move_lead(won, 142)
    tc.sandbox.act(tc.account, HEAD).move_lead(lost, 143)
    tc.settle()
    open_lead = new_lead(tc, title="Открытая")
    counts = scan(tc)
    assert counts["deals"] == 1 and counts["without_tasks"] == 1
    text = texts(tc, MANAGER)
    assert "Открытая" in text and "Выигранная" not in text and "Проигранная" not in text
    assert link(tc, open_lead) in text


def test_head_digest_once_a_day(tc: Amo):
    portal = tc.our_portal()
    taskcontrol.update_taskcontrol_settings(portal, {"digest_hour": 0})
    db.session.commit()
    overdue_task(tc, new_lead(tc, manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    scan(tc)
    scan(tc)
    digests = db.session.scalars(sa.select(TaskNotice).where(TaskNotice.kind == "digest")).all()
    assert [d.user_id for d in digests] == [str(HEAD)]
    digest = [t["text"] for t in notice_tasks(tc, HEAD) if "Просрочки на" in t["text"]]
    assert len(digest) == 1
    assert "Менеджер Пётр: сделок без задач — 0, просроченных задач — 1" in digest[0]


def test_report_api_for_heads_of_an_amocrm_account(tc: Amo):
    overdue_task(tc, new_lead(tc, manager=OTHER_MANAGER), responsible=OTHER_MANAGER)
    scan(tc)

    def token(user_id: int) -> dict[str, str]:
        return {"X-RC-Token": page_config(open_lead_tab(tc, user_id))["token"]}

    answer = tc.client.get("/api/taskcontrol/report", headers=token(HEAD))
    assert answer.status_code == 200, answer.get_json()
    row = next(r for r in answer.get_json()["managers"] if r["user_id"] == str(OTHER_MANAGER))
    assert row["name"] == "Менеджер Пётр" and row["overdue_tasks"] == 1 and row["oldest_overdue_text"] != "—"
    assert row["tasks"][0]["url"].startswith(f"https://{tc.account.domain}/leads/detail/")
    assert tc.client.get("/api/taskcontrol/report", headers=token(MANAGER)).status_code == 403
    assert tc.client.get("/api/taskcontrol/settings", headers=token(ADMIN)).status_code == 200
    queued = tc.client.post("/api/taskcontrol/scan", headers=token(HEAD))
    assert queued.status_code == 202


def test_check_tasks_robot_on_an_amocrm_lead(tc: Amo):
    portal = tc.our_portal()
    lead = new_lead(tc)

    def run() -> dict:
        return taskcontrol.check_tasks_robot(RobotInvocation(portal.id, "rc_check_tasks", str(lead), {}, "2"))

    assert run() == {"has_open_task": "N", "overdue_count": 0}
    overdue_task(tc, lead)
    overdue_task(tc, lead)
    later = open_task(tc, lead)
    assert run() == {"has_open_task": "Y", "overdue_count": 2}
    for task in tc.sandbox.tasks_for(tc.account, lead_id=lead):
        if task["id"] != later:
            tc.sandbox.act(tc.account, MANAGER).complete_task(task["id"])
    assert run() == {"has_open_task": "Y", "overdue_count": 0}


@pytest.mark.parametrize("enabled", [True, False])
def test_forward_move_without_a_next_step(tc: Amo, enabled: bool):
    portal = tc.our_portal()
    taskcontrol.update_taskcontrol_settings(portal, {"require_task_to_advance": enabled})
    db.session.commit()
    statuses = tc.statuses()
    lead = new_lead(tc, status="Переговоры")
    tc.sandbox.act(tc.account, MANAGER).move_lead(lead, statuses["Принимают решение"])
    tc.settle()
    if enabled:
        assert tc.status(lead) == statuses["Переговоры"]
        [notice] = notice_tasks(tc, MANAGER)
        assert "без открытой задачи" in notice["text"] and link(tc, lead) in notice["text"]
        assert db.session.scalars(sa.select(AuditEntry).where(AuditEntry.attempted == "move forward")).first()
        # With a task the move stands.
        open_task(tc, lead)
        tc.sandbox.act(tc.account, MANAGER).move_lead(lead, statuses["Принимают решение"])
        tc.settle()
        assert tc.status(lead) == statuses["Принимают решение"]
        assert len(notice_tasks(tc, MANAGER)) == 1
    else:
        assert tc.status(lead) == statuses["Принимают решение"]
        assert notice_tasks(tc, MANAGER) == []
    # A move back never needs a task.
    tc.sandbox.act(tc.account, MANAGER).move_lead(lead, statuses["Первичный контакт"])
    tc.settle()
    assert tc.status(lead) == statuses["Первичный контакт"]


def test_scan_pages_past_250_tasks(tc: Amo):
    leads = [new_lead(tc, title=f"Сделка {index}") for index in range(3)]
    bare = new_lead(tc, title="Сделка без задач")
    head = tc.sandbox.act(tc.account, HEAD)
    for index in range(300):
        head.add_task(leads[index % 3], f"Шаг {index}", time.time() + DAY, responsible=MANAGER)
    head.add_task(leads[-1], "Просроченный шаг", time.time() - DAY, responsible=MANAGER)
    before = tc.sandbox.api_calls(tc.account, "GET", "/api/v4/tasks")
    counts = scan(tc)
    assert tc.sandbox.api_calls(tc.account, "GET", "/api/v4/tasks") - before == 2
    assert (counts["tasks"], counts["overdue"], counts["deals"], counts["without_tasks"]) == (301, 1, 4, 1)
    text = texts(tc, MANAGER)
    assert "Сделка без задач" in text and link(tc, bare) in text and "«Просроченный шаг»" in text
    assert all(f"«Сделка {index}»" not in text for index in range(3))


def test_scan_of_a_crm_reads_at_seven_requests_a_second(tc: Amo):
    lead = new_lead(tc)
    head = tc.sandbox.act(tc.account, HEAD)
    for index in range(250 * 8):
        head.add_task(lead, f"Шаг {index}", time.time() + DAY, responsible=MANAGER)
    tc.account.rate_limit = 7
    tc.app.config.update(AMO_RATE=7.0, AMO_BURST=7)
    portal = tc.our_portal()
    counts = taskcontrol.Scanner(portal, client_for(portal)).collect()
    assert counts["tasks"] == 2000
    assert [call for call in tc.account.calls if call[2] == 429] == []
