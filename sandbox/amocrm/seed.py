"""The people, groups, pipelines and loss reasons of a fresh sandbox account."""

from __future__ import annotations

import random
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.amocrm.account import Account, AmoSandbox

USERS: tuple[tuple[int, str, int, bool, bool], ...] = (
    # id, name, group, admin, active
    (1, "Администратор Анна", 3, True, True),
    (2, "Менеджер Иван", 1, False, True),
    (3, "Менеджер Пётр", 1, False, True),
    (7, "Контроль Мария", 2, False, True),
    (8, "Контроль Ольга", 2, False, True),
    (9, "Руководитель Сергей", 3, False, True),
    (10, "Контроль Уволенный", 2, False, False),
    (11, "Руководитель Павел", 4, False, True),
)
GROUPS = {1: "Отдел продаж", 2: "Отдел контроля качества", 3: "Руководство", 4: "Коммерческий отдел"}
PIPELINES: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    ("Воронка", True, ("Первичный контакт", "Переговоры", "Принимают решение")),
    ("Повторные продажи", False, ("Новая заявка", "В работе", "Согласование")),
)
COLORS = ("#99ccff", "#ffff99", "#ffcc66", "#ff9966")


def status(status_id: int, name: str, sort: int, pipeline_id: int, color: str, kind: int = 0) -> dict[str, Any]:
    """A status as /api/v4/leads/pipelines shows it."""
    return {
        "id": status_id,
        "name": name,
        "sort": sort,
        "is_editable": kind == 0 and status_id not in (142, 143),
        "pipeline_id": pipeline_id,
        "color": color,
        "type": kind,
        "account_id": 0,
    }


def seed(sandbox: AmoSandbox, account: Account) -> None:
    """Fill a new account."""
    account.groups = dict(GROUPS)
    for user_id, name, group_id, is_admin, active in USERS:
        account.users[user_id] = {
            "id": user_id,
            "name": name,
            "email": f"user{user_id}@{account.subdomain}.example",
            "lang": "ru",
            "rights": {
                "leads": {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"},
                "is_admin": is_admin,
                "is_free": False,
                "is_active": active,
                "group_id": group_id,
                "role_id": None,
            },
        }
    for sort, (name, is_main, working) in enumerate(PIPELINES):
        pipeline_id = sandbox.next_id()
        statuses = {}
        unsorted = sandbox.next_id()
        statuses[unsorted] = status(unsorted, "Неразобранное", 10, pipeline_id, "#c1c1c1", kind=1)
        for index, status_name in enumerate(working):
            status_id = sandbox.next_id()
            statuses[status_id] = status(status_id, status_name, 20 + index * 10, pipeline_id, COLORS[index])
        statuses[142] = status(142, "Успешно реализовано", 10000, pipeline_id, "#CCFF66")
        statuses[143] = status(143, "Закрыто и не реализовано", 11000, pipeline_id, "#D5D8DB")
        for item in statuses.values():
            item["account_id"] = account.id
        account.pipelines[pipeline_id] = {
            "id": pipeline_id,
            "name": name,
            "sort": (sort + 1) * 10,
            "is_main": is_main,
            "is_unsorted_on": True,
            "is_archive": False,
            "account_id": account.id,
            "statuses": statuses,
        }
    for name in ("Дорого", "Купили у конкурентов"):
        account.loss_reasons[sandbox.next_id()] = name
    # Every account has the tracking fields; utm_source is the one that names a lead's source.
    field_id = sandbox.next_id()
    account.custom_fields[field_id] = {
        "id": field_id,
        "name": "utm_source",
        "type": "tracking_data",
        "code": "UTM_SOURCE",
        "sort": 510,
        "is_api_only": False,
        "is_predefined": True,
        "enums": None,
    }


SALES = (2, 3)


def generate_bulk(sandbox: AmoSandbox, account: Account, *, leads: int = 10_000, tasks: int = 0, seed: int = 7) -> None:
    """Add many leads and lead tasks cheaply (shared strings, no events, no webhooks), for benchmarks.

    Leads spread over every status of every pipeline (won, lost and Incoming leads included); a task goes
    to a random lead, a quarter of them completed, deadlines from four days ago to ten days ahead.
    """
    rng = random.Random(seed)  # noqa: S311 - deterministic fixtures
    now = int(time.time())
    with sandbox.lock:
        choices = [(pid, sid) for pid, pipeline in account.pipelines.items() for sid in pipeline["statuses"]]
        names = [sys.intern(f"Сделка {index}") for index in range(50)]
        lead_ids = []
        for index in range(leads):
            pipeline_id, status_id = choices[rng.randrange(len(choices))]
            lead_id = sandbox.next_id()
            manager = SALES[index % len(SALES)]
            account.leads[lead_id] = {
                "id": lead_id,
                "name": names[index % len(names)],
                "price": 100000,
                "responsible_user_id": manager,
                "group_id": 0,
                "status_id": status_id,
                "pipeline_id": pipeline_id,
                "loss_reason_id": None,
                "created_by": manager,
                "updated_by": manager,
                "created_at": now - 86400,
                "updated_at": now - 3600,
                "closed_at": None,
                "is_deleted": False,
                "cf": {},
            }
            lead_ids.append(lead_id)
        text = sys.intern("Перезвонить клиенту")
        for _ in range(tasks):
            task_id = sandbox.next_id()
            lead_id = lead_ids[rng.randrange(len(lead_ids))]
            manager = account.leads[lead_id]["responsible_user_id"]
            account.tasks[task_id] = {
                "id": task_id,
                "created_by": manager,
                "updated_by": manager,
                "created_at": now - 86400,
                "updated_at": now - 3600,
                "responsible_user_id": manager,
                "group_id": 0,
                "entity_id": lead_id,
                "entity_type": "leads",
                "duration": 0,
                "is_completed": rng.random() < 0.25,
                "task_type_id": 1,
                "text": text,
                "result": [],
                "complete_till": now + int((rng.random() - 0.3) * 14 * 86400),
            }
