"""JSON endpoints behind the pages in the CRM iframe; identity comes from the signed X-RC-Token header."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app.core import i18n
from app.core.db import db
from app.core.models import InboxItem, Portal
from app.core.timezones import zone_name
from app.core.validation import error_fields, json_body
from app.crm.errors import CrmError
from app.crm.factory import client_for
from app.domain import audit, directory
from app.domain.settings import GuardSettings, as_dict, guard_settings, update_guard_settings
from app.web.permissions import ADMIN, require_role

bp = Blueprint("api", __name__, url_prefix="/api")
T = TypeVar("T")


def _directory(portal: Portal) -> dict[str, Any]:
    crm = client_for(portal)
    return {
        "users": [
            {"id": u.id, "name": u.name, "active": u.active, "departments": list(u.department_ids)}
            for u in directory.users(portal.id, crm)
        ],
        "departments": [{"id": d.id, "name": d.name} for d in crm.list_departments()],
        "pipelines": [{"id": p.id, "name": p.name} for p in directory.pipelines(portal.id, crm)],
    }


@bp.get("/status")
def get_status() -> ResponseReturnValue:
    """The install's health for the admin's status tab: the install, the events, the people the guard needs."""
    access = require_role(ADMIN, forbidden="only a portal administrator can see the settings")
    portal, language = access.portal, access.language
    t = lambda key, **values: i18n.translate(key, language).format(**values)  # noqa: E731
    counts = dict(
        db.session.execute(
            sa.select(InboxItem.status, sa.func.count())
            .where(InboxItem.portal_id == portal.id)
            .group_by(InboxItem.status)
        ).all()
    )
    last_event = db.session.scalar(
        sa.select(sa.func.max(InboxItem.received_at)).where(InboxItem.portal_id == portal.id)
    )
    backlog = int(counts.get(InboxItem.PENDING, 0)) + int(counts.get(InboxItem.QUEUED, 0))
    failed = int(counts.get(InboxItem.FAILED, 0))
    settings = guard_settings(portal)
    installed = portal.status == "installed"
    state_key = portal.status if portal.status in ("installed", "installing", "uninstalled") else "install_failed"
    install_text = t(f"status_{state_key}") + (" " + t("health_install_retry") if state_key == "install_failed" else "")
    if portal.status == "needs_reinstall":
        install_text = t("needs_reinstall")
    guarded = settings.guarded_pipelines
    items = [
        {"key": "install", "label": t("health_install"), "value": install_text, "ok": installed},
        {
            "key": "events",
            "label": t("health_events"),
            "value": t("health_last_event", when=i18n.when(last_event, language, zone_name(portal)))
            if last_event
            else t("health_no_events"),
            "ok": last_event is not None,
        },
        {
            "key": "backlog",
            "label": t("health_backlog"),
            "value": t("health_backlog_value", waiting=backlog, failed=failed),
            "ok": failed == 0,
        },
        {
            "key": "qa",
            "label": t("health_qa"),
            "value": t("health_yes") if settings.qa_users or settings.qa_departments else t("health_qa_missing"),
            "ok": bool(settings.qa_users or settings.qa_departments),
        },
        {
            "key": "heads",
            "label": t("health_heads"),
            "value": t("health_yes") if settings.heads or settings.head_departments else t("health_heads_missing"),
            "ok": bool(settings.heads or settings.head_departments),
        },
        {
            "key": "pipelines",
            "label": t("health_pipelines"),
            "value": t("settings_all_pipelines")
            if guarded == "all"
            else t("health_pipelines_count", count=len(guarded)),
            "ok": guarded == "all" or len(guarded) > 0,
        },
    ]
    return jsonify(status=portal.status, healthy=all(item["ok"] for item in items), items=items)


@bp.get("/settings")
def get_settings() -> ResponseReturnValue:
    """The guard settings and the portal's people and pipelines to pick from (admins only)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the settings").portal
    try:
        choices = _directory(portal)
    except CrmError as error:
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    return jsonify(settings=as_dict(guard_settings(portal)), **choices)


def _changed_keys(changes: dict[str, Any], _stored: Any) -> Mapping[str, Any]:
    return {"details_keys": sorted(changes)}


def settings_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What a save changed in a portal's settings: {"section.key": {"from": old, "to": new}} for every value
    that differs (a section that is not a mapping is compared whole)."""
    changed: dict[str, dict[str, Any]] = {}
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section), after.get(section)
        if old == new:
            continue
        if isinstance(old, Mapping) or isinstance(new, Mapping):
            old_map = old if isinstance(old, Mapping) else {}
            new_map = new if isinstance(new, Mapping) else {}
            for key in sorted(set(old_map) | set(new_map)):
                if old_map.get(key) != new_map.get(key):
                    changed[f"{section}.{key}"] = {"from": old_map.get(key), "to": new_map.get(key)}
        else:
            changed[section] = {"from": old, "to": new}
    return changed


def save_settings(
    store: Callable[[Portal, dict[str, Any]], T],
    view: Callable[[Portal, T], Any],
    *,
    forbidden: str,
    invalid: str,
    audit_action: str,
    audit_details: Callable[[dict[str, Any], T], Mapping[str, Any]] = _changed_keys,
) -> ResponseReturnValue:
    """The PUT of a JSON settings endpoint: admins only (403 `forbidden`), a JSON object or 400, `store` it
    (a marshmallow ValidationError is a 400 `invalid` naming each wrong field), audit, commit, answer
    `{"settings": view(portal, stored)}` (`view` runs after the commit).

    The audit row names the admin who saved (`actor`), the section (`attempted` = `audit_action`) and what
    changed (`details["changed"]`: each setting's old and new value, roles such as QA staff, heads and
    exempt users included), plus `audit_details`.

    `store` may also end the request with `abort(response)`, e.g. when the CRM it asks does not answer.
    """
    access = require_role(ADMIN, forbidden=forbidden)
    identity, portal = access.identity, access.portal
    changes = json_body()
    if not isinstance(changes, dict):
        return jsonify(error="bad_request", message="expected a JSON object"), 400
    before = copy.deepcopy(dict(portal.settings or {}))
    try:
        stored = store(portal, changes)
    except ValidationError as error:
        return jsonify(error="bad_request", message=invalid, fields=error_fields(error)), 400
    changed = settings_diff(before, dict(portal.settings or {}))
    details = {**audit_details(changes, stored), "changed": changed}
    audit.record(portal.id, identity.user_id, audit_action, "saved" if changed else "saved, nothing changed", **details)
    db.session.commit()
    return jsonify(settings=view(portal, stored))


@bp.put("/settings")
def put_settings() -> ResponseReturnValue:
    """Validate and store guard settings (admins only); 400 names each wrong field."""

    def view(portal: Portal, settings: GuardSettings) -> dict[str, Any]:
        directory.forget(portal.id)
        return as_dict(settings)

    return save_settings(
        update_guard_settings,
        view,
        forbidden="only a portal administrator can change the settings",
        invalid="invalid settings",
        audit_action="change settings",
    )
