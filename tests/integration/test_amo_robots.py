"""The automation robots on amoCRM, run by our Digital Pipeline widget action: an admin puts the action on
a status; when a lead enters it amoCRM POSTs the action's settings to the manifest's `dp.webhook_url`; we
verify the account's secret, run the robot and note its outcome on the lead."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.core import inbox
from app.core.db import db
from app.core.models import AuditEntry, ExchangeLot, InboxItem
from app.crm.amocrm.adapter import NOTICE_MARK
from app.domain import exchange
from installers.amo_widget import render_manifest
from sandbox.amocrm import DigitalPipelineAction
from sandbox.clock import ManualClock
from tests.integration.amo import APP_URL, MANAGER, Amo, new_lead
from tests.integration.b24 import configure_guard

ADMIN = 1
POOL = 12  # «Биржа лидов», the amoCRM user that holds pool leads
LOST = 143
FORM = "application/x-www-form-urlencoded"
DP_URL = json.loads(render_manifest(APP_URL))["dp"]["webhook_url"]
DP_PATH = DP_URL.removeprefix(APP_URL)


def add_pool_user(amo: Amo) -> None:
    template = amo.account.users[MANAGER]
    amo.account.users[POOL] = {**template, "id": POOL, "name": "Биржа лидов", "rights": {**template["rights"]}}


@pytest.fixture
def account(amo: Amo) -> Amo:
    add_pool_user(amo)
    amo.install()
    return amo


def widget_dp(amo: Amo, user_id: int = ADMIN):
    """What the widget's `callbacks.dpSettings` asks our backend when the action form opens."""
    token = amo.sandbox.widget_token(amo.account, user_id, APP_URL)
    return amo.client.post(
        "/amocrm/widget/dp", headers={"X-Auth-Token": token, "Origin": f"https://{amo.account.domain}"}, json={}
    )


def add_action(amo: Amo, status: str, robot: str, **params: str) -> DigitalPipelineAction:
    """The admin adds our widget as an action on a status of the main pipeline and picks a robot."""
    secret = widget_dp(amo).get_json()["secret"]
    settings = {"robot": robot, "reason": "", "days": "", "hour": "", "text": "", "secret": secret, **params}
    return amo.sandbox.add_dp_action(amo.account, amo.statuses()[status], settings, url=DP_URL)


def notes(amo: Amo, lead_id: int) -> list[str]:
    """The common notes on a lead, oldest first."""
    return [
        note["params"]["text"]
        for note in sorted(amo.account.notes.values(), key=lambda n: n["id"])
        if note["entity_id"] == lead_id and note["note_type"] == "common"
    ]


def inbox_count() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem))


def responsible(amo: Amo, lead_id: int) -> int:
    return amo.sandbox.lead(amo.account, lead_id)["responsible_user_id"]


def post(amo: Amo, body: str):
    return amo.client.post(DP_PATH, data=body, content_type=FORM)


# ---------------------------------------------------------------- the widget's form


def test_the_widget_gets_the_account_secret_and_the_robots_for_an_admin_only(account: Amo):
    answer = widget_dp(account)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == f"https://{account.account.domain}"
    body = answer.get_json()
    assert body["secret"] == account.our_portal().settings["amo_dp_secret"] and len(body["secret"]) >= 32
    assert {robot["code"]: robot["name"] for robot in body["robots"]} == {
        "rc_put_on_exchange": "Выставить на биржу лидов",
        "rc_check_tasks": "Проверить задачи",
        "rc_callback": "Перезвонить через N дней",
    }
    manager = widget_dp(account, MANAGER)
    assert manager.status_code == 403 and manager.get_json()["message"]
    replay = account.client.post("/amocrm/widget/dp", headers={"X-Auth-Token": "not.a.jwt"})
    assert replay.status_code == 401


# ---------------------------------------------------------------- the robots


def test_put_on_exchange_through_the_digital_pipeline(account: Amo):
    amo = account
    main = str(amo.account.main_pipeline())
    exchange.update_exchange_settings(amo.our_portal(), {"pipelines": {main: {"pool_user": str(POOL)}}})
    db.session.commit()
    add_action(amo, "Принимают решение", "rc_put_on_exchange", reason="Клиент не отвечает")
    lead_id = new_lead(amo, status="Переговоры")
    assert responsible(amo, lead_id) == MANAGER
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()["Принимают решение"])
    amo.settle()
    assert responsible(amo, lead_id) == POOL
    lot = db.session.scalar(sa.select(ExchangeLot).where(ExchangeLot.deal_id == str(lead_id)))
    assert lot is not None and lot.status == ExchangeLot.OPEN
    assert notes(amo, lead_id) == ["Контроль отказов: Выставить на биржу лидов — сделка выставлена на биржу"]
    audit = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.attempted == "put on exchange")).all()
    assert [(row.actor, row.reason) for row in audit] == [("automation", "Клиент не отвечает")]


