"""Bitrix24 installer: one call for install and repair. It lists before it creates, so a rerun creates nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.core.db import Base, db
from app.core.models import InboxItem, Portal
from app.crm.bitrix24 import Bitrix24Rest
from app.crm.bitrix24.adapter import Bitrix24Crm
from app.crm.errors import ActivityAlreadyInstalled, CrmError, PortalNeedsReinstall
from app.domain import audit, postpone, reasons, timezones
from app.domain.catalog import (
    ABC_ANSWERS,
    ABC_CLASSES,
    DEAL_TAB,
    FIELD_LABELS,
    POSTPONE_REASONS,
    VERDICTS,
    Label,
)
from app.domain.robots import REGISTRY, Robot, RobotProperty
from app.domain.stages import known_stage, refusal_stage_spec, stages_lock
from installers.steps import install, set_setting

log = logging.getLogger(__name__)

DEAL_EVENTS = ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY", "ONCRMDEALDELETE")
APP_EVENTS = ("ONAPPUNINSTALL", "ONAPPUPDATE")
PLACEMENT = "CRM_DEAL_DETAIL_TAB"
# Our user fields, FIELD_NAME without the UF_CRM_ prefix Bitrix24 adds.
FIELDS: dict[str, dict[str, Any]] = {
    "refusal_reason": {"name": "RC_REASON", "type": "enumeration", "options": None},  # the portal's own reasons
    "refusal_comment": {"name": "RC_COMMENT", "type": "string", "settings": {"ROWS": 4}},
    "qa_verdict": {"name": "RC_VERDICT", "type": "enumeration", "options": VERDICTS},
    "cpl": {"name": "RC_CPL", "type": "double", "settings": {"PRECISION": 2}},
    "postpone_reason": {"name": "RC_POSTPONE_REASON", "type": "enumeration", "options": POSTPONE_REASONS},
    "postpone_date": {"name": "RC_POSTPONE_DATE", "type": "date"},
    "abc_need": {"name": "RC_ABC_NEED", "type": "enumeration", "options": ABC_ANSWERS},
    "abc_budget": {"name": "RC_ABC_BUDGET", "type": "enumeration", "options": ABC_ANSWERS},
    "abc_urgency": {"name": "RC_ABC_URGENCY", "type": "enumeration", "options": ABC_ANSWERS},
    "abc_class": {"name": "RC_ABC_CLASS", "type": "enumeration", "options": ABC_CLASSES},
}
STEPS = ("stages", "postpone", "fields", "events", "placement", "robots")


def handler_url(path: str) -> str:
    """An absolute URL of ours that the portal calls."""
    return f"{current_app.config['PUBLIC_URL']}{path}"


def _as_list(value: Any) -> list[Any]:
    """Bitrix24 returns `[]` for empty maps and sometimes a dict keyed by index for lists."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return []


def ensure_stages(rest: Bitrix24Rest, portal: Portal) -> str:
    """One Conditional refusal stage per deal pipeline, in-progress, right before the final stages (the
    adapter's `ensure_stage`, the same call the app makes for a pipeline created after install)."""
    categories = _as_list((rest.call("crm.category.list", {"entityTypeId": 2}) or {}).get("categories"))
    pipeline_ids = sorted({str(c["id"]) for c in categories} | {"0"}, key=int)
    crm = Bitrix24Crm(portal, rest)
    spec = refusal_stage_spec(portal.language)
    with stages_lock(portal.id):
        found = {pipeline_id: crm.ensure_stage(pipeline_id, spec) for pipeline_id in pipeline_ids}
    created = sum(1 for pipeline_id, stage in found.items() if known_stage(portal, pipeline_id) != stage)
    set_setting(portal, "refusal_stages", found)
    return f"{len(found)} pipelines, {created} new to the app"


def _enum_list(options: dict[str, Label], language: str) -> list[dict[str, Any]]:
    return [
        {"VALUE": label.in_language(language), "SORT": (index + 1) * 10, "XML_ID": code, "DEF": "N"}
        for index, (code, label) in enumerate(options.items())
    ]


