"""Guard settings: the admin page's API and the `flask settings` CLI."""

import json

import sqlalchemy as sa

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import AuditEntry
from app.core.security import Identity, issue_token
from app.domain.settings import guard_settings
from tests.integration.b24 import B24


def headers(portal_id: int, user_id: str = "1", admin: bool = True) -> dict[str, str]:
    return {"X-RC-Token": issue_token(Identity(portal_id=portal_id, user_id=user_id, is_admin=admin))}


def test_admin_sees_settings_with_people_and_pipelines_to_pick(installed: B24):
    portal = installed.our_portal()
    response = installed.client.get("/api/settings", headers=headers(portal.id))
    assert response.status_code == 200
    body = response.get_json()
    assert body["settings"]["guarded_pipelines"] == "all"
    assert body["settings"]["review_sla_hours"] == 24
    names = {user["id"]: user["name"] for user in body["users"]}
    assert names.get("7")
    assert {d["name"] for d in body["departments"]} >= {"Отдел контроля качества"}
    assert [p["id"] for p in body["pipelines"]] == ["0", "1", "2"]


def test_admin_saves_settings_and_the_guard_uses_them(installed: B24):
    portal = installed.our_portal()
    payload = {"qa_users": ["7"], "heads": ["9"], "guarded_pipelines": ["1"], "review_sla_hours": 48}
    response = installed.client.put("/api/settings", json=payload, headers=headers(portal.id))
    assert response.status_code == 200
    saved = guard_settings(installed.our_portal())
    assert saved.qa_users == ("7",) and saved.guarded_pipelines == ("1",) and saved.review_sla_hours == 48
    assert not saved.guards("0")


def test_bad_settings_get_a_clear_message_per_field(installed: B24):
    portal = installed.our_portal()
    response = installed.client.put(
        "/api/settings",
        json={"review_sla_hours": 0, "guarded_pipelines": "some", "colour": "red", "reasons": ["price"]},
        headers=headers(portal.id),
    )
    assert response.status_code == 400
    fields = response.get_json()["fields"]
    # "reasons" is no guard setting any more: the company's reasons have their own editor (/api/reasons).
    assert set(fields) == {"review_sla_hours", "guarded_pipelines", "colour", "reasons"}
    assert "all" in fields["guarded_pipelines"][0]
    assert guard_settings(installed.our_portal()).review_sla_hours == 24


def test_a_manager_cannot_read_or_change_settings(installed: B24):
    portal = installed.our_portal()
    manager = headers(portal.id, user_id="2", admin=False)
    assert installed.client.get("/api/settings", headers=manager).status_code == 403
    assert installed.client.put("/api/settings", json={"heads": ["2"]}, headers=manager).status_code == 403
    assert guard_settings(installed.our_portal()).heads == ()


def test_no_token_is_401_and_a_vanished_portal_is_404(installed: B24):
    assert installed.client.get("/api/settings").status_code == 401
    assert installed.client.get("/api/settings", headers=headers(9999)).status_code == 404


def test_cli_shows_and_sets_settings(installed: B24):
    portal = installed.our_portal()
    runner = installed.app.test_cli_runner()
    result = runner.invoke(settings_cli, ["set", portal.external_id, 'qa_users=["7","8"]', "review_sla_hours=12"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert guard_settings(installed.our_portal()).review_sla_hours == 12
    shown = runner.invoke(settings_cli, ["show", str(portal.id)])
    assert json.loads(shown.output)["qa_users"] == ["7", "8"]
    bad = runner.invoke(settings_cli, ["set", portal.external_id, "review_sla_hours=lots"])
    assert bad.exit_code != 0 and "not valid JSON" in bad.output
    unknown = runner.invoke(settings_cli, ["show", "no-such-portal"])
    assert unknown.exit_code != 0 and "no portal" in unknown.output


def test_cli_set_audits_each_changed_setting_as_cli_with_old_and_new_value(installed: B24):
    portal = installed.our_portal()
    runner = installed.app.test_cli_runner()
    result = runner.invoke(settings_cli, ["set", portal.external_id, "review_sla_hours=12", 'qa_users=["7"]'])
    assert result.exit_code == 0, result.output
    rows = db.session.scalars(
        sa.select(AuditEntry).where(AuditEntry.portal_id == portal.id, AuditEntry.attempted == "change settings")
    ).all()
    by_setting = {row.details["setting"]: row for row in rows}
    assert set(by_setting) == {"guard.review_sla_hours", "guard.qa_users"}
    assert all(row.actor == "cli" and row.outcome == "saved" for row in rows)
    assert by_setting["guard.review_sla_hours"].details["changed"] == {"guard.review_sla_hours": {"from": 24, "to": 12}}
    assert by_setting["guard.qa_users"].details["changed"]["guard.qa_users"]["to"] == ["7"]

    again = runner.invoke(settings_cli, ["set", portal.external_id, "review_sla_hours=12"])
    assert again.exit_code == 0, again.output
    last = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert last is not None and last.actor == "cli" and last.outcome == "saved, nothing changed"

    refused = runner.invoke(settings_cli, ["set", portal.external_id, "review_sla_hours=-5"])
    assert refused.exit_code != 0
    db.session.rollback()
    assert (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.portal_id == portal.id, AuditEntry.actor == "cli")
        )
        == 3
    )