def test_put_on_exchange_without_a_pool_user_says_why_in_the_note(account: Amo):
    amo = account
    add_action(amo, "Принимают решение", "rc_put_on_exchange")
    lead_id = new_lead(amo, status="Переговоры")
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()["Принимают решение"])
    amo.settle()
    assert responsible(amo, lead_id) == MANAGER
    [note] = notes(amo, lead_id)
    assert note.startswith("Контроль отказов: Выставить на биржу лидов — не выполнено:") and "«Биржа лидов»" in note


def test_callback_in_n_days_creates_a_call_task_for_the_responsible(account: Amo):
    amo = account
    add_action(amo, "Принимают решение", "rc_callback", days="3", hour="15", text="Уточнить решение")
    lead_id = new_lead(amo, status="Переговоры")
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()["Принимают решение"])
    amo.settle()
    moscow = ZoneInfo("Europe/Moscow")
    due = datetime.combine(datetime.now(moscow).date() + timedelta(days=3), time(15), tzinfo=moscow)
    [task] = amo.sandbox.tasks_for(amo.account, lead_id=lead_id)
    assert (task["responsible_user_id"], task["task_type_id"]) == (MANAGER, 1)
    assert task["complete_till"] == int(due.timestamp())
    assert task["text"].startswith("Уточнить решение") and not task["is_completed"]
    [note] = notes(amo, lead_id)
    assert note.startswith("Контроль отказов: Перезвонить через N дней — задача на звонок ответственному на ")
    assert "15:00" in note


def test_callback_with_days_out_of_range_notes_the_error_and_creates_no_task(account: Amo):
    amo = account
    add_action(amo, "Принимают решение", "rc_callback", days="400")
    lead_id = new_lead(amo, status="Переговоры")
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()["Принимают решение"])
    amo.settle()
    assert amo.sandbox.tasks_for(amo.account, lead_id=lead_id) == []
    [note] = notes(amo, lead_id)
    assert "не выполнено: days must be a whole number from 1 to 365" in note


def test_check_tasks_writes_a_note_with_the_count(account: Amo):
    amo = account
    lead_id = new_lead(amo, status="Переговоры")
    now = int(amo.sandbox.clock.now())
    for task_id, due in ((90001, now - 86400), (90002, now + 86400)):
        amo.account.tasks[task_id] = {
            "id": task_id,
            "created_by": MANAGER,
            "updated_by": MANAGER,
            "created_at": now - 2 * 86400,
            "updated_at": now - 2 * 86400,
            "responsible_user_id": MANAGER,
            "group_id": 0,
            "entity_id": lead_id,
            "entity_type": "leads",
            "duration": 0,
            "is_completed": False,
            "task_type_id": 1,
            "text": "Позвонить",
            "result": [],
            "complete_till": due,
        }
    add_action(amo, "Принимают решение", "rc_check_tasks")
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()["Принимают решение"])
    amo.settle()
    assert notes(amo, lead_id) == ["Контроль отказов: Проверить задачи — открытая задача: есть, просроченных задач: 1"]


def test_the_apps_own_move_into_the_status_fires_the_action_too(account: Amo):
    """The guard sends a lead closed without a reason back to its status: amoCRM runs that status's actions."""
    amo = account
    amo.sandbox.clock = ManualClock()
    configure_guard(amo.our_portal())
    add_action(amo, "Переговоры", "rc_callback", days="1", hour="10")
    lead_id = new_lead(amo, status="Первичный контакт")
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()["Переговоры"])
    amo.settle()
    assert len(notes(amo, lead_id)) == 1
    amo.sandbox.clock.advance(60)  # the action's event time is part of its dedupe key
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, LOST)
    amo.settle()
    assert amo.status(lead_id) == amo.statuses()["Переговоры"]
    robot_notes = [text for text in notes(amo, lead_id) if text.startswith("Контроль отказов: ")]
    assert len(robot_notes) == 2
    assert any("нельзя закрыть" in text for text in notes(amo, lead_id)), "and the guard's notice on the lead"
    callbacks = [
        t
        for t in amo.sandbox.tasks_for(amo.account, lead_id=lead_id)
        if t["responsible_user_id"] == MANAGER and not t["text"].endswith(NOTICE_MARK)
    ]
    assert len(callbacks) == 2


# ---------------------------------------------------------------- the edge


def pending_dp_body(amo: Amo, lead_id: int, status: str) -> str:
    """Move the lead into the status and take the action's POST out of the outbox (leaving the rest)."""
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, amo.statuses()[status])
    [hook] = [h for h in amo.sandbox.pending_hooks() if h.url == DP_URL]
    amo.sandbox.outbox.remove(hook)
    return hook.body


