"""A realistic, deterministic portal for tests and the demo, and bulk data for benchmarks."""

from __future__ import annotations

import random
import sys
import time
from typing import Any

from sandbox import ops
from sandbox.state import DealRow, Portal, money, recording_link

PROCESS_STAGES: tuple[tuple[str, str, str], ...] = (
    ("NEW", "Новая", "#39A8EF"),
    ("PREPARATION", "Подготовка документов", "#2FC6F6"),
    ("PREPAYMENT_INVOICE", "Счёт на предоплату", "#55D0E0"),
    ("EXECUTING", "В работе", "#47E4C2"),
    ("FINAL_INVOICE", "Финальный счёт", "#FFA900"),
)
FINAL_STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("WON", "Сделка успешна", "#7BD500", "S"),
    ("LOSE", "Сделка провалена", "#FF5752", "F"),
    ("APOLOGY", "Анализ причины провала", "#FF5752", "F"),
)
CATEGORIES: tuple[tuple[int, str, int], ...] = ((0, "Общая", 100), (1, "Повторные продажи", 200), (2, "Тендеры", 300))
SOURCES: tuple[tuple[str, str], ...] = (
    ("CALL", "Звонок"),
    ("EMAIL", "Электронная почта"),
    ("WEB", "Веб-сайт"),
    ("ADVERTISING", "Реклама"),
    ("PARTNER", "Существующий клиент"),
    ("RECOMMENDATION", "По рекомендации"),
    ("TRADE_SHOW", "Выставка"),
    ("WEBFORM", "CRM-форма"),
    ("CALLBACK", "Обратный звонок"),
    ("OTHER", "Другое"),
)
DEAL_TYPES: tuple[tuple[str, str], ...] = (
    ("SALE", "Продажа"),
    ("COMPLEX", "Комплексная продажа"),
    ("GOODS", "Продажа товара"),
    ("SERVICES", "Продажа услуги"),
    ("SERVICE", "Сервисное обслуживание"),
)

# id, name, last name, position, departments, admin, active, gender
USERS: tuple[tuple[int, str, str, str, tuple[int, ...], bool, bool, str], ...] = (
    (1, "Андрей", "Смирнов", "Администратор портала", (1,), True, True, "M"),
    (2, "Ольга", "Кузнецова", "Менеджер по продажам", (2,), False, True, "F"),
    (3, "Дмитрий", "Попов", "Менеджер по продажам", (2,), False, True, "M"),
    (4, "Елена", "Васильева", "Менеджер по продажам", (2,), False, True, "F"),
    (5, "Сергей", "Новиков", "Менеджер по продажам", (2,), False, True, "M"),
    (6, "Мария", "Фёдорова", "Менеджер по продажам", (2,), False, True, "F"),
    (7, "Наталья", "Морозова", "Руководитель ОКК", (3,), False, True, "F"),
    (8, "Алексей", "Волков", "Специалист ОКК", (3,), False, True, "M"),
    (9, "Татьяна", "Алексеева", "Руководитель отдела продаж", (2,), False, True, "F"),
    (10, "Игорь", "Лебедев", "Менеджер по продажам (уволен)", (2,), False, False, "M"),
    (11, "Павел", "Соколов", "Руководитель коммерческого отдела", (4,), False, True, "M"),
)
DEPARTMENTS: tuple[tuple[int, str, int, int | None, int], ...] = (
    (1, "ООО «Ромашка»", 500, None, 1),
    (2, "Отдел продаж", 500, 1, 9),
    (3, "Отдел контроля качества", 600, 1, 7),
    (4, "Коммерческий отдел", 700, 1, 11),
)
SALES_MANAGERS: tuple[int, ...] = (2, 3, 4, 5, 6)
QA_USERS: tuple[int, ...] = (7, 8)
HEAD_OF_SALES = 9
ADMIN_ID = 1
INACTIVE_USER = 10
COMMERCIAL_HEAD = 11