def ensure_fields(rest: Bitrix24Rest, portal: Portal) -> str:
    """Our deal fields (refusal, QA verdict, CPL, ABC qualification); enumeration items are matched by XML_ID
    (our reason codes) and completed."""
    mapping: dict[str, dict[str, Any]] = {}
    created = 0
    for key, spec in FIELDS.items():
        full_name = f"UF_CRM_{spec['name']}"
        found = _as_list(rest.call("crm.deal.userfield.list", {"filter": {"FIELD_NAME": full_name}}))
        label = FIELD_LABELS[key]
        if not found:
            fields: dict[str, Any] = {
                "FIELD_NAME": spec["name"],
                "USER_TYPE_ID": spec["type"],
                "XML_ID": f"RC_{key.upper()}",
                "EDIT_FORM_LABEL": {"ru": label.ru, "en": label.en},
                "LIST_COLUMN_LABEL": {"ru": label.ru, "en": label.en},
                "LIST_FILTER_LABEL": {"ru": label.ru, "en": label.en},
                "SHOW_FILTER": "Y",
                "SETTINGS": spec.get("settings", {}),
            }
            if spec["type"] == "enumeration" and spec["options"] is None:
                fields["LIST"] = [
                    {"VALUE": option.name, "SORT": option.sort, "XML_ID": option.code, "DEF": "N"}
                    for option in reasons.initial_options(portal)
                ]
                fields["SETTINGS"] = {"DISPLAY": "LIST"}
            elif spec["type"] == "enumeration":
                fields["LIST"] = _enum_list(spec["options"], portal.language)
                fields["SETTINGS"] = {"DISPLAY": "LIST"}
            rest.call("crm.deal.userfield.add", {"fields": fields})
            created += 1
            found = _as_list(rest.call("crm.deal.userfield.list", {"filter": {"FIELD_NAME": full_name}}))
        if not found:
            raise CrmError(f"{full_name} was not created", code="FIELD_NOT_CREATED")
        field = found[0]
        entry: dict[str, Any] = {"field": full_name}
        if spec["type"] == "enumeration" and spec["options"] is not None:
            entry["enum"] = _sync_enum(rest, field, spec["options"], portal.language)
        mapping[key] = entry
    set_setting(portal, "b24_fields", mapping)
    # The reasons both ways: items an admin added in the CRM become reasons, the app's reasons become items.
    reasons.sync(portal, Bitrix24Crm(portal, rest))
    mapping["refusal_reason"]["enum"] = reasons.item_ids(portal.id)
    set_setting(portal, "b24_fields", mapping)
    return f"{len(mapping)} fields, {created} created"


def _sync_enum(rest: Bitrix24Rest, field: dict[str, Any], options: dict[str, Label], language: str) -> dict[str, str]:
    """Add missing enumeration items; return {code: item id}."""
    items = _as_list(field.get("LIST"))
    by_code = {str(item.get("XML_ID")): str(item.get("ID")) for item in items if item.get("XML_ID")}
    missing = [code for code in options if code not in by_code]
    if missing:
        keep = [{"ID": item["ID"]} for item in items]
        add = [item for item in _enum_list(options, language) if item["XML_ID"] in missing]
        rest.call("crm.deal.userfield.update", {"id": field["ID"], "fields": {"LIST": keep + add}})
        refreshed = _as_list(rest.call("crm.deal.userfield.list", {"filter": {"FIELD_NAME": field["FIELD_NAME"]}}))
        items = _as_list(refreshed[0].get("LIST")) if refreshed else []
        by_code = {str(item.get("XML_ID")): str(item.get("ID")) for item in items if item.get("XML_ID")}
    return {code: by_code[code] for code in options if code in by_code}


def ensure_events(rest: Bitrix24Rest, portal: Portal) -> str:
    """Online bindings to /b24/events, and offline ones where the portal allows them."""
    handler = handler_url("/b24/events")
    bound = _as_list(rest.call("event.get"))
    online = {(str(b.get("event", "")).upper(), b.get("handler")) for b in bound if not _is_offline(b)}
    offline = {str(b.get("event", "")).upper() for b in bound if _is_offline(b)}
    created = 0
    for event in DEAL_EVENTS + APP_EVENTS:
        if (event, handler) not in online:
            rest.call("event.bind", {"event": event, "handler": handler})
            created += 1
    # We drain the queue in acknowledged mode (reserve, process, clear), which the plan must allow.
    feature = rest.call("feature.get", {"CODE": "rest_offline_extended"})
    offline_ok = isinstance(feature, dict) and str(feature.get("value", "")).upper() == "Y"
    for event in DEAL_EVENTS if offline_ok else ():
        if event in offline:
            continue
        try:
            rest.call("event.bind", {"event": event, "event_type": "offline"})
            created += 1
        except CrmError as error:
            if isinstance(error, PortalNeedsReinstall):
                raise
            offline_ok = False
            log.info("offline events unavailable", extra={"portal_id": portal.id, "code": error.code})
            break
    set_setting(portal, "offline_events", offline_ok)
    return f"{created} bindings created" + ("" if offline_ok else "; offline events not available")


def _is_offline(binding: dict[str, Any]) -> bool:
    return str(binding.get("offline", "0")) in ("1", "true", "True", "Y")


