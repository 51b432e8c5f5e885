"""Bitrix24Crm: the CrmClient port decoding and encoding Bitrix24 shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from flask import Flask

from app.crm import client_for, errors
from app.crm.bitrix24 import Bitrix24Crm
from app.crm.port import DealChange, NewTask
from app.models import Portal
from tests.crm.conftest import portal_row
from tests.crm.fake_b24 import FakeBitrix24, deal_row

FIELDS = {
    "refusal_reason": {"field": "UF_CRM_RC_REASON", "enum": {"too_expensive": "3157", "no_need": "3158"}},
    "refusal_comment": {"field": "UF_CRM_RC_COMMENT"},
    "qa_verdict": {"field": "UF_CRM_RC_VERDICT", "enum": {"confirmed": "41", "leaked": "42"}},
    "cpl": {"field": "UF_CRM_RC_CPL"},
}


@pytest.fixture
def crm(b24_app: Flask, fake: FakeBitrix24) -> Bitrix24Crm:
    portal = portal_row(settings={"b24_fields": FIELDS}, timezone="Europe/Moscow")
    client = client_for(portal)
    assert isinstance(client, Bitrix24Crm)
    return client


def test_deal_is_decoded(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.add_deals(
        [
            deal_row(
                42,
                CATEGORY_ID="3",
                STAGE_ID="C3:LOSE",
                STAGE_SEMANTIC_ID="F",
                OPPORTUNITY="15300.50",
                UF_CRM_RC_REASON="3158",
                UF_CRM_RC_COMMENT="Client bought elsewhere",
                UF_CRM_RC_VERDICT="42",
                UF_CRM_RC_CPL="350.00|RUB",
                DATE_MODIFY="2025-01-09T10:15:00+03:00",
            )
        ]
    )
    deal = crm.get_deal("42")
    assert deal.id == "42" and deal.pipeline_id == "3" and deal.stage_id == "C3:LOSE"
    assert deal.stage_semantics == "failure"
    assert deal.amount == Decimal("15300.50") and isinstance(deal.amount, Decimal)
    assert deal.cpl == Decimal("350.00")
    assert deal.refusal_reason == "no_need"
    assert deal.refusal_comment == "Client bought elsewhere"
    assert deal.qa_verdict == "leaked"
    assert deal.modified_at == datetime(2025, 1, 9, 7, 15, tzinfo=UTC)
    assert deal.modified_at.utcoffset() == timedelta(hours=3)
    assert deal.responsible_id == "7" and deal.modified_by_id == "7"


def test_empty_custom_values_decode_to_nothing(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.add_deals([deal_row(1, UF_CRM_RC_REASON="", UF_CRM_RC_CPL="", STAGE_SEMANTIC_ID="S")])
    deal = crm.get_deal("1")
    assert deal.refusal_reason is None and deal.cpl is None and deal.refusal_comment == ""
    assert deal.stage_semantics == "success"


def test_missing_deal_is_not_found(crm: Bitrix24Crm, fake: FakeBitrix24):
    with pytest.raises(errors.NotFound):
        crm.get_deal("404")


def test_update_encodes_reason_codes_to_enum_ids(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.results["crm.deal.update"] = True
    crm.update_deal(
        "42",
        DealChange(stage_id="C3:NEW", refusal_reason="too_expensive", refusal_comment="Price", qa_verdict="confirmed"),
    )
    assert fake.calls[0][:2] == (
        "crm.deal.update",
        {
            "id": "42",
            "fields": {
                "STAGE_ID": "C3:NEW",
                "UF_CRM_RC_REASON": "3157",
                "UF_CRM_RC_COMMENT": "Price",
                "UF_CRM_RC_VERDICT": "41",
            },
        },
    )


def test_unknown_reason_code_is_refused_before_any_request(crm: Bitrix24Crm, fake: FakeBitrix24):
    with pytest.raises(errors.CrmError, match="not installed"):
        crm.update_deal("42", DealChange(refusal_reason="bogus"))
    assert fake.calls == []


def test_pipeline_move_and_fields_go_in_one_batch(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.results["crm.item.update"] = {"item": {"id": 42}}
    fake.results["crm.deal.update"] = True
    crm.update_deal("42", DealChange(pipeline_id="5", stage_id="C5:NEW", responsible_id="9"))
    assert fake.methods() == ["batch"]
    cmd = fake.calls[0][1]["cmd"]
    assert cmd["move"].startswith("crm.item.update?")
    assert "fields%5BcategoryId%5D=5" in cmd["move"] and "fields%5BstageId%5D=C5%3ANEW" in cmd["move"]
    assert "ASSIGNED_BY_ID%5D=9" in cmd["update"] and "STAGE_ID" not in cmd["update"]


def test_get_deals_packs_lists_into_one_batch(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.add_deals([deal_row(i) for i in range(1, 131)])
    deals = crm.get_deals([str(i) for i in range(1, 121)] + ["9999"])
    assert sorted(int(i) for i in deals) == list(range(1, 121))
    assert fake.methods() == ["batch"]


def test_iter_deals_filters_by_modification(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.add_deals(
        [deal_row(i, DATE_MODIFY="2025-01-09T10:00:00+03:00") for i in range(1, 60)]
        + [deal_row(i, DATE_MODIFY="2025-02-01T12:00:00+03:00") for i in range(60, 80)]
    )
    since = datetime(2025, 1, 20, tzinfo=timezone(timedelta(hours=3)))
    ids = [deal.id for deal in crm.iter_deals(modified_since=since)]
    assert ids == [str(i) for i in range(60, 80)]
    assert fake.calls[0][1]["filter"][">=DATE_MODIFY"] == "2025-01-20T00:00:00+03:00"


def test_pipelines_with_stage_semantics(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.results["crm.category.list"] = {
        "categories": [
            {"id": 0, "name": "General", "sort": 100, "entityTypeId": 2, "isDefault": "Y"},
            {"id": 3, "name": "Wholesale", "sort": 200, "entityTypeId": 2, "isDefault": "N"},
        ]
    }

    def statuses(params):
        entity = params["filter"]["ENTITY_ID"]
        prefix = "" if entity == "DEAL_STAGE" else "C3:"
        return [
            {
                "ID": "1",
                "ENTITY_ID": entity,
                "STATUS_ID": f"{prefix}NEW",
                "NAME": "New",
                "SORT": "10",
                "SEMANTICS": None,
            },
            {
                "ID": "3",
                "ENTITY_ID": entity,
                "STATUS_ID": f"{prefix}LOSE",
                "NAME": "Lost",
                "SORT": "70",
                "SEMANTICS": "F",
            },
            {
                "ID": "2",
                "ENTITY_ID": entity,
                "STATUS_ID": f"{prefix}WON",
                "NAME": "Won",
                "SORT": "60",
                "SEMANTICS": "S",
            },
        ]

    fake.results["crm.status.list"] = statuses
    pipelines = crm.list_pipelines()
    assert fake.methods() == ["crm.category.list", "batch"]
    assert [p.id for p in pipelines] == ["0", "3"] and pipelines[0].is_default and not pipelines[1].is_default
    assert [(s.id, s.semantics) for s in pipelines[1].stages] == [
        ("C3:NEW", "process"),
        ("C3:WON", "success"),
        ("C3:LOSE", "failure"),
    ]


def test_tasks_are_created_and_listed_with_the_deal_binding(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.results["tasks.task.add"] = {"task": {"id": "901", "title": "Call back"}}
    fake.results["tasks.task.list"] = {
        "tasks": [
            {
                "id": "901",
                "title": "Call back",
                "responsibleId": "7",
                "createdBy": "1",
                "status": "2",
                "deadline": "2025-12-31T23:59:59+03:00",
                "auditors": ["3"],
                "ufCrmTask": ["D_42"],
            },
            {"id": "902", "title": "Done", "responsibleId": "7", "status": "5", "deadline": None, "auditors": []},
        ]
    }
    deadline = datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=3)))
    assert crm.create_task(NewTask(title="Call back", responsible_id="7", deal_id="42", deadline=deadline)) == "901"
    fields = fake.calls[0][1]["fields"]
    assert fields["UF_CRM_TASK"] == ["D_42"] and fields["DEADLINE"] == "2025-12-31T23:59:59+03:00"
    tasks = crm.list_deal_tasks("42")
    params = fake.calls[1][1]
    assert params["filter"]["UF_CRM_TASK"] == "D_42" and "UF_CRM_TASK" in params["select"]
    assert [(t.id, t.is_open) for t in tasks] == [("901", True), ("902", False)]
    assert tasks[0].deadline == deadline and tasks[0].auditor_ids == ("3",)


def test_calls_join_activities_and_recordings(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.results["crm.activity.list"] = [
        {
            "ID": "77",
            "DIRECTION": "1",
            "RESPONSIBLE_ID": "7",
            "START_TIME": "2025-01-09T10:00:00+03:00",
            "END_TIME": "2025-01-09T10:02:00+03:00",
            "FILES": [{"id": 555, "url": "https://portal/file/555"}],
            "COMMUNICATIONS": [{"TYPE": "PHONE", "VALUE": "+79990001122"}],
        },
        {
            "ID": "78",
            "DIRECTION": "2",
            "RESPONSIBLE_ID": "8",
            "START_TIME": "2025-01-10T10:00:00+03:00",
            "END_TIME": "2025-01-10T10:00:30+03:00",
            "FILES": [],
            "COMMUNICATIONS": [],
        },
    ]

    def stats(params):
        if params["FILTER"]["CRM_ACTIVITY_ID"] == "77":
            return {
                "result": [
                    {
                        "CALL_ID": "x",
                        "CALL_DURATION": "118",
                        "CALL_TYPE": "2",
                        "PORTAL_USER_ID": "7",
                        "CALL_RECORD_URL": "https://rec/77.mp3",
                        "RECORD_FILE_ID": "555",
                        "PHONE_NUMBER": "+79990001122",
                        "CALL_START_DATE": "2025-01-09T10:00:01+03:00",
                    }
                ],
                "total": 1,
            }
        return {"result": [], "total": 0}

    fake.results["voximplant.statistic.get"] = stats
    calls = crm.list_deal_calls("42")
    assert fake.methods() == ["crm.activity.list", "batch"]
    first, second = calls
    assert (first.direction, first.duration_seconds, first.recording_url, first.recording_file_id) == (
        "in",
        118,
        "https://rec/77.mp3",
        "555",
    )
    assert first.started_at.tzinfo is not None and first.phone == "+79990001122"
    assert (second.direction, second.duration_seconds, second.recording_url) == ("out", 30, None)


def test_users_departments_and_notify(crm: Bitrix24Crm, fake: FakeBitrix24):
    fake.results["user.get"] = {
        "result": [{"ID": "7", "NAME": "Ivan", "LAST_NAME": "Petrov", "ACTIVE": True, "UF_DEPARTMENT": [1, 5]}],
        "total": 1,
    }
    fake.results["department.get"] = {
        "result": [{"ID": "5", "NAME": "Sales", "PARENT": "1", "UF_HEAD": "9"}],
        "total": 1,
    }
    fake.results["im.notify.system.add"] = 12345
    users = crm.list_users()
    assert users[0].name == "Ivan Petrov" and users[0].department_ids == ("1", "5") and users[0].active
    departments = crm.list_departments()
    assert (departments[0].head_id, departments[0].parent_id) == ("9", "1")
    crm.notify("7", "Deal [URL=/crm/deal/details/42/]42[/URL] went back")
    assert fake.calls[-1][:2] == (
        "im.notify.system.add",
        {"USER_ID": "7", "MESSAGE": "Deal [URL=/crm/deal/details/42/]42[/URL] went back"},
    )


def test_factory_refuses_unknown_crm(app: Flask):
    from app.crm.amocrm import AmoCrm
    from tests.helpers import make_portal

    assert isinstance(client_for(make_portal("acc-1", crm=Portal.AMOCRM, domain="acc.amocrm.ru")), AmoCrm)
    with pytest.raises(ValueError, match="no CRM adapter"):
        client_for(make_portal("acc-2", crm="pipedrive"))
