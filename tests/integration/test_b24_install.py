"""Installing into a Bitrix24 portal (the sandbox), through the real handlers and a real worker."""

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import InboxItem, Portal
from app.domain.robots import REGISTRY, Robot, RobotProperty
from tests.integration.b24 import APP_URL, B24

CREATE_METHODS = (
    "crm.status.add",
    "crm.deal.userfield.add",
    "event.bind",
    "placement.bind",
    "bizproc.robot.add",
)


@pytest.fixture(autouse=True)
def one_robot(monkeypatch: pytest.MonkeyPatch) -> Robot:
    robot = Robot(
        code="rc_test_check",
        name_ru="Проверка",
        name_en="Check",
        description_ru="Тестовый робот",
        description_en="Test robot",
        handler=answer,
        properties={"days": RobotProperty("Дней", "Days", "int", required=True)},
        return_properties={"ok": RobotProperty("Готово", "Done", "bool")},
    )
    monkeypatch.setitem(REGISTRY, robot.code, robot)
    return robot


def answer(invocation) -> dict:
    return {"ok": "Y" if invocation.deal_id else "N"}


def _refusal_stages(b24: B24) -> dict[int, list[dict]]:
    by_pipeline = {}
    for pipeline_id in (0, 1, 2):
        entity = "DEAL_STAGE" if pipeline_id == 0 else f"DEAL_STAGE_{pipeline_id}"
        status, body = b24.sandbox.call(b24.portal, "crm.status.list", {"filter": {"ENTITY_ID": entity}})
        assert status == 200
        by_pipeline[pipeline_id] = body["result"]
    return by_pipeline


def test_install_adds_one_stage_per_pipeline_fields_bindings_and_robots(b24: B24):
    portal = b24.install()
    assert portal.status == "installed", portal.status_detail
    for pipeline_id, statuses in _refusal_stages(b24).items():
        ours = [s for s in statuses if s["STATUS_ID"].endswith("RC_REFUSAL")]
        assert len(ours) == 1, pipeline_id
        stage = ours[0]
        assert stage["NAME"] == "Условный отказ"
        assert stage["SEMANTICS"] in (None, "", "P")
        ordered = sorted(statuses, key=lambda s: int(s["SORT"]))
        position = ordered.index(stage)
        assert all(s["SEMANTICS"] not in ("S", "F") for s in ordered[:position]), "before the final stages"
        after = ordered[position + 1 :]  # «Отложено» (our other stage), then the final stages
        assert after[0]["STATUS_ID"].endswith("RC_POSTPONED") and after[0]["NAME"] == "Отложено"
        assert all(s["SEMANTICS"] in ("S", "F") for s in after[1:]), "right before the final stages"
    fields = {f["FIELD_NAME"]: f for f in b24.sandbox.call(b24.portal, "crm.deal.userfield.list", {})[1]["result"]}
    for name in ("UF_CRM_RC_REASON", "UF_CRM_RC_COMMENT", "UF_CRM_RC_VERDICT", "UF_CRM_RC_CPL"):
        assert name in fields
    assert fields["UF_CRM_RC_POSTPONE_DATE"]["USER_TYPE_ID"] == "date"
    assert [item["VALUE"] for item in fields["UF_CRM_RC_POSTPONE_REASON"]["LIST"]] == [
        "Нет денег сейчас", "Нет потребности сейчас", "Неактуально", "Нет связи",
    ]  # fmt: skip
    assert {item["XML_ID"] for item in fields["UF_CRM_RC_REASON"]["LIST"]} >= {"price", "other", "bought_elsewhere"}
    bound = {(b.event, b.handler) for b in b24.sandbox.event_bindings(b24.portal) if not b.offline}
    for event in ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY", "ONCRMDEALDELETE", "ONAPPUNINSTALL"):
        assert (event, f"{APP_URL}/b24/events") in bound
    placements = b24.sandbox.placements(b24.portal)
    assert [(p.placement, p.handler) for p in placements] == [
        ("CRM_DEAL_DETAIL_TAB", f"{APP_URL}/b24/placement/deal-tab")
    ]
    robots = b24.sandbox.robots(b24.portal)
    assert set(robots) == set(REGISTRY) and "rc_test_check" in robots  # every registered robot, ours included
    assert robots["rc_test_check"].handler == f"{APP_URL}/b24/robots/rc_test_check"
    settings = portal.settings
    assert settings["refusal_stages"] == {"0": "RC_REFUSAL", "1": "C1:RC_REFUSAL", "2": "C2:RC_REFUSAL"}
    assert set(settings["b24_fields"]["refusal_reason"]["enum"]) >= {"price", "other"}
    assert portal.application_token == b24.portal.application_token