COMPANIES = ("Альфа", "Вектор", "Горизонт", "Дельта", "Эталон", "Заря", "Импульс", "Капитал", "Лидер", "Меридиан")
PRODUCTS = ("Поставка оборудования", "Монтаж", "Годовое обслуживание", "Лицензии", "Консалтинг", "Аренда техники")
FIRST_NAMES = ("Алексей", "Виктор", "Галина", "Евгений", "Жанна", "Кирилл", "Людмила", "Михаил", "Нина", "Олег")
LAST_NAMES = ("Орлов", "Белов", "Захаров", "Комаров", "Титов", "Гусев", "Быков", "Киселев", "Макаров", "Андреев")


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def add_stages(portal: Portal, category_id: int) -> None:
    """The stages Bitrix24 gives a new funnel: five in progress, won, and two lost."""
    entity = portal.stage_entity(category_id)
    prefix = "" if category_id == 0 else f"C{category_id}:"
    sort = 10
    for code, name, color in PROCESS_STAGES:
        _add_status(portal, entity, prefix + code, name, sort, category_id, color, None)
        sort += 10
    for code, name, color, semantics in FINAL_STAGES:
        _add_status(portal, entity, prefix + code, name, sort, category_id, color, semantics)
        sort += 10


def _add_status(
    portal: Portal,
    entity: str,
    status_id: str,
    name: str,
    sort: int,
    category_id: int | None,
    color: str,
    semantics: str | None,
) -> None:
    row_id = portal.next_id("status")
    portal.statuses[row_id] = {
        "ID": row_id,
        "ENTITY_ID": entity,
        "STATUS_ID": status_id,
        "NAME": name,
        "NAME_INIT": name,
        "SORT": sort,
        "SYSTEM": "Y" if status_id.split(":")[-1] in {"NEW", "WON", "LOSE"} or entity in {"SOURCE"} else "N",
        "CATEGORY_ID": category_id,
        "COLOR": color,
        "SEMANTICS": semantics,
    }


def seed_portal(
    *,
    domain: str = "sandbox.bitrix24.ru",
    member_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    application_token: str | None = None,
    deals: int = 30,
    seed: int = 42,
    now: float | None = None,
    installed: bool = True,
    app_url: str | None = None,
    name: str = "ООО «Ромашка»",
) -> Portal:
    """A portal with 3 funnels, the standard stages, 11 users in 4 departments, `deals` deals with
    contacts, calls with recordings, voximplant statistics and tasks (open, overdue, closed)."""
    rng = random.Random(seed)  # noqa: S311 - deterministic fixtures
    now = time.time() if now is None else now

    def hex_id(length: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(length))

    portal = Portal(
        domain=domain,
        member_id=member_id or hex_id(32),
        application_token=application_token or hex_id(32),
        client_id=client_id or f"local.{hex_id(14)}.{rng.randint(10_000_000, 99_999_999)}",
        client_secret=client_secret or "".join(rng.choice(_ALPHABET) for _ in range(50)),
        name=name,
        installed=installed,
        app_url=app_url,
    )
    for department_id, dept_name, sort, parent, head in DEPARTMENTS:
        portal.departments[department_id] = {
            "ID": department_id, "NAME": dept_name, "SORT": sort, "PARENT": parent, "UF_HEAD": head,
        }  # fmt: skip
    for user_id, first, last, position, departments, admin, active, gender in USERS:
        portal.users[user_id] = {
            "ID": user_id,
            "ACTIVE": active,
            "NAME": first,
            "LAST_NAME": last,
            "SECOND_NAME": "",
            "EMAIL": f"user{user_id}@{domain.split(':')[0]}",
            "WORK_POSITION": position,
            "UF_DEPARTMENT": list(departments),
            "IS_ADMIN": admin,
            "USER_TYPE": "employee",
            "PERSONAL_GENDER": gender,
            "DATE_REGISTER": now - 400 * 86400,
            "LAST_LOGIN": now - rng.randint(0, 5) * 86400 if active else now - 90 * 86400,
            "IS_ONLINE": "N",
        }
    for category_id, cat_name, sort in CATEGORIES:
        portal.categories[category_id] = {"ID": category_id, "NAME": cat_name, "SORT": sort}
        add_stages(portal, category_id)
    for sort, (code, source_name) in enumerate(SOURCES, start=1):
        _add_status(portal, "SOURCE", code, source_name, sort * 10, None, "", None)
    for sort, (code, type_name) in enumerate(DEAL_TYPES, start=1):
        _add_status(portal, "DEAL_TYPE", code, type_name, sort * 10, None, "", None)
    _seed_deals(portal, rng, deals, now)
    return portal


