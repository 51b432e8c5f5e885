"""Task control on a Bitrix24 portal, what only Bitrix24 has: the scan reads tasks, to-dos and deals in batches
near the request floor, and the callback robot answers the workflow with the task's id (once per robot run).
The scenarios both CRMs share are in tests/scenarios/test_taskcontrol.py."""

import math

import pytest

from app.crm.factory import client_for
from app.domain import directory, taskcontrol
from app.domain.robots import RobotInvocation
from sandbox import generate_bulk
from tests.integration.b24 import B24, configure_guard, new_deal

OTHER_MANAGER = 3


@pytest.fixture
def tc(installed: B24) -> B24:
    configure_guard(installed.our_portal())
    return installed


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
    directory.users(portal.id, crm)
    directory.pipelines(portal.id, crm)
    before = tc.sandbox.rest_calls(tc.portal)
    counts = taskcontrol.Scanner(portal, crm).collect()
    reads = tc.sandbox.rest_calls(tc.portal) - before
    assert counts["deals"] > 1000
    # The first batch chains pages of every stream before their sizes are known, so a stream that turns out
    # short (here: no open to-dos) wastes part of it: at most one batch over the floor, or 10 % on big scans.
    assert reads <= max(math.ceil(1.1 * floor), math.ceil(floor) + 1), (reads, floor)
    assert tc.sandbox.rest_calls(tc.portal, "batch") >= reads


def test_callback_robot_returns_the_task_and_a_replayed_run_sets_no_second_one(tc: B24):
    deal = new_deal(tc, manager=OTHER_MANAGER)
    token = tc.sandbox.run_robot(tc.portal, "rc_callback", deal, {"days": "7", "hour": "11", "text": "Клиент думает"})
    tc.settle()
    result = tc.sandbox.robot_result(tc.portal, token)
    assert result["error"] == "" and result["task_id"]
    task = tc.portal.tasks[int(result["task_id"])]
    assert task["TITLE"] == "Клиент думает" and task["UF_CRM_TASK"] == [f"D_{deal}"]
    # The same robot run (its event_token) processed again creates no second task.
    tasks_before = len(tc.portal.tasks)
    portal = tc.our_portal()
    again = taskcontrol.callback_robot(
        RobotInvocation(portal.id, "rc_callback", str(deal), {"days": "7", "hour": "11"}, "1", event_token=token)
    )
    assert again["task_id"] == result["task_id"] and len(tc.portal.tasks) == tasks_before