def test_second_install_creates_nothing(b24: B24):
    b24.install()
    before = {method: b24.sandbox.rest_calls(b24.portal, method) for method in CREATE_METHODS}
    b24.open_install_page()
    b24.work()
    after = {method: b24.sandbox.rest_calls(b24.portal, method) for method in CREATE_METHODS}
    assert after == before
    assert b24.our_portal().status == "installed"
    assert b24.sandbox.rest_calls(b24.portal, "bizproc.robot.update") >= 1  # robots are kept current


def test_uninstall_keeps_history_then_reinstall_works(b24: B24):
    b24.install()
    b24.sandbox.uninstall_app(b24.portal, clean=False)
    b24.deliver()
    b24.work()
    portal = b24.our_portal()
    assert portal.status == "uninstalled"
    assert portal.access_token is None and portal.refresh_token is None and portal.application_token is None
    assert portal.installed_at is None
    uninstalled_at = portal.uninstalled_at
    assert db.session.scalar(sa.select(sa.func.count()).select_from(InboxItem)) >= 1
    reinstalled = b24.install()
    assert reinstalled.status == "installed"
    assert reinstalled.installed_at is not None and reinstalled.installed_at > uninstalled_at
    assert reinstalled.id == portal.id
    assert reinstalled.application_token == b24.portal.application_token


def test_uninstall_with_clean_removes_the_portals_data(b24: B24):
    portal = b24.install()
    b24.sandbox.uninstall_app(b24.portal, clean=True)
    b24.deliver()
    b24.work()
    remaining = db.session.scalars(sa.select(InboxItem).where(InboxItem.portal_id == portal.id)).all()
    assert [row.kind for row in remaining] == ["ONAPPUNINSTALL"]
    assert b24.our_portal().settings == {}


def test_robot_call_runs_the_handler_and_answers_the_workflow(b24: B24):
    b24.install()
    deal_id = 1
    token = b24.sandbox.run_robot(b24.portal, "rc_test_check", deal_id, {"days": "3"})
    b24.deliver()
    b24.work()
    assert b24.sandbox.robot_result(b24.portal, token) == {"ok": "Y"}


def test_forged_install_event_is_refused(b24: B24):
    """ONAPPINSTALL for a known portal with the wrong application token changes nothing."""
    portal = b24.install()
    token_before = portal.application_token
    from urllib.parse import urlencode

    body = urlencode(
        {
            "event": "ONAPPINSTALL",
            "auth[member_id]": b24.member_id,
            "auth[application_token]": "forged",
            "auth[refresh_token]": "attacker-refresh",
        }
    )
    response = b24.client.post("/b24/events", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401
    portal = b24.our_portal()
    assert portal.application_token == token_before
    assert portal.refresh_token != "attacker-refresh"


def test_portal_answering_invalid_token_is_flagged_and_left_alone(b24: B24):
    b24.install()
    b24.sandbox.revoke(b24.portal)
    before = b24.sandbox.rest_calls(b24.portal)
    portal = db.session.scalar(sa.select(Portal).where(Portal.external_id == b24.member_id))
    from app.crm.bitrix24 import Bitrix24Rest
    from app.crm.errors import PortalNeedsReinstall

    with pytest.raises(PortalNeedsReinstall):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})
    with pytest.raises(PortalNeedsReinstall):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})
    assert b24.sandbox.rest_calls(b24.portal) - before <= 1
    assert b24.our_portal().status == "needs_reinstall"


