"""The admin's status tab: the install's health as sentences in the page's language; nobody else sees it."""

from __future__ import annotations

from flask import Flask

from app.core.db import db
from app.core.models import InboxItem
from tests.security.conftest import ADMIN, MANAGER, headers, installed_portal


def test_the_admin_sees_the_install_events_and_what_is_missing(app: Flask):
    portal = installed_portal(settings={"guard": {"heads": ["9"]}})
    db.session.add(
        InboxItem(portal_id=portal.id, source="b24", kind="event", dedupe_key="k1", body="{}", status="failed")
    )
    db.session.commit()
    client = app.test_client()
    body = client.get("/api/status", headers={**headers(portal, ADMIN, admin=True), "X-RC-Lang": "ru"}).get_json()
    items = {item["key"]: item for item in body["items"]}
    assert items["install"] == {
        "key": "install", "label": "Установка", "value": "Приложение установлено и работает.", "ok": True,
    }  # fmt: skip
    assert items["events"]["value"].startswith("последнее получено ")
    assert items["backlog"]["value"] == "ждут обработки: 0, не обработаны из-за ошибки: 1"
    assert items["backlog"]["ok"] is False
    assert items["qa"]["ok"] is False and "не назначены" in items["qa"]["value"]
    assert items["heads"] == {"key": "heads", "label": "Руководители продаж", "value": "назначены", "ok": True}
    assert body["healthy"] is False

    english = client.get("/api/status", headers={**headers(portal, ADMIN, admin=True), "X-RC-Lang": "en"}).get_json()
    assert english["items"][0]["value"] == "The app is installed and working."

    refused = client.get("/api/status", headers={**headers(portal, MANAGER), "X-RC-Lang": "ru"})
    assert refused.status_code == 403 and refused.get_json()["code"] == "admin_only"
