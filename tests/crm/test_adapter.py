"""Bitrix24Crm over HTTP against the sandbox: the CrmClient port decoding and encoding real portal shapes.

The user fields are created by the installer's own step (`ensure_fields`) through the sandbox's REST,
so enumeration item ids are whatever the portal assigned.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from flask import Flask

from app.core.db import db
from app.core.models import Portal
from app.crm import errors
from app.crm.bitrix24 import Bitrix24Crm, Bitrix24Rest
from app.crm.factory import client_for
from app.crm.port import DealChange, NewTask, NewTodo
from installers.bitrix24 import ensure_fields
from sandbox import ManualClock
from sandbox.state import Portal as SandboxPortal
from tests.crm.conftest import B24Env

NOW = datetime(2025, 1, 9, 7, 15, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW.timestamp())


@pytest.fixture
def crm(b24: B24Env, portal: Portal) -> Bitrix24Crm:
    portal.timezone = "Europe/Moscow"
    ensure_fields(Bitrix24Rest(portal.id), portal)
    db.session.commit()
    client = client_for(portal)
    assert isinstance(client, Bitrix24Crm)
    b24.mock.calls.reset()
    with b24.sandbox.lock:
        b24.sandbox.call_log.clear()
    return client


def fields_of(portal: Portal) -> dict:
    return portal.settings["b24_fields"]


def failure_stage(sb_portal: SandboxPortal) -> tuple[int, str]:
    """A funnel other than the general one and its lost stage."""
    category = max(sb_portal.categories)
    stage = next(s["STATUS_ID"] for s in sb_portal.stages(category) if s.get("SEMANTICS") == "F")
    return category, stage


def test_deal_is_decoded(b24: B24Env, portal: Portal, crm: Bitrix24Crm):
    sandbox = b24.sandbox
    category, lost = failure_stage(b24.portal)
    fields = fields_of(portal)
    deal_id = sandbox.act(b24.portal, 7).create_deal(
        TITLE="Machine tools",
        CATEGORY_ID=category,
        STAGE_ID=lost,
        ASSIGNED_BY_ID=7,
        OPPORTUNITY="15300.50",
        **{
            fields["refusal_reason"]["field"]: fields["refusal_reason"]["enum"]["bought_elsewhere"],
            fields["refusal_comment"]["field"]: "Client bought elsewhere",
            fields["qa_verdict"]["field"]: fields["qa_verdict"]["enum"]["leaked"],
            fields["cpl"]["field"]: 350,
        },
    )
    deal = crm.get_deal(str(deal_id))
    assert deal.id == str(deal_id) and deal.pipeline_id == str(category) and deal.stage_id == lost
    assert deal.stage_semantics == "failure"
    assert deal.amount == Decimal("15300.50") and isinstance(deal.amount, Decimal)
    assert deal.cpl == Decimal("350")
    assert deal.refusal_reason == "bought_elsewhere"
    assert deal.refusal_comment == "Client bought elsewhere"
    assert deal.qa_verdict == "leaked"
    assert deal.modified_at == NOW
    assert deal.modified_at.utcoffset() == timedelta(hours=3)  # the portal prints Moscow time
    assert deal.responsible_id == "7" and deal.modified_by_id == "7"
    assert b24.rest_requests() == ["crm.deal.get"]


def test_empty_custom_values_decode_to_nothing(b24: B24Env, portal: Portal, crm: Bitrix24Crm):
    won = next(s["STATUS_ID"] for s in b24.portal.stages(0) if s.get("SEMANTICS") == "S")
    deal_id = b24.sandbox.act(b24.portal, 7).create_deal(TITLE="Won", STAGE_ID=won)
    deal = crm.get_deal(str(deal_id))
    assert deal.refusal_reason is None and deal.cpl is None and deal.refusal_comment == ""
    assert deal.qa_verdict is None
    assert deal.stage_semantics == "success"


def test_missing_deal_is_not_found(crm: Bitrix24Crm):
    with pytest.raises(errors.NotFound):
        crm.get_deal("404404")


def test_update_encodes_reason_codes_to_enum_ids(b24: B24Env, portal: Portal, crm: Bitrix24Crm):
    sandbox = b24.sandbox
    deal_id = sandbox.act(b24.portal, 7).create_deal(TITLE="Deal", CATEGORY_ID=0, STAGE_ID="NEW")
    crm.update_deal(
        str(deal_id),
        DealChange(stage_id="PREPARATION", refusal_reason="price", refusal_comment="Price", qa_verdict="confirmed"),
    )
    fields = fields_of(portal)
    assert b24.rest_requests() == ["crm.deal.update"]
    assert sandbox.calls(b24.portal, "crm.deal.update")[0].params == {
        "id": str(deal_id),
        "fields": {
            "STAGE_ID": "PREPARATION",
            fields["refusal_reason"]["field"]: fields["refusal_reason"]["enum"]["price"],
            fields["refusal_comment"]["field"]: "Price",
            fields["qa_verdict"]["field"]: fields["qa_verdict"]["enum"]["confirmed"],
        },
    }
    # The portal stored the enum item ids, and they decode back to our codes.
    deal = crm.get_deal(str(deal_id))
    assert (deal.stage_id, deal.refusal_reason, deal.refusal_comment, deal.qa_verdict) == (
        "PREPARATION",
        "price",
        "Price",
        "confirmed",
    )


def test_unknown_reason_code_is_refused_before_any_request(b24: B24Env, crm: Bitrix24Crm):
    with pytest.raises(errors.CrmError, match="not installed"):
        crm.update_deal("42", DealChange(refusal_reason="bogus"))
    assert b24.requests_sent() == []


def test_pipeline_move_and_fields_go_in_one_batch(b24: B24Env, crm: Bitrix24Crm):
    sandbox = b24.sandbox
    deal_id = sandbox.act(b24.portal, 7).create_deal(TITLE="Deal", CATEGORY_ID=0, STAGE_ID="NEW", ASSIGNED_BY_ID=7)
    category = max(b24.portal.categories)
    first_stage = b24.portal.stages(category)[0]["STATUS_ID"]
    crm.update_deal(str(deal_id), DealChange(pipeline_id=str(category), stage_id=first_stage, responsible_id="9"))
    assert b24.rest_requests() == ["batch"]
    cmd = sandbox.calls(b24.portal, "batch")[0].params["cmd"]
    assert cmd["move"].startswith("crm.item.update?")
    assert f"fields%5BcategoryId%5D={category}" in cmd["move"]
    assert "ASSIGNED_BY_ID%5D=9" in cmd["update"] and "STAGE_ID" not in cmd["update"]
    deal = sandbox.deal(b24.portal, deal_id)
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"], deal["ASSIGNED_BY_ID"]) == (str(category), first_stage, "9")


def test_get_deals_packs_lists_into_one_batch(b24: B24Env, crm: Bitrix24Crm):
    actor = b24.sandbox.act(b24.portal, 7)
    ids = [actor.create_deal(TITLE=f"Deal {n}", STAGE_ID="NEW") for n in range(130)]
    b24.mock.calls.reset()
    deals = crm.get_deals([str(i) for i in ids[:120]] + ["999999"])
    assert sorted(int(i) for i in deals) == ids[:120]
    assert deals[str(ids[5])].title == "Deal 5"
    assert b24.rest_requests() == ["batch"]


def test_iter_deals_filters_by_modification(b24: B24Env, crm: Bitrix24Crm, clock: ManualClock):
    actor = b24.sandbox.act(b24.portal, 7)
    old = [actor.create_deal(TITLE="Old", STAGE_ID="NEW") for _ in range(59)]
    recent = [actor.create_deal(TITLE="Recent", STAGE_ID="NEW") for _ in range(20)]
    clock.advance(23 * 86400)  # 2025-02-01
    for deal_id in recent:
        actor.update_deal(deal_id, {"COMMENTS": "called back"})
    since = datetime(2025, 1, 20, tzinfo=timezone(timedelta(hours=3)))
    b24.mock.calls.reset()
    ids = [deal.id for deal in crm.iter_deals(modified_since=since)]
    assert ids == [str(i) for i in recent] and old
    params = b24.sandbox.calls(b24.portal, "crm.deal.list")[0].params
    assert params["filter"][">=DATE_MODIFY"] == "2025-01-20T00:00:00+03:00"


def test_pipelines_with_stage_semantics(b24: B24Env, crm: Bitrix24Crm):
    pipelines = crm.list_pipelines()
    assert b24.rest_requests() == ["crm.category.list", "batch"]
    sb_portal = b24.portal
    assert sorted(p.id for p in pipelines) == sorted(str(c) for c in sb_portal.categories)
    assert pipelines[0].id == "0" and pipelines[0].is_default and not any(p.is_default for p in pipelines[1:])
    kinds = {None: "process", "": "process", "P": "process", "S": "success", "F": "failure"}
    for pipeline in pipelines:
        expected = sorted(sb_portal.stages(int(pipeline.id)), key=lambda s: int(s["SORT"]))
        assert [(s.id, s.semantics) for s in pipeline.stages] == [
            (s["STATUS_ID"], kinds[s.get("SEMANTICS")]) for s in expected
        ]
        assert {s.semantics for s in pipeline.stages} == {"process", "success", "failure"}


def test_tasks_are_created_and_listed_with_the_deal_binding(b24: B24Env, crm: Bitrix24Crm):
    sandbox = b24.sandbox
    deal_id = sandbox.act(b24.portal, 7).create_deal(TITLE="Deal", STAGE_ID="NEW")
    deadline = datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=3)))
    task_id = crm.create_task(
        NewTask(title="Call back", responsible_id="7", deal_id=str(deal_id), deadline=deadline, auditor_ids=("3",))
    )
    fields = sandbox.calls(b24.portal, "tasks.task.add")[0].params["fields"]
    assert fields["UF_CRM_TASK"] == [f"D_{deal_id}"] and fields["DEADLINE"] == "2025-12-31T23:59:59+03:00"
    done = sandbox.act(b24.portal, 7).create_task(
        TITLE="Done", RESPONSIBLE_ID=7, UF_CRM_TASK=[f"D_{deal_id}"], DEADLINE="2025-01-10T18:00:00+03:00"
    )
    sandbox.act(b24.portal, 7).complete_task(done)
    tasks = crm.list_deal_tasks(str(deal_id))
    params = sandbox.calls(b24.portal, "tasks.task.list")[0].params
    assert params["filter"]["UF_CRM_TASK"] == f"D_{deal_id}" and "UF_CRM_TASK" in params["select"]
    assert [(t.id, t.is_open) for t in tasks] == [(task_id, True), (str(done), False)]
    assert tasks[0].deadline == deadline and tasks[0].auditor_ids == ("3",) and tasks[0].responsible_id == "7"


def test_calls_join_activities_and_recordings(b24: B24Env, crm: Bitrix24Crm):
    sandbox = b24.sandbox
    deal_id = sandbox.act(b24.portal, 7).create_deal(TITLE="Deal", STAGE_ID="NEW")
    incoming = sandbox.act(b24.portal, 7).make_call(deal_id, direction=1, duration=118, phone="+79990001122")
    sandbox.act(b24.portal, 8).make_call(deal_id, direction=2, duration=30, with_recording=False)
    b24.mock.calls.reset()
    calls = crm.list_deal_calls(str(deal_id))
    assert b24.rest_requests() == ["crm.activity.list", "batch"]
    first, second = calls
    file_id = incoming["FILE_IDS"][0]
    assert (first.direction, first.duration_seconds, first.recording_file_id) == ("in", 118, str(file_id))
    assert first.recording_url and str(file_id) in first.recording_url
    assert first.started_at.tzinfo is not None and first.phone == "+79990001122" and first.user_id == "7"
    assert (second.direction, second.duration_seconds, second.recording_url, second.user_id) == ("out", 30, None, "8")


def test_users_departments_and_notify(b24: B24Env, crm: Bitrix24Crm):
    sb_portal: SandboxPortal = b24.portal
    users = crm.list_users()
    employees = {str(uid): u for uid, u in sb_portal.users.items() if u.get("USER_TYPE", "employee") == "employee"}
    assert sorted(u.id for u in users) == sorted(employees)
    for user in users:
        raw = employees[user.id]
        assert user.name == f"{raw['NAME']} {raw['LAST_NAME']}".strip()
        assert user.department_ids == tuple(str(d) for d in raw.get("UF_DEPARTMENT", []))
        assert user.active == bool(raw["ACTIVE"])
    departments = {d.id: d for d in crm.list_departments()}
    assert sorted(departments) == sorted(str(i) for i in sb_portal.departments)
    for dep_id, raw in sb_portal.departments.items():
        dep = departments[str(dep_id)]
        assert dep.head_id == (str(raw["UF_HEAD"]) if raw.get("UF_HEAD") else None)
        assert dep.parent_id == (str(raw["PARENT"]) if raw.get("PARENT") else None)
    crm.notify("7", "Deal [URL=/crm/deal/details/42/]42[/URL] went back")
    assert b24.rest_requests()[-1] == "im.notify.system.add"
    assert [n.message for n in b24.sandbox.notifications(sb_portal, 7)] == [
        "Deal [URL=/crm/deal/details/42/]42[/URL] went back"
    ]


def test_factory_refuses_unknown_crm(app: Flask):
    from app.crm.amocrm import AmoCrm
    from tests.helpers import make_portal

    assert isinstance(client_for(make_portal("acc-1", crm=Portal.AMOCRM, domain="acc.amocrm.ru")), AmoCrm)
    with pytest.raises(ValueError, match="no CRM adapter"):
        client_for(make_portal("acc-2", crm="pipedrive"))


def test_tasks_and_todos_are_completed_and_gone_or_done_ones_are_no_error(b24: B24Env, crm: Bitrix24Crm):
    sandbox = b24.sandbox
    deal_id = str(sandbox.act(b24.portal, 7).create_deal(TITLE="Deal", STAGE_ID="NEW"))
    deadline = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    task_id = crm.create_task(NewTask(title="Review", responsible_id="7", deal_id=deal_id, deadline=deadline))
    todo_id = crm.create_todo(NewTodo(title="Call back", responsible_id="7", deal_id=deal_id, deadline=deadline))
    assert {t.id for t in crm.open_deal_tasks(deal_id)} == {task_id, todo_id}

    crm.complete_task(task_id, "ended")
    crm.complete_todo(todo_id, "ended")

    assert crm.open_deal_tasks(deal_id) == []
    assert sandbox.calls(b24.portal, "tasks.task.complete")[0].params == {"taskId": task_id}
    assert sandbox.calls(b24.portal, "crm.activity.update")[0].params == {"id": todo_id, "fields": {"COMPLETED": "Y"}}
    crm.complete_task(task_id)  # already completed
    crm.complete_todo(todo_id)
    crm.complete_task("987654")  # deleted
    crm.complete_todo("987654")


def test_deal_values_carry_every_field_and_the_field_list_has_labels(b24: B24Env, portal: Portal, crm: Bitrix24Crm):
    fields = fields_of(portal)
    comment = fields["refusal_comment"]["field"]
    deal_id = b24.sandbox.act(b24.portal, 7).create_deal(
        TITLE="Machine tools", OPPORTUNITY="0.00", BEGINDATE="2025-01-09T00:00:00+03:00", **{comment: "  "}
    )
    deal = crm.get_deal(str(deal_id))
    assert deal.values["TITLE"] == ("Machine tools",) and deal.values["OPPORTUNITY"] == ("0.00",)
    assert deal.values["BEGINDATE"] == ("2025-01-09T00:00:00+03:00",)
    assert comment not in deal.values, "a blank value is no value"
    assert crm.get_deals([str(deal_id)])[str(deal_id)].values["OPPORTUNITY"] == ("0.00",)

    listed = {field.code: field for field in crm.list_deal_fields()}
    assert b24.rest_requests()[-1] == "crm.deal.fields"
    assert (listed["OPPORTUNITY"].label, listed["OPPORTUNITY"].kind) == ("Сумма", "number")
    assert listed["BEGINDATE"].kind == "date" and listed["ASSIGNED_BY_ID"].kind == "link"
    assert listed[fields["refusal_reason"]["field"]].kind == "enum"
    assert listed[comment].label == "Комментарий к отказу", "a user field is labelled by its form label"
    assert "ID" not in listed and "STAGE_ID" not in listed and "DATE_CREATE" not in listed, "read-only, not asked"
