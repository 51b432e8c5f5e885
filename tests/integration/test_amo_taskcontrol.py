"""Task control on an amoCRM account, what only amoCRM has: notices are tasks without a lead (there is no
notification API), a task's text is named by its first line, the scan pages past 250 tasks and keeps to
7 requests a second. The scenarios both CRMs share are in tests/scenarios/test_taskcontrol.py."""

import time

import pytest

from app.core.db import db
from app.crm.factory import client_for
from app.domain import taskcontrol
from tests.integration.amo import HEAD, MANAGER, OTHER_MANAGER, Amo, new_lead, notice_tasks
from tests.integration.b24 import configure_guard

DAY = 86400


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


def test_notices_are_open_tasks_on_their_lead_naming_a_task_by_its_first_line(tc: Amo):
    bare = new_lead(tc, title="Сделка без шага")
    late = new_lead(tc, manager=OTHER_MANAGER, title="Сделка с просрочкой")
    tc.sandbox.act(tc.account, HEAD).add_task(
        late, "Согласовать договор\nпо почте", time.time() - 2 * DAY, responsible=OTHER_MANAGER
    )
    scan(tc)
    [notice] = notice_tasks(tc, MANAGER)
    assert "Сделка без шага" in notice["text"]
    assert (notice["entity_type"], notice["entity_id"], notice["is_completed"]) == ("leads", bare, False)
    assert notice["complete_till"] > time.time()
    for user_id in (OTHER_MANAGER, HEAD):
        text = texts(tc, user_id)
        assert "«Согласовать договор»" in text and "по почте" not in text and link(tc, late) in text


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
