"""The sandbox kanban's JSON API: the board, moves as people and automation, the card editor, bad input."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from sandbox import Portal, Sandbox, create_sandbox_app


@pytest.fixture
def kanban(sandbox: Sandbox) -> FlaskClient:
    return create_sandbox_app(sandbox).test_client()


@pytest.fixture
def with_fields(sandbox: Sandbox, portal: Portal) -> Portal:
    """The app's refusal fields, created the way the installer does."""
    for name, kind, extra in (
        ("RC_REASON", "enumeration", {"LIST": [{"VALUE": "Дорого", "XML_ID": "price"}, {"VALUE": "Другое"}]}),
        ("RC_COMMENT", "string", {}),
    ):
        fields = {"FIELD_NAME": name, "USER_TYPE_ID": kind, "EDIT_FORM_LABEL": {"ru": name, "en": name}, **extra}
        status, body = sandbox.call(portal, "crm.deal.userfield.add", {"fields": fields})
        assert status == 200, body
    return portal


def open_deal(portal: Portal, manager: int = 2) -> int:
    return next(d.id for d in portal.deals.values() if d.category_id == 0 and d.assigned_by_id == manager)


def test_page_and_assets_are_served(kanban: FlaskClient, portal: Portal):
    page = kanban.get("/sandbox")
    assert page.status_code == 200 and "Условный отказ" in page.get_data(as_text=True)
    assert 'lang="en"' in kanban.get("/sandbox/?lang=en").get_data(as_text=True)
    assert kanban.get("/sandbox/static/kanban.js").status_code == 200
    assert kanban.get("/sandbox/static/kanban.css").status_code == 200


def test_board_lists_pipelines_stages_deals_people(kanban: FlaskClient, portal: Portal):
    board = kanban.get("/sandbox/api/board?pipeline=1&user=7").get_json()
    assert [p["id"] for p in board["pipelines"]] == ["0", "1", "2"]
    assert board["stages"][0]["id"] == "C1:NEW"
    assert board["deals"] and all(d["stage_id"].startswith("C1:") for d in board["deals"])
    assert {"id": "7", "name": "Наталья Морозова", "position": "Руководитель ОКК"} in board["users"]
    assert "10" not in [u["id"] for u in board["users"]], "fired people are not offered"
    assert board["user"] == "7" and board["fields"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pipeline=9", "unknown pipeline '9'"),
        ("user=10", "unknown user '10'"),
        ("user=abc", "unknown user 'abc'"),
        ("portal=nowhere", "no sandbox portal 'nowhere'"),
    ],
)
def test_board_refuses_bad_input(kanban: FlaskClient, portal: Portal, query: str, message: str):
    answer = kanban.get(f"/sandbox/api/board?{query}")
    assert answer.status_code == 400 and message in answer.get_json()["message"]


def test_a_move_is_made_by_the_acting_user(kanban: FlaskClient, sandbox: Sandbox, portal: Portal):
    deal_id = open_deal(portal)
    answer = kanban.post("/sandbox/api/move", json={"user": "3", "deal_id": str(deal_id), "stage_id": "LOSE"})
    assert answer.status_code == 200 and answer.get_json()["stage_id"] == "LOSE"
    deal = sandbox.deal(portal, deal_id)
    assert deal["STAGE_ID"] == "LOSE" and deal["MOVED_BY_ID"] == "3"


def test_automation_moves_carry_no_tokens(kanban: FlaskClient, sandbox: Sandbox, portal: Portal):
    sandbox.call(portal, "event.bind", {"event": "ONCRMDEALUPDATE", "handler": "https://app.test/b24/events"})
    deal_id = open_deal(portal)
    kanban.post("/sandbox/api/move", json={"user": "automation", "deal_id": deal_id, "stage_id": "WON"})
    [event] = sandbox.pending_events()
    assert "access_token" not in event.body and f"%5BID%5D={deal_id}" in event.body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user": "2", "deal_id": "999", "stage_id": "LOSE"}, "no deal '999'"),
        ({"user": "2", "deal_id": "1", "stage_id": "NOPE"}, "unknown stage 'NOPE'"),
        ({"user": "", "deal_id": "1", "stage_id": "LOSE"}, "unknown user ''"),
        ({"user": "2", "deal_id": "1", "stage_id": "C1:LOSE"}, ""),
    ],
)
def test_moves_refuse_bad_input(kanban: FlaskClient, portal: Portal, body: dict, message: str):
    answer = kanban.post("/sandbox/api/move", json=body)
    if not message:  # another funnel's stage is a funnel change, like dragging across pipelines
        assert answer.status_code == 200 and portal.deals[1].category_id == 1
        return
    assert answer.status_code == 400 and message in answer.get_json()["message"]
    assert kanban.post("/sandbox/api/move", data="not json").get_json()["message"] == "send a JSON object"


