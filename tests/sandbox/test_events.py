"""Outgoing events: bodies, tokens, funnel moves, drops, install/uninstall, offline queue, robots."""

from __future__ import annotations

import qs_codec
from flask import Flask, request

from sandbox import Sandbox, flask_client_transport

from .conftest import DOMAIN, Recorder, call

HANDLER = "https://app.example.test/b24/events"


def _bind(sandbox: Sandbox, token: str, event: str, handler: str = HANDLER, **extra: object) -> None:
    status, body = call(sandbox, token, "event.bind", {"event": event, "handler": handler, **extra})
    assert (status, body.get("result")) == (200, True), body


def test_rest_write_fires_update_with_documented_body(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    _bind(sandbox, token, "ONCRMDEALUPDATE")
    manager = sandbox.issue_tokens(portal, 3)
    assert call(sandbox, manager["access_token"], "crm.deal.update", {"id": 5, "fields": {"TITLE": "x"}})[0] == 200
    assert recorder.posts == []  # nothing is delivered while the request is being answered
    deliveries = sandbox.deliver(recorder)
    assert [d.delivered for d in deliveries] == [True]
    url, body = recorder.posts[0]
    assert url == HANDLER
    assert body.startswith("event=ONCRMDEALUPDATE&event_handler_id=201&data%5BFIELDS%5D%5BID%5D=5&ts=")
    decoded = qs_codec.decode(body)
    auth = decoded["auth"]
    assert list(auth) == [
        "access_token", "expires", "expires_in", "scope", "domain", "server_endpoint", "status",
        "client_endpoint", "member_id", "user_id", "application_token",
    ]  # fmt: skip
    assert auth["domain"] == DOMAIN
    assert auth["client_endpoint"] == f"https://{DOMAIN}/rest/"
    assert auth["server_endpoint"] == "https://oauth.bitrix.info/rest/"
    assert auth["member_id"] == portal.member_id
    assert auth["application_token"] == portal.application_token
    assert auth["user_id"] == "3" and auth["expires_in"] == "3600" and auth["status"] == "L"
    # the token in the event works for calls back
    assert call(sandbox, auth["access_token"], "user.current")[1]["result"]["ID"] == "3"


def test_automation_changes_send_no_tokens(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    _bind(sandbox, token, "ONCRMDEALUPDATE")
    sandbox.act_as_automation(portal).move_deal(6, "PREPARATION")
    sandbox.deliver(recorder)
    auth = recorder.decoded()[0]["auth"]
    assert set(auth) == {"domain", "client_endpoint", "server_endpoint", "member_id", "application_token"}
    deal = sandbox.deal(portal, 6)
    assert deal["STAGE_ID"] == "PREPARATION" and deal["MOVED_BY_ID"] == deal["ASSIGNED_BY_ID"]


def test_funnel_change_fires_move_to_category_not_update(sandbox: Sandbox, portal, token, recorder) -> None:
    _bind(sandbox, token, "ONCRMDEALUPDATE")
    _bind(sandbox, token, "ONCRMDEALMOVETOCATEGORY")
    sandbox.act(portal, 2).move_deal(1, "C2:PREPARATION")
    sandbox.deliver(recorder)
    events = recorder.decoded()
    assert [e["event"] for e in events] == ["ONCRMDEALMOVETOCATEGORY"]
    assert events[0]["data"]["FIELDS"] == {"ID": "1", "CATEGORY_ID": "2", "STAGE_ID": "C2:PREPARATION"}
    _, history = call(sandbox, token, "crm.stagehistory.list", {"entityTypeId": 2, "filter": {"OWNER_ID": 1}})
    assert history["result"]["items"][-1]["TYPE_ID"] == 5
    call(sandbox, token, "crm.item.update", {"entityTypeId": 2, "id": 1, "fields": {"categoryId": 0}})
    call(sandbox, token, "crm.deal.update", {"id": 1, "fields": {"STAGE_ID": "EXECUTING"}})
    sandbox.deliver(recorder)
    assert [e["event"] for e in recorder.decoded()[1:]] == ["ONCRMDEALMOVETOCATEGORY", "ONCRMDEALUPDATE"]


def test_dropped_events_are_never_delivered(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    _bind(sandbox, token, "ONCRMDEALADD")
    sandbox.drop_next(1)
    first = sandbox.act(portal, 2).create_deal(TITLE="lost")
    second = sandbox.act(portal, 2).create_deal(TITLE="kept")
    deliveries = sandbox.deliver(recorder)
    assert [d.status for d in deliveries] == [None, 200]
    assert [e["data"]["FIELDS"]["ID"] for e in recorder.decoded()] == [str(second)]
    assert sandbox.deliver(recorder) == []  # no retries
    assert str(first) not in {e["data"]["FIELDS"]["ID"] for e in recorder.decoded()}


def test_drop_rate_and_failing_handler(sandbox: Sandbox, portal, token) -> None:
    _bind(sandbox, token, "ONCRMDEALUPDATE")
    sandbox.drop_rate = 1.0
    sandbox.act(portal, 2).update_deal(2, {"TITLE": "a"})
    assert [d.status for d in sandbox.deliver(Recorder())] == [None]
    sandbox.drop_rate = 0.0
    sandbox.act(portal, 2).update_deal(2, {"TITLE": "b"})
    failing = Recorder(status=500)
    assert [d.delivered for d in sandbox.deliver(failing)] == [False]
    assert sandbox.pending_events() == []


def test_events_reach_a_flask_app(sandbox: Sandbox, portal, token) -> None:
    received: list[dict] = []
    app = Flask("receiver")

    @app.post("/b24/events")
    def events() -> str:
        received.append(qs_codec.decode(request.get_data(as_text=True)))
        return "ok"

    _bind(sandbox, token, "ONCRMDEALUPDATE")
    sandbox.act(portal, 4).move_deal(
        3, sandbox.portal(portal).stages(sandbox.portal(portal).deals[3].category_id)[1]["STATUS_ID"]
    )
    sandbox.deliver(flask_client_transport(app.test_client()))
    assert received[0]["event"] == "ONCRMDEALUPDATE" and received[0]["auth"]["user_id"] == "4"


def test_not_installed_means_no_events(sandbox: Sandbox, portal, token, recorder) -> None:
    _bind(sandbox, token, "ONCRMDEALUPDATE")
    portal.installed = False
    sandbox.act(portal, 2).update_deal(2, {"TITLE": "x"})
    assert sandbox.deliver(recorder) == []


def test_event_bind_rules(sandbox: Sandbox, portal, token) -> None:
    manager = sandbox.issue_tokens(portal, 3)["access_token"]
    status, body = call(sandbox, manager, "event.bind", {"event": "ONCRMDEALUPDATE", "handler": HANDLER})
    assert (status, body["error"]) == (403, "ACCESS_DENIED")
    status, body = call(sandbox, token, "event.bind", {"event": "ONSOMETHINGELSE", "handler": HANDLER})
    assert (status, body["error"]) == (400, "ERROR_EVENT_NOT_FOUND")
    _bind(sandbox, token, "onCrmDealUpdate")
    _, listed = call(sandbox, token, "event.get")
    assert listed["result"] == [{"event": "ONCRMDEALUPDATE", "handler": HANDLER, "auth_type": "0", "offline": 0}]
    _, unbound = call(sandbox, token, "event.unbind", {"event": "ONCRMDEALUPDATE", "handler": HANDLER})
    assert unbound["result"] == {"count": 1}


def test_install_and_uninstall(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    _bind(sandbox, token, "ONAPPUNINSTALL")
    auth = sandbox.install_app(portal, install_url="https://app.example.test/b24/install")
    sandbox.deliver(recorder)
    install = recorder.decoded()[0]
    assert install["event"] == "ONAPPINSTALL"
    assert install["auth"]["refresh_token"] == auth["refresh_token"]
    assert install["auth"]["application_token"] == portal.application_token
    assert install["data"]["VERSION"] == "1"
    sandbox.uninstall_app(portal)
    sandbox.deliver(recorder)
    uninstall = recorder.decoded()[1]
    assert uninstall["event"] == "ONAPPUNINSTALL" and uninstall["data"]["CLEAN"] == "1"
    assert "access_token" not in uninstall["auth"] and "application_token" in uninstall["auth"]
    assert call(sandbox, token, "crm.deal.get", {"id": 1})[1]["error"] == "invalid_token"
    assert sandbox.event_bindings(portal) == []


def test_offline_events_keep_last_state_per_object(sandbox: Sandbox, portal, token) -> None:
    status, _ = call(sandbox, token, "event.bind", {"event": "ONCRMDEALUPDATE", "event_type": "offline"})
    assert status == 200
    actor = sandbox.act(portal, 2)
    actor.update_deal(7, {"TITLE": "one"})
    actor.update_deal(7, {"TITLE": "two"})
    actor.update_deal(8, {"TITLE": "three"})
    call(sandbox, token, "crm.deal.update", {"id": 9, "fields": {"TITLE": "own"}, "auth_connector": "x"})
    _, listed = call(sandbox, token, "event.offline.list")
    assert sorted(e["EVENT_DATA"]["FIELDS"]["ID"] for e in listed["result"]) == [7, 8, 9]
    _, got = call(sandbox, token, "event.offline.get", {"clear": 0})
    assert len(got["result"]["events"]) == 3 and got["result"]["process_id"]
    _, again = call(sandbox, token, "event.offline.get")
    assert again["result"]["events"] == []  # reserved under the process id
    call(sandbox, token, "event.offline.clear", {"process_id": got["result"]["process_id"]})
    assert call(sandbox, token, "event.offline.list")[1]["result"] == []


def test_offline_auth_connector_skips_own_writes(sandbox: Sandbox, portal, token) -> None:
    call(sandbox, token, "event.bind", {"event": "ONCRMDEALUPDATE", "event_type": "offline", "auth_connector": "rc"})
    call(sandbox, token, "crm.deal.update", {"id": 9, "fields": {"TITLE": "own"}, "auth_connector": "rc"})
    sandbox.act(portal, 2).update_deal(8, {"TITLE": "theirs"})
    _, got = call(sandbox, token, "event.offline.get")
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in got["result"]["events"]] == [8]


def test_robots(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    robot = {
        "CODE": "check_tasks",
        "HANDLER": "https://app.example.test/b24/robots/check_tasks",
        "NAME": {"ru": "Проверить задачи"},
        "USE_SUBSCRIPTION": "Y",
        "PROPERTIES": {"days": {"Name": "Дней", "Type": "int"}},
        "RETURN_PROPERTIES": {"ok": {"Name": "OK", "Type": "bool"}},
    }
    assert call(sandbox, token, "bizproc.robot.add", robot)[0] == 200
    status, body = call(sandbox, token, "bizproc.robot.add", robot)
    assert (status, body["error"]) == (400, "ERROR_ACTIVITY_ALREADY_INSTALLED")
    assert call(sandbox, token, "bizproc.robot.list")[1]["result"] == ["check_tasks"]
    event_token = sandbox.run_robot(portal, "check_tasks", 3, {"days": "2"})
    sandbox.deliver(recorder)
    post = recorder.decoded()[0]
    assert post["document_id"] == ["crm", "CCrmDocumentDeal", "DEAL_3"]
    assert post["event_token"] == event_token and post["properties"] == {"days": "2"}
    assert "refresh_token" in post["auth"]
    ok = call(sandbox, token, "bizproc.event.send", {"event_token": event_token, "return_values": {"ok": "Y"}})
    assert ok[1]["result"] is True
    assert sandbox.robot_result(portal, event_token) == {"ok": "Y"}
    status, body = call(sandbox, token, "bizproc.event.send", {"event_token": "bogus|x|y"})
    assert (status, body["error"]) == (403, "ACCESS_DENIED")


def test_placements(sandbox: Sandbox, portal, token) -> None:
    params = {"PLACEMENT": "CRM_DEAL_DETAIL_TAB", "HANDLER": "https://app.example.test/b24/placement/deal-tab",
              "TITLE": "Контроль отказов"}  # fmt: skip
    assert call(sandbox, token, "placement.bind", params)[0] == 200
    assert call(sandbox, token, "placement.bind", params)[1]["error"] == "ERROR_PLACEMENT_HANDLER_EXISTS"
    bad = {**params, "PLACEMENT": "NOPE"}
    assert call(sandbox, token, "placement.bind", bad)[1]["error"] == "ERROR_PLACEMENT_NOT_FOUND"
    portal.reject_local_handlers = True
    local = {**params, "HANDLER": "http://localhost:5000/x"}
    assert call(sandbox, token, "placement.bind", local)[1]["error"] == "ERROR_WRONG_HANDLER_URL"
    _, got = call(sandbox, token, "placement.get")
    assert got["result"][0]["placement"] == "CRM_DEAL_DETAIL_TAB"
    _, gone = call(sandbox, token, "placement.unbind", {"PLACEMENT": "CRM_DEAL_DETAIL_TAB"})
    assert gone["result"] == {"count": 1}


def test_out_of_order_delivery(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    _bind(sandbox, token, "ONCRMDEALUPDATE")
    sandbox.out_of_order = True
    for deal_id in range(1, 21):
        sandbox.act(portal, 2).update_deal(deal_id, {"TITLE": f"t{deal_id}"})
    sandbox.deliver(recorder)
    ids = [int(e["data"]["FIELDS"]["ID"]) for e in recorder.decoded()]
    assert sorted(ids) == list(range(1, 21)) and ids != list(range(1, 21))


def test_background_delivery_thread(sandbox: Sandbox, portal, token, recorder: Recorder) -> None:
    import time

    _bind(sandbox, token, "ONCRMDEALUPDATE")
    sandbox.start_delivery_thread(interval=0.01, transport=recorder)
    try:
        sandbox.act(portal, 2).update_deal(1, {"TITLE": "bg"})
        deadline = time.monotonic() + 5
        while not recorder.posts and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sandbox.stop_delivery_thread()
    assert len(recorder.posts) == 1