class _SeedClock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


class _Quiet:
    """Stands in for the sandbox while seeding: a clock, no events."""

    def __init__(self, now: float) -> None:
        self.clock = _SeedClock(now)

    def emit(self, *args: Any, **kwargs: Any) -> None:
        return None

    def recording_url(self, portal: Portal, file_id: int, activity_id: int | str = 0) -> str:
        return recording_link(portal.domain, file_id, activity_id)


def _seed_deals(portal: Portal, rng: random.Random, count: int, now: float) -> None:
    quiet: Any = _Quiet(now)
    weights = {"NEW": 5, "PREPARATION": 4, "PREPAYMENT_INVOICE": 3, "EXECUTING": 3, "FINAL_INVOICE": 2,
               "WON": 3, "LOSE": 2, "APOLOGY": 1}  # fmt: skip
    for number in range(1, count + 1):
        created = now - rng.randint(2, 60) * 86400 - rng.randint(0, 86000)
        quiet.clock.value = created
        category = 0 if number % 5 not in (3, 4) else (1 if number % 5 == 3 else 2)
        code = rng.choices(list(weights), weights=list(weights.values()))[0]
        stage = code if category == 0 else f"C{category}:{code}"
        manager = SALES_MANAGERS[number % len(SALES_MANAGERS)]
        contact_id = portal.next_id("contact")
        phone = f"+7 9{rng.randint(10, 99)} {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
        portal.contacts[contact_id] = {
            "ID": contact_id,
            "NAME": rng.choice(FIRST_NAMES),
            "LAST_NAME": rng.choice(LAST_NAMES),
            "PHONE": phone,
        }
        company = rng.choice(COMPANIES)
        fields = {
            "TITLE": f"{rng.choice(PRODUCTS)} — ООО «{company}»",
            "CATEGORY_ID": category,
            "STAGE_ID": portal.stages(category)[0]["STATUS_ID"],
            "OPPORTUNITY": rng.choice((15000, 30000, 45000, 80000, 120000, 250000, 600000, 1200000)),
            "CURRENCY_ID": "RUB",
            "ASSIGNED_BY_ID": manager,
            "SOURCE_ID": rng.choice(SOURCES)[0],
            "CONTACT_ID": contact_id,
            "TYPE_ID": rng.choice(DEAL_TYPES)[0],
            "COMMENTS": "",
        }
        deal_id = ops.create_deal(quiet, portal, fields, manager, manager)
        row = portal.deals[deal_id]
        row.created_by_id = manager
        moment = created
        stages = [s["STATUS_ID"] for s in portal.stages(category)]
        path = stages[: stages.index(stage) + 1] if portal.semantic(stage) == "P" else [*stages[:2], stage]
        for step in path[1:]:
            moment += rng.randint(3600, 3 * 86400)
            quiet.clock.value = min(moment, now - 600)
            ops.update_deal(quiet, portal, deal_id, {"STAGE_ID": step}, manager, manager)
        for _call in range(rng.choice((0, 1, 1, 2, 3))):
            moment += rng.randint(600, 86400)
            start = min(moment, now - 3600)
            failed = rng.random() < 0.15
            ops.add_call(
                quiet, portal, deal_id, manager, direction=rng.choice((1, 2, 2)), duration=rng.randint(25, 600),
                start=start, failed_code="304" if failed else "200", phone=phone,
            )  # fmt: skip
        _seed_task(portal, quiet, rng, deal_id, manager, now)
        quiet.clock.value = now


