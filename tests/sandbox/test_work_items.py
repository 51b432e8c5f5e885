"""Tasks, calls, notifications and bulk data."""

from __future__ import annotations

import tracemalloc

from sandbox import Sandbox, generate_bulk

from .conftest import call


def test_tasks_camel_case_and_overdue_filter(sandbox: Sandbox, portal, token, clock) -> None:
    manager = sandbox.issue_tokens(portal, 4)["access_token"]
    status, body = call(
        sandbox,
        manager,
        "tasks.task.add",
        {"fields": {"TITLE": "Перезвонить", "RESPONSIBLE_ID": 4, "DEADLINE": "2025-10-01T10:00:00+03:00",
                    "UF_CRM_TASK": ["D_12"], "AUDITORS": [9]}},
    )  # fmt: skip
    assert status == 200
    task = body["result"]["task"]
    assert task["responsibleId"] == "4" and task["createdBy"] == "4" and task["status"] == "2"
    assert task["ufCrmTask"] == ["D_12"] and task["auditors"] == ["9"]
    task_id = task["id"]
    _, overdue = call(sandbox, token, "tasks.task.list", {"filter": {"STATUS": -1, "RESPONSIBLE_ID": 4}})
    assert task_id in [t["id"] for t in overdue["result"]["tasks"]]
    assert "ufCrmTask" not in overdue["result"]["tasks"][0]
    _, linked = call(
        sandbox, token, "tasks.task.list", {"filter": {"UF_CRM_TASK": "D_12"}, "select": ["ID", "UF_CRM_TASK"]}
    )
    assert task_id in [t["id"] for t in linked["result"]["tasks"]]
    assert all(t["ufCrmTask"] == ["D_12"] for t in linked["result"]["tasks"])
    call(sandbox, manager, "tasks.task.update", {"taskId": task_id, "fields": {"STATUS": 5}})
    _, done = call(sandbox, token, "tasks.task.get", {"taskId": task_id})
    assert done["result"]["task"]["status"] == "5" and done["result"]["task"]["closedDate"]
    _, still = call(sandbox, token, "tasks.task.list", {"filter": {"STATUS": -1, "RESPONSIBLE_ID": 4}})
    assert task_id not in [t["id"] for t in still["result"]["tasks"]]
    _, real = call(sandbox, token, "tasks.task.list", {"filter": {"REAL_STATUS": 5}})
    assert task_id in [t["id"] for t in real["result"]["tasks"]]


def test_seeded_tasks_include_open_overdue_and_closed(sandbox: Sandbox, portal, token) -> None:
    statuses = set()
    for status in (-1, 2, 5):
        _, body = call(sandbox, token, "tasks.task.list", {"filter": {"STATUS": status}})
        if body["result"]["tasks"]:
            statuses.add(status)
    assert statuses == {-1, 2, 5}


def test_calls_and_voximplant_statistics(sandbox: Sandbox, portal, token) -> None:
    activity = sandbox.act(portal, 3).make_call(3, duration=95)
    _, listed = call(
        sandbox, token, "crm.activity.list",
        {"filter": {"OWNER_TYPE_ID": 2, "OWNER_ID": 3, "TYPE_ID": 2},
         "select": ["ID", "PROVIDER_ID", "DIRECTION", "FILES", "COMMUNICATIONS"]},
    )  # fmt: skip
    rows = {r["ID"]: r for r in listed["result"]}
    mine = rows[str(activity["ID"])]
    assert mine["PROVIDER_ID"] == "VOXIMPLANT_CALL" and mine["DIRECTION"] == "2"
    assert "/bitrix/tools/crm_show_file.php?fileId=" in mine["FILES"][0]["url"]  # where Bitrix24 serves it
    assert mine["FILES"][0]["url"].endswith(f"&ownerTypeId=6&ownerId={activity['ID']}")
    assert mine["COMMUNICATIONS"][0]["TYPE"] == "PHONE"
    _, stats = call(sandbox, token, "voximplant.statistic.get", {"FILTER": {"CRM_ACTIVITY_ID": activity["ID"]}})
    stat = stats["result"][0]
    assert stat["CALL_DURATION"] == "95" and stat["CALL_FAILED_CODE"] == "200"
    assert stat["RECORD_FILE_ID"] == str(activity["FILE_IDS"][0]) and stat["CALL_RECORD_URL"] == ""
    assert stat["CRM_ENTITY_TYPE"] == "CONTACT"
    _, todo = call(
        sandbox, token, "crm.activity.todo.add",
        {"ownerTypeId": 2, "ownerId": 3, "deadline": "2030-01-01T10:00:00+03:00", "title": "Перезвонить"},
    )  # fmt: skip
    assert isinstance(todo["result"]["id"], int)