def test_the_card_editor_saves_user_fields(kanban: FlaskClient, sandbox: Sandbox, with_fields: Portal):
    deal_id = open_deal(with_fields)
    board = kanban.get("/sandbox/api/board").get_json()
    reason = next(f for f in board["fields"] if f["name"] == "UF_CRM_RC_REASON")
    assert [item["value"] for item in reason["items"]] == ["Дорого", "Другое"]
    price = reason["items"][0]["id"]
    answer = kanban.post(
        "/sandbox/api/deal",
        json={"user": "2", "deal_id": deal_id, "fields": {"UF_CRM_RC_REASON": price, "UF_CRM_RC_COMMENT": "Дорого"}},
    )
    assert answer.status_code == 200
    assert answer.get_json()["deal"]["fields"] == {"UF_CRM_RC_REASON": price, "UF_CRM_RC_COMMENT": "Дорого"}
    assert sandbox.deal(with_fields, deal_id)["MODIFY_BY_ID"] == "2"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"UF_CRM_NOPE": "1"}, "unknown field 'UF_CRM_NOPE'"),
        ({"UF_CRM_RC_REASON": "123456"}, "'123456' is not one of its values"),
        ({}, "fields: give an object"),
        ("text", "fields: give an object"),
    ],
)
def test_the_card_editor_refuses_bad_input(kanban: FlaskClient, with_fields: Portal, fields, message: str):
    answer = kanban.post("/sandbox/api/deal", json={"user": "2", "deal_id": open_deal(with_fields), "fields": fields})
    assert answer.status_code == 400 and message in answer.get_json()["message"]


def test_notifications_are_the_acting_users_and_automation_sees_all(
    kanban: FlaskClient, sandbox: Sandbox, portal: Portal
):
    for user in ("2", "3"):
        sandbox.call(
            portal,
            "im.notify.system.add",
            {"USER_ID": user, "MESSAGE": f"for {user} https://{portal.domain}/crm/deal/details/5/"},
        )
    mine = kanban.get("/sandbox/api/board?user=2").get_json()["notifications"]
    assert [(n["user_id"], n["message"], n["deal_id"]) for n in mine] == [("2", "for 2", "5")]
    everyone = kanban.get("/sandbox/api/board?user=automation").get_json()["notifications"]
    assert [n["user_id"] for n in everyone] == ["3", "2"]


def test_a_new_incoming_deal_lands_in_the_first_stage_and_fires_the_add_event(
    kanban: FlaskClient, sandbox: Sandbox, portal: Portal
):
    answer = kanban.post("/sandbox/api/new-deal", json={"user": "3", "pipeline": "0"})
    assert answer.status_code == 200, answer.get_json()
    deal = sandbox.deal(portal, int(answer.get_json()["deal_id"]))
    assert deal["STAGE_ID"] == portal.stages(0)[0]["STATUS_ID"]
    assert deal["SOURCE_ID"] == "WEB" and deal["ASSIGNED_BY_ID"] == "3"
    assert deal["TITLE"].startswith("Входящая заявка с сайта")
    robot = kanban.post("/sandbox/api/new-deal", json={"user": "automation", "pipeline": "0"})
    assert sandbox.deal(portal, int(robot.get_json()["deal_id"]))["ASSIGNED_BY_ID"] == str(sandbox.admin_id(portal))


def test_an_app_frame_is_signed_for_the_chosen_person_and_never_for_a_robot(
    kanban: FlaskClient, sandbox: Sandbox, portal: Portal
):
    portal.app_url = "https://app.example.test"
    answer = kanban.post("/sandbox/api/frame", json={"user": "7", "placement": "DEFAULT"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["url"] == "https://app.example.test/b24/app"
    assert sandbox.access_tokens[body["fields"]["AUTH_ID"]].user_id == 7
    assert body["fields"]["member_id"] == portal.member_id and body["fields"]["PLACEMENT"] == "DEFAULT"
    robot = kanban.post("/sandbox/api/frame", json={"user": "automation"})
    assert robot.status_code == 400 and "robot" in robot.get_json()["message"]
    no_tab = kanban.post("/sandbox/api/frame", json={"user": "7", "placement": "CRM_DEAL_DETAIL_TAB", "deal_id": "1"})
    assert no_tab.status_code == 400  # the app placed no tab in this portal's deal card
    library = kanban.get("/sandbox/api/v1/")
    assert library.status_code == 200 and "getInitData" in library.get_data(as_text=True)


def test_a_deal_address_on_the_portal_opens_the_kanban_on_that_deal(kanban: FlaskClient, portal: Portal):
    answer = kanban.get("/crm/deal/details/12/?IFRAME=Y&IFRAME_TYPE=SIDE_SLIDER")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/sandbox/?deal=12")
    assert kanban.get("/crm/deal/details/abc/").status_code == 404