def _seed_task(portal: Portal, quiet: Any, rng: random.Random, deal_id: int, manager: int, now: float) -> None:
    row = portal.deals[deal_id]
    if portal.semantic(row.stage_id) != "P":
        return
    kind = rng.choice(("open", "open", "overdue", "closed", "none"))
    if kind == "none":
        return
    deadline = now + rng.randint(1, 7) * 86400 if kind != "overdue" else now - rng.randint(1, 5) * 86400
    task = ops.create_task(
        quiet,
        portal,
        {
            "TITLE": rng.choice(("Перезвонить клиенту", "Отправить КП", "Согласовать договор", "Выставить счёт")),
            "RESPONSIBLE_ID": manager,
            "CREATED_BY": HEAD_OF_SALES if kind == "overdue" else manager,
            "DEADLINE": deadline,
            "UF_CRM_TASK": [f"D_{deal_id}"],
            "AUDITORS": [HEAD_OF_SALES] if kind == "overdue" else [],
            "DESCRIPTION": "",
        },
        manager,
        manager,
    )
    if kind == "closed":
        task["STATUS"] = 5
        task["CLOSED_DATE"] = now - 3600


def generate_bulk(
    portal: Portal,
    *,
    deals: int = 10_000,
    tasks: int = 0,
    seed: int = 7,
    now: float | None = None,
    modified_within_days: int = 90,
) -> None:
    """Add many deals (and tasks) cheaply: no stage history, no contacts, shared strings.
    100 000 deals take roughly 60 MB."""
    rng = random.Random(seed)  # noqa: S311 - deterministic fixtures
    now = time.time() if now is None else now
    stage_choices = {c: [sys.intern(s["STATUS_ID"]) for s in portal.stages(c)] for c in portal.categories}
    amounts = [money(value) for value in (15000, 30000, 45000, 80000, 120000, 250000, 600000)]
    sources = [sys.intern(code) for code, _ in SOURCES]
    titles = [sys.intern(f"{product} (bulk)") for product in PRODUCTS]
    categories = sorted(portal.categories)
    for _ in range(deals):
        deal_id = portal.next_id("deal")
        created = now - rng.random() * modified_within_days * 86400
        manager = SALES_MANAGERS[deal_id % len(SALES_MANAGERS)]
        row = DealRow(deal_id, created, manager)
        row.category_id = categories[deal_id % len(categories)]
        row.stage_id = rng.choice(stage_choices[row.category_id])
        row.title = titles[deal_id % len(titles)]
        row.opportunity = amounts[deal_id % len(amounts)]
        row.source_id = sources[deal_id % len(sources)]
        modified = created + rng.random() * (now - created)
        row.date_modify = modified
        row.moved_time = modified
        row.last_activity_time = modified
        portal.add_deal_row(row)
    deal_ids = portal.deal_ids
    for _ in range(tasks):
        task_id = portal.next_id("task")
        deal_id = deal_ids[rng.randrange(len(deal_ids))]
        manager = portal.deals[deal_id].assigned_by_id
        status = rng.choice((2, 2, 3, 5))
        portal.tasks[task_id] = {
            "ID": task_id,
            "PARENT_ID": 0,
            "TITLE": "Перезвонить клиенту",
            "DESCRIPTION": "",
            "PRIORITY": 1,
            "STATUS": status,
            "GROUP_ID": 0,
            "CREATED_BY": manager,
            "CREATED_DATE": now - 86400 * 10,
            "RESPONSIBLE_ID": manager,
            "CHANGED_DATE": now - 86400,
            "CLOSED_DATE": now - 3600 if status == 5 else None,
            "DEADLINE": now + (rng.random() - 0.3) * 14 * 86400,
            "ACCOMPLICES": [],
            "AUDITORS": [],
            "UF_CRM_TASK": [f"D_{deal_id}"],
            "TAGS": [],
            "ACTIVITY_DATE": now - 86400,
        }