def test_a_todo_is_completed_with_crm_activity_update(sandbox: Sandbox, portal, token) -> None:
    _, todo = call(
        sandbox, token, "crm.activity.todo.add",
        {"ownerTypeId": 2, "ownerId": 3, "deadline": "2030-01-01T10:00:00+03:00", "title": "Перезвонить"},
    )  # fmt: skip
    todo_id = todo["result"]["id"]
    open_filter = {"filter": {"OWNER_TYPE_ID": 2, "OWNER_ID": 3, "COMPLETED": "N"}, "select": ["ID"]}
    _, listed = call(sandbox, token, "crm.activity.list", open_filter)
    assert str(todo_id) in {row["ID"] for row in listed["result"]}
    status, body = call(sandbox, token, "crm.activity.update", {"id": todo_id, "fields": {"COMPLETED": "Y"}})
    assert (status, body["result"]) == (200, True)
    _, listed = call(sandbox, token, "crm.activity.list", open_filter)
    assert str(todo_id) not in {row["ID"] for row in listed["result"]}
    _, got = call(sandbox, token, "crm.activity.get", {"id": todo_id})
    assert (got["result"]["COMPLETED"], got["result"]["STATUS"]) == ("Y", "2")
    status, body = call(sandbox, token, "crm.activity.update", {"id": todo_id, "fields": {"COMPLETED": "Y"}})
    assert status == 200  # completing a completed activity again is accepted
    status, body = call(sandbox, token, "crm.activity.update", {"id": 999_999, "fields": {"COMPLETED": "Y"}})
    assert (status, body["error"], body["error_description"]) == (400, "", "Not found")


def test_tasks_task_complete_closes_a_task(sandbox: Sandbox, portal, token) -> None:
    _, added = call(sandbox, token, "tasks.task.add", {"fields": {"TITLE": "Проверить отказ", "RESPONSIBLE_ID": 3}})
    task_id = added["result"]["task"]["id"]
    status, body = call(sandbox, token, "tasks.task.complete", {"taskId": task_id})
    assert (status, body["result"]["task"]["status"]) == (200, "5")
    status, body = call(sandbox, token, "tasks.task.complete", {"taskId": 999_999})
    assert status == 400 and "Task not found" in body["error_description"]


def test_notifications_are_recorded(sandbox: Sandbox, portal, token) -> None:
    status, body = call(
        sandbox, token, "im.notify.system.add", {"USER_ID": 3, "MESSAGE": "Сделка возвращена", "TAG": "rc|5"}
    )
    assert status == 200 and isinstance(body["result"], int)
    status, body = call(sandbox, token, "im.notify.personal.add", {"USER_ID": 3})
    assert (status, body["error"]) == (400, "MESSAGE_EMPTY")
    status, body = call(sandbox, token, "im.notify.system.add", {"MESSAGE": "x"})
    assert (status, body["error"]) == (400, "USER_ID_EMPTY")
    [note] = sandbox.notifications(portal, 3)
    assert (note.message, note.tag, note.kind) == ("Сделка возвращена", "rc|5", "system")


def test_bulk_generation_is_frugal(sandbox: Sandbox, portal, token) -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    generate_bulk(portal, deals=20_000, tasks=2_000, now=sandbox.clock.now())
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(portal.deals) == 20_030
    assert used < 25 * 1024 * 1024  # about 1 KB a deal including tasks
    _, page = call(sandbox, token, "crm.deal.list", {"filter": {">ID": 19_990}, "start": -1, "select": ["ID"]})
    assert len(page["result"]) == 40
