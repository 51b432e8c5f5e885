"""amoCRM installer: one call for install and repair. It lists before it creates, so a rerun creates nothing.

Steps: a Conditional refusal status in every pipeline (before 142 won and 143 lost), the lead fields
(reason, comment, QA verdict, CPL; ABC need, budget, urgency and class) with their option ids stored in
``settings["amo_fields"]``, the webhooks to ``/amocrm/webhooks/<per-account secret>``, and the per-account
secret the Digital Pipeline robots' actions carry (``settings["amo_dp_secret"]``, see handlers/amocrm.py).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from flask import current_app

from app.core.db import db
from app.core.models import Portal
from app.crm.amocrm import AmoRest
from app.crm.amocrm.adapter import AmoCrm
from app.crm.errors import CrmError
from app.domain import postpone, reasons, timezones
from app.domain.catalog import ABC_ANSWERS, ABC_CLASSES, FIELD_LABELS, POSTPONE_REASONS, VERDICTS, Label
from app.domain.stages import known_stage, refusal_stage_spec, stages_lock
from installers.steps import install, set_setting

log = logging.getLogger(__name__)

STEPS = ("account", "statuses", "postpone", "fields", "webhooks")
WEBHOOK_SETTINGS = ("add_lead", "update_lead", "status_lead", "responsible_lead", "delete_lead")
WEBHOOK_SECRET = "amo_webhook_secret"  # noqa: S105 - the settings key, not a secret
DP_SECRET = "amo_dp_secret"  # noqa: S105 - the settings key, not a secret
FIELDS: dict[str, dict[str, Any]] = {
    "refusal_reason": {"code": "RC_REASON", "type": "select", "options": None},  # the portal's own reasons
    "refusal_comment": {"code": "RC_COMMENT", "type": "textarea"},
    "qa_verdict": {"code": "RC_VERDICT", "type": "select", "options": VERDICTS},
    "cpl": {"code": "RC_CPL", "type": "numeric"},
    "postpone_reason": {"code": "RC_POSTPONE_REASON", "type": "select", "options": POSTPONE_REASONS},
    "postpone_date": {"code": "RC_POSTPONE_DATE", "type": "date"},
    "abc_need": {"code": "RC_ABC_NEED", "type": "select", "options": ABC_ANSWERS},
    "abc_budget": {"code": "RC_ABC_BUDGET", "type": "select", "options": ABC_ANSWERS},
    "abc_urgency": {"code": "RC_ABC_URGENCY", "type": "select", "options": ABC_ANSWERS},
    "abc_class": {"code": "RC_ABC_CLASS", "type": "select", "options": ABC_CLASSES},
}


def webhook_url(secret: str) -> str:
    """Where the account posts its webhooks."""
    return f"{current_app.config['PUBLIC_URL']}/amocrm/webhooks/{secret}"


def _embedded(answer: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(answer, dict):
        return []
    items = (answer.get("_embedded") or {}).get(key) or []
    return [item for item in items if isinstance(item, dict)]


def ensure_statuses(rest: AmoRest, portal: Portal) -> str:
    """Conditional refusal in every pipeline, sorted after the last working status and before 142/143 (the
    adapter's `ensure_stage`, the same call the app makes for a pipeline created after install)."""
    crm = AmoCrm(portal, rest)
    spec = refusal_stage_spec(portal.language)
    pipeline_ids = [str(int(p["id"])) for p in _embedded(rest.get("/api/v4/leads/pipelines"), "pipelines")]
    with stages_lock(portal.id):
        found = {pipeline_id: crm.ensure_stage(pipeline_id, spec) for pipeline_id in pipeline_ids}
    created = sum(1 for pipeline_id, stage in found.items() if known_stage(portal, pipeline_id) != stage)
    set_setting(portal, "refusal_stages", found)
    return f"{len(found)} pipelines, {created} new to the app"


def _enum_items(options: dict[str, Label], language: str) -> list[dict[str, Any]]:
    return [
        {"value": label.in_language(language), "sort": (index + 1) * 10}
        for index, (_code, label) in enumerate(options.items())
    ]


def _match_enums(enums: list[dict[str, Any]], options: dict[str, Label]) -> dict[str, int]:
    """{our code: enum id}, matching options by their Russian or English name."""
    by_value = {str(e.get("value")): int(e["id"]) for e in enums if e.get("id") is not None}
    matched = {}
    for code, label in options.items():
        for value in (label.ru, label.en):
            if value in by_value:
                matched[code] = by_value[value]
                break
    return matched


def ensure_fields(rest: AmoRest, portal: Portal) -> str:
    """Our lead fields (found by code: refusal, QA verdict, CPL, ABC qualification); missing select options are
    added to an existing field."""
    existing = {f.get("code"): f for f in rest.iter_pages("/api/v4/leads/custom_fields", "custom_fields")}
    missing = [key for key, spec in FIELDS.items() if spec["code"] not in existing]
    if missing:
        body = []
        for key in missing:
            spec = FIELDS[key]
            item: dict[str, Any] = {
                "name": FIELD_LABELS[key].in_language(portal.language),
                "type": spec["type"],
                "code": spec["code"],
                "sort": 510 + list(FIELDS).index(key),
            }
            if spec["type"] == "select" and spec["options"] is None:
                item["enums"] = [{"value": o.name, "sort": o.sort} for o in reasons.initial_options(portal)]
            elif spec["type"] == "select":
                item["enums"] = _enum_items(spec["options"], portal.language)
            body.append(item)
        for made in _embedded(rest.request("POST", "/api/v4/leads/custom_fields", body=body), "custom_fields"):
            existing[made.get("code")] = made
    mapping: dict[str, dict[str, Any]] = {}
    for key, spec in FIELDS.items():
        field = existing.get(spec["code"])
        if field is None:
            raise CrmError(f"the field {spec['code']} was not created")
        entry: dict[str, Any] = {"field": int(field["id"])}
        if spec["type"] == "select" and spec["options"] is not None:
            enums = list(field.get("enums") or [])
            matched = _match_enums(enums, spec["options"])
            absent = [code for code in spec["options"] if code not in matched]
            if absent:
                add = [
                    {"value": spec["options"][code].in_language(portal.language), "sort": 100 + n}
                    for n, code in enumerate(absent)
                ]
                keep = [{"id": e["id"], "value": e["value"], "sort": e.get("sort", 0)} for e in enums]
                field = rest.request("PATCH", f"/api/v4/leads/custom_fields/{field['id']}", body={"enums": keep + add})
                matched = _match_enums(list((field or {}).get("enums") or []), spec["options"])
            entry["enum"] = matched
        mapping[key] = entry
    set_setting(portal, "amo_fields", mapping)
    # The reasons both ways: options an admin added in amoCRM become reasons, the app's reasons become options.
    reasons.sync(portal, AmoCrm(portal, rest))
    mapping["refusal_reason"]["enum"] = {code: int(item) for code, item in reasons.item_ids(portal.id).items()}
    set_setting(portal, "amo_fields", mapping)
    return f"{len(mapping)} fields, {len(missing)} created"


def ensure_webhooks(rest: AmoRest, portal: Portal) -> str:
    """Our webhook, with a random per-account secret in its path, and the Digital Pipeline secret (both kept
    across repairs)."""
    secret = (portal.settings or {}).get(WEBHOOK_SECRET) or secrets.token_urlsafe(32)
    set_setting(portal, WEBHOOK_SECRET, secret)
    set_setting(portal, DP_SECRET, (portal.settings or {}).get(DP_SECRET) or secrets.token_urlsafe(32))
    db.session.commit()
    destination = webhook_url(secret)
    hooks = _embedded(rest.get("/api/v4/webhooks", {"filter": {"destination": destination}}), "webhooks")
    current = next((h for h in hooks if h.get("destination") == destination), None)
    if current is not None and not current.get("disabled") and set(WEBHOOK_SETTINGS) <= set(current["settings"]):
        return "already registered"
    # Posting the same destination again updates it (and re-enables a disabled hook).
    rest.request("POST", "/api/v4/webhooks", body={"destination": destination, "settings": list(WEBHOOK_SETTINGS)})
    return "registered" if current is None else "re-registered"


def read_account(rest: AmoRest, portal: Portal) -> str:
    """The account's time zone (``GET /api/v4/account?with=datetime_settings``): "today", report periods and
    callback times are the account's, not the server's (reference/amocrm.md pitfall 8)."""
    timezones.refresh(portal, AmoCrm(portal, rest), force=True)
    return portal.timezone


def ensure_postpone(rest: AmoRest, portal: Portal) -> str:
    """«Отложено» in every pipeline, after Conditional refusal (its two fields are among FIELDS)."""
    return postpone.ensure_stages(portal, AmoCrm(portal, rest))


STEP_FUNCTIONS: dict[str, Callable[[AmoRest, Portal], str]] = {
    "account": read_account,
    "statuses": ensure_statuses,
    "postpone": ensure_postpone,
    "fields": ensure_fields,
    "webhooks": ensure_webhooks,
}


def run_install(portal_id: int) -> str:
    """Install or repair everything on one account."""
    return install(portal_id, Portal.AMOCRM, AmoRest, STEPS, STEP_FUNCTIONS)
