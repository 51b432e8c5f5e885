"""State changes shared by REST methods and by simulated people: they change data and emit events.

`author` is the user whose action it is, or None for a robot/automation change (events then carry
no tokens). `actor_user` is the user recorded as MODIFY_BY_ID / MOVED_BY_ID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandbox.clock import parse_date
from sandbox.errors import RestError, bad_argument, not_found
from sandbox.query import as_list, truthy
from sandbox.state import DEAL_FIELDS, DEAL_WRITABLE, DealRow, Portal, money

if TYPE_CHECKING:
    from sandbox.sandbox import Sandbox

TASK_STATUS_NAMES = {2: "pending", 3: "in progress", 4: "awaiting control", 5: "completed", 6: "deferred"}


def _int_or_none(value: Any) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(float(str(value)))
    except ValueError:
        return None


def _set_deal_field(portal: Portal, row: DealRow, name: str, value: Any) -> None:
    attr, kind = DEAL_FIELDS[name]
    if kind == "int":
        number = _int_or_none(value)
        setattr(row, attr, 0 if number is None and name == "COMPANY_ID" else number)
    elif kind == "float":
        setattr(row, attr, money(value))
    elif kind == "date":
        setattr(row, attr, parse_date(value))
    elif kind == "yn":
        setattr(row, attr, "Y" if truthy(value) else "N")
    else:
        setattr(row, attr, None if value is None else str(value))


def _normalise_uf_value(portal: Portal, name: str, value: Any) -> Any:
    userfield = portal.userfield_by_name(name)
    if userfield is None:
        return None
    values = as_list(value) if userfield.multiple == "Y" else [value]
    cleaned: list[Any] = []
    for item in values:
        if item is None or item == "":
            continue
        if userfield.user_type_id == "enumeration":
            ids = {str(option["ID"]) for option in userfield.items}
            if str(item) not in ids:
                continue
        if userfield.user_type_id == "boolean":
            item = "1" if truthy(item) else "0"
        cleaned.append(item if isinstance(item, list | dict) else str(item))
    if userfield.multiple == "Y":
        return cleaned
    return cleaned[0] if cleaned else None


def apply_deal_fields(portal: Portal, row: DealRow, fields: Mapping[str, Any]) -> None:
    """Write the writable standard fields and known UF_* fields; unknown keys are ignored."""
    for key, value in fields.items():
        name = str(key).upper()
        if name in DEAL_WRITABLE:
            _set_deal_field(portal, row, name, value)
        elif name.startswith("UF_CRM_") and portal.userfield_by_name(name) is not None:
            if row.uf is None:
                row.uf = {}
            row.uf[name] = _normalise_uf_value(portal, name, value)


def _history(sb: Sandbox, portal: Portal, row: DealRow, type_id: int) -> None:
    portal.stage_history.append(
        {
            "ID": portal.next_id("stagehistory"),
            "TYPE_ID": type_id,
            "OWNER_ID": row.id,
            "CREATED_TIME": sb.clock.now(),
            "CATEGORY_ID": row.category_id,
            "STAGE_SEMANTIC_ID": portal.semantic(row.stage_id),
            "STAGE_ID": row.stage_id,
        }
    )


def _check_user(portal: Portal, user_id: int | None, field: str) -> None:
    if user_id is not None and user_id not in portal.users:
        raise bad_argument(f"User with ID {user_id} in {field} not found")


def get_deal(portal: Portal, deal_id: Any) -> DealRow:
    """A deal or the legacy 400 "Not found"."""
    number = _int_or_none(deal_id)
    if number is None:
        raise bad_argument("ID is not defined or invalid.", code="")
    row = portal.deals.get(number)
    if row is None:
        raise not_found()
    return row


def create_deal(
    sb: Sandbox, portal: Portal, fields: Mapping[str, Any], author: int | None, actor_user: int, connector: str = ""
) -> int:
    """crm.deal.add: returns the new id; fires ONCRMDEALADD."""
    upper = {str(k).upper(): v for k, v in fields.items()}
    category_id = _int_or_none(upper.get("CATEGORY_ID")) or 0
    if category_id not in portal.categories:
        raise bad_argument(f"Category {category_id} not found", code="")
    stages = portal.stages(category_id)
    stage_id = str(upper.get("STAGE_ID") or stages[0]["STATUS_ID"])
    if portal.stage_category(stage_id) != category_id:
        raise RestError(400, "", f"Stage {stage_id} is not found in category {category_id}")
    now = sb.clock.now()
    row = DealRow(portal.next_id("deal"), now, actor_user)
    row.category_id = category_id
    apply_deal_fields(portal, row, {k: v for k, v in upper.items() if k != "STAGE_ID"})
    row.stage_id = stage_id
    if row.assigned_by_id is None:
        row.assigned_by_id = actor_user
    _check_user(portal, row.assigned_by_id, "ASSIGNED_BY_ID")
    if not row.title:
        row.title = f"Сделка #{row.id}"
    if portal.semantic(stage_id) != "P":
        row.closedate = now
    portal.add_deal_row(row)
    _history(sb, portal, row, 1)
    sb.emit(portal, "ONCRMDEALADD", {"FIELDS": {"ID": row.id}}, f"deal:{row.id}", author, connector)
    return row.id


def update_deal(
    sb: Sandbox,
    portal: Portal,
    deal_id: Any,
    fields: Mapping[str, Any],
    author: int | None,
    actor_user: int,
    connector: str = "",
) -> None:
    """crm.deal.update: CATEGORY_ID is ignored; a stage of another funnel is refused; fires ONCRMDEALUPDATE."""
    row = get_deal(portal, deal_id)
    upper = {str(k).upper(): v for k, v in fields.items()}
    upper.pop("CATEGORY_ID", None)
    new_stage = upper.pop("STAGE_ID", None)
    if new_stage is not None and portal.stage_category(str(new_stage)) != row.category_id:
        raise RestError(400, "", f"Stage {new_stage} is not found in category {row.category_id}")
    if "ASSIGNED_BY_ID" in upper:
        _check_user(portal, _int_or_none(upper["ASSIGNED_BY_ID"]), "ASSIGNED_BY_ID")
    now = sb.clock.now()
    apply_deal_fields(portal, row, upper)
    if new_stage is not None and str(new_stage) != row.stage_id:
        _move_stage(sb, portal, row, str(new_stage), actor_user, now)
    row.date_modify = now
    row.modify_by_id = actor_user
    sb.emit(portal, "ONCRMDEALUPDATE", {"FIELDS": {"ID": row.id}}, f"deal:{row.id}", author, connector)


def _move_stage(sb: Sandbox, portal: Portal, row: DealRow, stage_id: str, actor_user: int, now: float) -> None:
    row.stage_id = stage_id
    row.moved_by_id = actor_user
    row.moved_time = now
    semantic = portal.semantic(stage_id)
    row.closedate = now if semantic != "P" else row.closedate
    _history(sb, portal, row, 2 if semantic == "P" else 3)


def move_deal_to_category(
    sb: Sandbox,
    portal: Portal,
    deal_id: Any,
    category_id: int,
    stage_id: str | None,
    other_fields: Mapping[str, Any],
    author: int | None,
    actor_user: int,
    connector: str = "",
) -> None:
    """A funnel change (crm.item.update with categoryId): fires ONCRMDEALMOVETOCATEGORY, not ONCRMDEALUPDATE."""
    row = get_deal(portal, deal_id)
    if category_id not in portal.categories:
        raise bad_argument(f"Category {category_id} not found", code="NOT_FOUND")
    stages = portal.stages(category_id)
    target = stage_id or stages[0]["STATUS_ID"]
    if portal.stage_category(target) != category_id:
        raise bad_argument(f"Stage {target} is not found in category {category_id}", code="CRM_FIELD_ERROR_VALUE")
    now = sb.clock.now()
    apply_deal_fields(portal, row, other_fields)
    row.category_id = category_id
    row.stage_id = target
    row.moved_by_id = actor_user
    row.moved_time = now
    row.date_modify = now
    row.modify_by_id = actor_user
    _history(sb, portal, row, 5)
    sb.emit(
        portal,
        "ONCRMDEALMOVETOCATEGORY",
        {"FIELDS": {"ID": row.id, "CATEGORY_ID": category_id, "STAGE_ID": target}},
        f"deal:{row.id}",
        author,
        connector,
    )


def move_deal(
    sb: Sandbox, portal: Portal, deal_id: Any, stage_id: str, author: int | None, actor_user: int, connector: str = ""
) -> None:
    """A kanban drag: within the funnel it is an update, into another funnel's stage a category move."""
    row = get_deal(portal, deal_id)
    category = portal.stage_category(stage_id)
    if category is None:
        raise bad_argument(f"Unknown stage {stage_id}")
    if category == row.category_id:
        update_deal(sb, portal, deal_id, {"STAGE_ID": stage_id}, author, actor_user, connector)
    else:
        move_deal_to_category(sb, portal, deal_id, category, stage_id, {}, author, actor_user, connector)