def ensure_placement(rest: Bitrix24Rest, portal: Portal) -> str:
    """The review tab in the deal card."""
    handler = handler_url("/b24/placement/deal-tab")
    bound = _as_list(rest.call("placement.get"))
    if any(b.get("placement") == PLACEMENT and b.get("handler") == handler for b in bound):
        return "already bound"
    rest.call(
        "placement.bind",
        {
            "PLACEMENT": PLACEMENT,
            "HANDLER": handler,
            "TITLE": DEAL_TAB.in_language(portal.language),
            "LANG_ALL": {"ru": {"TITLE": DEAL_TAB.ru}, "en": {"TITLE": DEAL_TAB.en}},
        },
    )
    return "bound"


def _robot_properties(properties: dict[str, RobotProperty]) -> dict[str, dict[str, Any]]:
    described: dict[str, dict[str, Any]] = {}
    for key, prop in properties.items():
        entry: dict[str, Any] = {
            "Name": {"ru": prop.name_ru, "en": prop.name_en},
            "Type": prop.type,
            "Required": "Y" if prop.required else "N",
            "Multiple": "N",
        }
        if prop.options:
            entry["Options"] = prop.options
        if prop.default is not None:
            entry["Default"] = prop.default
        described[key] = entry
    return described


def _robot_fields(robot: Robot) -> dict[str, Any]:
    return {
        "HANDLER": handler_url(f"/b24/robots/{robot.code}"),
        "AUTH_USER_ID": 1,
        "USE_SUBSCRIPTION": "Y",
        "NAME": {"ru": robot.name_ru, "en": robot.name_en},
        "DESCRIPTION": {"ru": robot.description_ru, "en": robot.description_en},
        "PROPERTIES": _robot_properties(robot.properties),
        "RETURN_PROPERTIES": _robot_properties(robot.return_properties),
        "DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"],
        "FILTER": {"INCLUDE": [["crm", "CCrmDocumentDeal"]]},
    }


def ensure_robots(rest: Bitrix24Rest, portal: Portal) -> str:
    """Every robot of the registry; an existing one is updated so its handler and fields stay current."""
    installed = {str(code) for code in _as_list(rest.call("bizproc.robot.list"))}
    created = updated = 0
    for robot in REGISTRY.values():
        fields = _robot_fields(robot)
        if robot.code in installed:
            rest.call("bizproc.robot.update", {"CODE": robot.code, "FIELDS": fields})
            updated += 1
            continue
        try:
            rest.call("bizproc.robot.add", {"CODE": robot.code, **fields})
            created += 1
        except ActivityAlreadyInstalled:
            rest.call("bizproc.robot.update", {"CODE": robot.code, "FIELDS": fields})
            updated += 1
    return f"{created} robots added, {updated} updated"


def ensure_postpone(rest: Bitrix24Rest, portal: Portal) -> str:
    """«Отложено» in every pipeline, after Conditional refusal (its two fields are among FIELDS)."""
    return postpone.ensure_stages(portal, Bitrix24Crm(portal, rest))


STEP_FUNCTIONS: dict[str, Callable[[Bitrix24Rest, Portal], str]] = {
    "stages": ensure_stages,
    "postpone": ensure_postpone,
    "fields": ensure_fields,
    "events": ensure_events,
    "placement": ensure_placement,
    "robots": ensure_robots,
}


def _read_licence(rest: Bitrix24Rest, portal: Portal) -> None:
    """The licence decides the portal's REST limits (Enterprise: 5 req/s, burst 250), see app.crm.ratelimit;
    the portal's time zone (``profile`` and ``server.time``) decides every date the app computes or shows."""
    info = rest.call("app.info")
    if isinstance(info, dict):
        if info.get("LICENSE"):
            set_setting(portal, "b24_license", str(info["LICENSE"]))
        if info.get("ID"):
            set_setting(portal, "b24_app_id", str(info["ID"]))
    timezones.refresh(portal, Bitrix24Crm(portal, rest), force=True)


def run_install(portal_id: int) -> str:
    """Install or repair everything on one portal; progress is visible to the install page."""
    return install(portal_id, Portal.BITRIX24, Bitrix24Rest, STEPS, STEP_FUNCTIONS, prepare=_read_licence)


def uninstall(portal_id: int, keep_inbox_id: int | None, clean: bool) -> None:
    """The portal removed the app: drop its tokens; with CLEAN=1 also every row it owns."""
    portal = db.session.get(Portal, portal_id)
    if portal is None:
        return
    portal.status = "uninstalled"
    portal.uninstalled_at = datetime.now(UTC)
    portal.installed_at = None  # the next install starts watching afresh
    portal.access_token = None
    portal.refresh_token = None
    portal.application_token = None
    if clean:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "portals" or "portal_id" not in table.c:
                continue
            statement = sa.delete(table).where(table.c.portal_id == portal_id)
            if table.name == InboxItem.__tablename__ and keep_inbox_id is not None:
                statement = statement.where(table.c.id != keep_inbox_id)
            db.session.execute(statement)
        portal.settings = {}
    audit.record(portal.id, "portal", "uninstall", "uninstalled", "data removed" if clean else "history kept")
    db.session.commit()