def test_the_action_body_has_the_documented_shape(account: Amo):
    amo = account
    action = add_action(amo, "Принимают решение", "rc_check_tasks")
    lead_id = new_lead(amo, status="Переговоры")
    fields = dict(parse_qsl(pending_dp_body(amo, lead_id, "Принимают решение")))
    assert fields["event[data][id]"] == str(lead_id)
    assert fields["event[data][element_type]"] == "2"
    assert (fields["event[type]"], fields["event[type_code]"]) == ("14", "lead_status_changed")
    assert fields["event[data][status_id]"] == str(action.status_id)
    assert fields["event[data][pipeline_id]"] == str(amo.account.main_pipeline())
    assert fields["event[time]"].isdigit()
    assert fields["action[settings][widget][settings][robot]"] == "rc_check_tasks"
    assert (fields["account_id"], fields["subdomain"]) == (str(amo.account.id), amo.account.subdomain)


def test_a_wrong_secret_is_401_and_stores_nothing(account: Amo):
    amo = account
    action = add_action(amo, "Принимают решение", "rc_callback", days="2")
    lead_id = new_lead(amo, status="Переговоры")
    rows = inbox_count()
    for secret in ("not-the-secret", ""):
        forged = DigitalPipelineAction(action.id, action.pipeline_id, action.status_id, DP_URL, {**action.settings})
        forged.settings["secret"] = secret
        response = post(amo, amo.sandbox.dp_body(amo.account, forged, lead_id))
        assert response.status_code == 401 and response.get_json()["message"]
    without = {key: value for key, value in action.settings.items() if key != "secret"}
    bare = DigitalPipelineAction(action.id, action.pipeline_id, action.status_id, DP_URL, without)
    assert post(amo, amo.sandbox.dp_body(amo.account, bare, lead_id)).status_code == 401
    other = amo.sandbox.dp_body(amo.account, action, lead_id).replace(f"account_id={amo.account.id}", "account_id=42")
    unknown = post(amo, other)
    assert unknown.status_code == 404 and unknown.get_json()["message"]
    assert inbox_count() == rows
    amo.work()
    assert notes(amo, lead_id) == [] and amo.sandbox.tasks_for(amo.account, lead_id=lead_id) == []


def test_a_duplicate_body_and_a_retried_job_write_one_note(account: Amo):
    amo = account
    main = str(amo.account.main_pipeline())
    exchange.update_exchange_settings(amo.our_portal(), {"pipelines": {main: {"pool_user": str(POOL)}}})
    db.session.commit()
    add_action(amo, "Принимают решение", "rc_put_on_exchange")
    lead_id = new_lead(amo, status="Переговоры")
    body = pending_dp_body(amo, lead_id, "Принимают решение")
    first, second = post(amo, body), post(amo, body)
    assert first.get_json() == {"ok": True, "duplicate": False}
    assert second.status_code == 200 and second.get_json() == {"ok": True, "duplicate": True}
    amo.settle()
    assert len(notes(amo, lead_id)) == 1
    [item] = db.session.scalars(sa.select(InboxItem).where(InboxItem.kind == "dp_robot")).all()
    item.status = InboxItem.PENDING
    db.session.commit()
    assert inbox.process(item.id) == "done"
    amo.settle()
    assert notes(amo, lead_id) == ["Контроль отказов: Выставить на биржу лидов — сделка выставлена на биржу"]


def test_a_customer_is_acknowledged_and_ignored(account: Amo):
    amo = account
    action = add_action(amo, "Принимают решение", "rc_callback")
    rows = inbox_count()
    response = post(amo, amo.sandbox.dp_body(amo.account, action, 777, element_type=12))
    assert response.status_code == 200 and response.get_json()["ignored"]
    assert inbox_count() == rows


def test_malformed_bodies_get_a_clear_400(account: Amo):
    amo = account
    action = add_action(amo, "Принимают решение", "rc_callback")
    lead_id = new_lead(amo, status="Переговоры")
    valid = amo.sandbox.dp_body(amo.account, action, lead_id)
    rows = inbox_count()
    bodies = [
        "",
        "account_id=abc",
        valid.replace(f"%5Bid%5D={lead_id}", "%5Bid%5D=x"),
        valid.replace("event%5Btime%5D=", "event%5Btim%5D="),
        valid + "&action%5Bsettings%5D%5Bwidget%5D%5Bsettings%5D%5Bdays%5D%5Bx%5D=1",
        valid + "&note=%00",
        json.dumps({"account_id": amo.account.id}),
    ]
    for body in bodies:
        response = post(amo, body)
        assert response.status_code == 400 and response.get_json()["message"], body
    unknown_robot = valid.replace("rc_callback", "rc_nothing")
    response = post(amo, unknown_robot)
    assert response.status_code == 400 and "rc_nothing" in response.get_json()["message"]
    assert inbox_count() == rows