def delete_deal(sb: Sandbox, portal: Portal, deal_id: Any, author: int | None, connector: str = "") -> None:
    """crm.deal.delete: fires ONCRMDEALDELETE."""
    row = get_deal(portal, deal_id)
    portal.remove_deal_row(row.id)
    sb.emit(portal, "ONCRMDEALDELETE", {"FIELDS": {"ID": row.id}}, f"deal:{row.id}", author, connector)


# ---- tasks ---------------------------------------------------------------------------------------

TASK_KINDS: dict[str, str] = {
    "ID": "int",
    "PARENT_ID": "int",
    "TITLE": "str",
    "DESCRIPTION": "str",
    "PRIORITY": "int",
    "STATUS": "int",
    "REAL_STATUS": "int",
    "GROUP_ID": "int",
    "CREATED_BY": "int",
    "CREATED_DATE": "date",
    "RESPONSIBLE_ID": "int",
    "CHANGED_DATE": "date",
    "CLOSED_DATE": "date",
    "DEADLINE": "date",
    "ACCOMPLICES": "int",
    "AUDITORS": "int",
    "ACCOMPLICE": "int",
    "AUDITOR": "int",
    "UF_CRM_TASK": "str",
    "TAG": "str",
    "ACTIVITY_DATE": "date",
}