def test_app_update_rebinds_what_the_update_dropped(b24: B24):
    from urllib.parse import urlencode

    b24.install()
    with b24.sandbox.lock:
        b24.portal.bindings.clear()  # Bitrix24 drops an app's bindings when it is updated
    body = urlencode(
        {
            "event": "ONAPPUPDATE",
            "data[VERSION]": "2",
            "data[PREVIOUS_VERSION]": "1",
            "ts": "1764070000",
            "auth[member_id]": b24.member_id,
            "auth[application_token]": b24.portal.application_token,
        }
    )
    response = b24.client.post("/b24/events", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    b24.work()
    b24.work()
    events = {b.event for b in b24.sandbox.event_bindings(b24.portal) if not b.offline}
    assert {"ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY", "ONCRMDEALDELETE", "ONAPPUNINSTALL"} <= events


def test_main_page_opens_for_an_admin_with_settings_and_for_a_manager_without(b24: B24):
    b24.install()
    admin = b24.client.post(f"/b24/app?DOMAIN={b24.portal.domain}&LANG=ru", data=b24.frame(1))
    assert admin.status_code == 200
    page = admin.get_data(as_text=True)
    assert "Приложение установлено и работает." in page and 'data-tab="settings"' in page
    assert admin.headers["Content-Security-Policy"] == f"frame-ancestors https://{b24.portal.domain}"
    manager = b24.client.post(f"/b24/app?DOMAIN={b24.portal.domain}&LANG=ru", data=b24.frame(2))
    assert manager.status_code == 200
    assert 'data-tab="settings"' not in manager.get_data(as_text=True)


def test_main_page_tells_the_admin_to_reinstall_when_access_is_lost(b24: B24):
    portal = b24.install()
    portal.status = "needs_reinstall"
    db.session.commit()
    page = b24.client.post("/b24/app", data=b24.frame(1)).get_data(as_text=True)
    assert "Переустановите приложение" in page


def test_an_enterprise_portal_gets_the_enterprise_rate_limit(b24: B24):
    from app.crm.ratelimit import bucket_for

    b24.portal.license = "ru_ent250"
    portal = b24.install()
    assert portal.settings["b24_license"] == "ru_ent250"
    bucket = bucket_for(portal.settings)
    assert (bucket.rate, bucket.burst) == (5.0, 250)


def test_a_repair_does_not_hide_a_lost_move_waiting_in_the_queue(b24: B24):
    """A repair (ONAPPUPDATE, the admin's button) keeps the install time: moves before it stay guarded."""
    import time

    from installers.bitrix24 import run_install
    from tests.integration.b24 import configure_guard, new_deal

    installed_at = b24.install().installed_at
    configure_guard(b24.our_portal())
    deal_id = new_deal(b24, manager=2, stage="EXECUTING")
    b24.sandbox.act(b24.portal, 2).move_deal(deal_id, "LOSE")
    b24.deliver()  # stored and queued, not yet processed
    time.sleep(1.1)  # CRM times have whole seconds
    assert run_install(b24.our_portal().id) == "installed"
    assert b24.our_portal().installed_at == installed_at
    b24.settle()
    assert b24.stage(deal_id) == "EXECUTING"


def test_a_repair_binds_deal_deletions_on_a_portal_installed_before_them(b24: B24):
    """Portals installed before issue #19 have no ONCRMDEALDELETE binding: the idempotent repair adds it."""
    from installers.bitrix24 import run_install

    portal = b24.install()
    bindings = b24.portal.bindings
    for key in [key for key, binding in bindings.items() if binding.event == "ONCRMDEALDELETE"]:
        del bindings[key]
    assert run_install(portal.id) == "installed"
    online = {(b.event, b.handler) for b in b24.sandbox.event_bindings(b24.portal) if not b.offline}
    assert ("ONCRMDEALDELETE", f"{APP_URL}/b24/events") in online