def _task_fields(portal: Portal, task: dict[str, Any], fields: Mapping[str, Any], now: float) -> None:
    for key, value in fields.items():
        name = str(key).upper()
        if name in {"TITLE", "DESCRIPTION"}:
            task[name] = "" if value is None else str(value)
        elif name in {"RESPONSIBLE_ID", "CREATED_BY", "GROUP_ID", "PRIORITY", "PARENT_ID"}:
            task[name] = _int_or_none(value) or 0
        elif name == "DEADLINE":
            task["DEADLINE"] = parse_date(value)
        elif name in {"ACCOMPLICES", "AUDITORS"}:
            task[name] = [int(item) for item in as_list(value) if str(item).strip()]
        elif name == "UF_CRM_TASK":
            task[name] = [str(item) for item in as_list(value) if str(item).strip()]
        elif name == "TAGS":
            task["TAGS"] = [str(item) for item in as_list(value)]
        elif name in {"STATUS", "REAL_STATUS"}:
            status = _int_or_none(value)
            if status in TASK_STATUS_NAMES:
                task["STATUS"] = status
                task["CLOSED_DATE"] = now if status == 5 else None
        elif name == "SE_PARAMETER":
            task["SE_PARAMETER"] = as_list(value)


def create_task(
    sb: Sandbox, portal: Portal, fields: Mapping[str, Any], author: int | None, actor_user: int
) -> dict[str, Any]:
    """tasks.task.add: fires ONTASKADD."""
    upper = {str(k).upper(): v for k, v in fields.items()}
    if not str(upper.get("TITLE") or "").strip():
        raise RestError(400, "ERROR_CORE", "Task title is empty")
    if not _int_or_none(upper.get("RESPONSIBLE_ID")):
        raise RestError(400, "ERROR_CORE", "Task responsible is not set")
    now = sb.clock.now()
    task: dict[str, Any] = {
        "ID": portal.next_id("task"),
        "PARENT_ID": 0,
        "TITLE": "",
        "DESCRIPTION": "",
        "PRIORITY": 1,
        "STATUS": 2,
        "GROUP_ID": 0,
        "CREATED_BY": actor_user,
        "CREATED_DATE": now,
        "RESPONSIBLE_ID": actor_user,
        "CHANGED_DATE": now,
        "CLOSED_DATE": None,
        "DEADLINE": None,
        "ACCOMPLICES": [],
        "AUDITORS": [],
        "UF_CRM_TASK": [],
        "TAGS": [],
        "ACTIVITY_DATE": now,
    }
    _task_fields(portal, task, upper, now)
    _check_user(portal, task["RESPONSIBLE_ID"], "RESPONSIBLE_ID")
    portal.tasks[task["ID"]] = task
    sb.emit(portal, "ONTASKADD", {"FIELDS_AFTER": {"ID": task["ID"]}}, f"task:{task['ID']}", author, "")
    return task


def get_task(portal: Portal, task_id: Any) -> dict[str, Any]:
    """A task or the tasks module's not-found error."""
    task = portal.tasks.get(_int_or_none(task_id) or 0)
    if task is None:
        raise RestError(400, "ERROR_CORE", "TASKS_ERROR_EXCEPTION_#8; Task not found or not accessible")
    return task


def update_task(
    sb: Sandbox, portal: Portal, task_id: Any, fields: Mapping[str, Any], author: int | None
) -> dict[str, Any]:
    """tasks.task.update: fires ONTASKUPDATE."""
    task = get_task(portal, task_id)
    now = sb.clock.now()
    _task_fields(portal, task, {str(k).upper(): v for k, v in fields.items()}, now)
    task["CHANGED_DATE"] = now
    sb.emit(
        portal,
        "ONTASKUPDATE",
        {"FIELDS_BEFORE": {"ID": task["ID"]}, "FIELDS_AFTER": {"ID": task["ID"]}, "IS_ACCESSIBLE_BEFORE": "N"},
        f"task:{task['ID']}",
        author,
        "",
    )
    return task


# ---- calls ---------------------------------------------------------------------------------------


def add_call(
    sb: Sandbox,
    portal: Portal,
    deal_id: int,
    user_id: int,
    *,
    direction: int = 2,
    duration: int = 60,
    start: float | None = None,
    with_recording: bool = True,
    failed_code: str = "200",
    phone: str | None = None,
) -> dict[str, Any]:
    """A finished phone call on a deal: the call activity, its voximplant statistics row and a recording."""
    row = get_deal(portal, deal_id)
    start = sb.clock.now() - duration if start is None else start
    contact_id = row.contact_id
    if phone is None:
        phone = (portal.contacts.get(contact_id or 0) or {}).get("PHONE") or "+7 900 000-00-00"
    activity_id = portal.next_id("activity")
    file_id = portal.next_id("file", start=4001) if with_recording and failed_code == "200" else None
    call_id = f"externalCall.{activity_id:08x}.{int(start)}"
    subject = ("Исходящий звонок" if direction == 2 else "Входящий звонок") + f" {phone}"
    bindings = [{"OWNER_TYPE_ID": 2, "OWNER_ID": row.id}]
    if contact_id:
        bindings.append({"OWNER_TYPE_ID": 3, "OWNER_ID": contact_id})
    activity = {
        "ID": activity_id,
        "OWNER_ID": row.id,
        "OWNER_TYPE_ID": 2,
        "TYPE_ID": 2,
        "PROVIDER_ID": "VOXIMPLANT_CALL",
        "PROVIDER_TYPE_ID": "CALL",
        "PROVIDER_GROUP_ID": None,
        "ASSOCIATED_ENTITY_ID": None,
        "SUBJECT": subject,
        "CREATED": start + duration,
        "LAST_UPDATED": start + duration,
        "START_TIME": start,
        "END_TIME": start + duration,
        "DEADLINE": start + duration,
        "COMPLETED": "Y",
        "STATUS": 2,
        "RESPONSIBLE_ID": user_id,
        "PRIORITY": 2,
        "NOTIFY_TYPE": 0,
        "NOTIFY_VALUE": 0,
        "DESCRIPTION": "",
        "DESCRIPTION_TYPE": 1,
        "DIRECTION": direction,
        "LOCATION": "",
        "SETTINGS": [],
        "ORIGINATOR_ID": None,
        "ORIGIN_ID": call_id,
        "AUTHOR_ID": user_id,
        "EDITOR_ID": user_id,
        "FILE_IDS": [file_id] if file_id else [],
        "COMMUNICATIONS": [
            {
                "ID": activity_id,
                "TYPE": "PHONE",
                "VALUE": phone,
                "ENTITY_ID": contact_id or row.id,
                "ENTITY_TYPE_ID": 3 if contact_id else 2,
            }
        ],
        "BINDINGS": bindings,
    }
    portal.activities[activity_id] = activity
    stat_id = portal.next_id("callstat")
    portal.call_stats[stat_id] = {
        "ID": stat_id,
        "CALL_ID": call_id,
        "PORTAL_USER_ID": user_id,
        "PORTAL_NUMBER": "sip1",
        "PHONE_NUMBER": phone,
        "CALL_TYPE": 1 if direction == 2 else 2,
        "CALL_DURATION": duration if failed_code == "200" else 0,
        "CALL_START_DATE": start,
        "CALL_FAILED_CODE": failed_code,
        "CALL_FAILED_REASON": "Success call" if failed_code == "200" else "Missed call",
        "CALL_RECORD_URL": "",
        "RECORD_FILE_ID": file_id,
        "RECORD_DURATION": duration if file_id else None,
        "CRM_ENTITY_TYPE": "CONTACT" if contact_id else "",
        "CRM_ENTITY_ID": contact_id,
        "CRM_ACTIVITY_ID": activity_id,
        "COST": "0.0000",
        "COST_CURRENCY": "RUR",
        "CALL_VOTE": None,
        "COMMENT": None,
        "TRANSCRIPT_ID": None,
        "TRANSCRIPT_PENDING": "N",
        "REST_APP_ID": None,
        "REST_APP_NAME": None,
        "CALL_CATEGORY": "external",
        "REDIAL_ATTEMPT": None,
        "SESSION_ID": str(1000 + stat_id),
    }
    row.last_activity_time = start + duration
    row.last_activity_by = user_id
    return activity
