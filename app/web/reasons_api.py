"""JSON endpoints of the refusal-reason editor on the settings tab (portal administrators only).

Every change is validated (a translated message for an empty, too long or duplicate name), audited with the
admin who made it, committed, and written to the CRM's reason field at once; when the CRM does not answer the
change is kept and the periodic reconciliation writes it (the answer says so).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from app.core import i18n
from app.core.db import db
from app.core.models import Portal
from app.core.validation import json_body
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.factory import client_for
from app.domain import reasons
from app.web.permissions import ADMIN, Access, require_role

bp = Blueprint("reasons_api", __name__, url_prefix="/api/reasons")
FORBIDDEN = "only a portal administrator can change the refusal reasons"


def _admin() -> Access:
    return require_role(ADMIN, forbidden=FORBIDDEN)


def _listing(portal: Portal, **extra: Any) -> ResponseReturnValue:
    language = portal.language
    return jsonify(reasons=[reasons.as_dict(row, language) for row in reasons.listing(portal.id)], **extra)


def _body() -> dict[str, Any] | None:
    body = json_body()
    return body if isinstance(body, dict) else None


def _bad_body(portal: Portal) -> ResponseReturnValue:
    return jsonify(error="bad_request", message=i18n.translate("settings_invalid", portal.language)), 400


def _refused(error: reasons.ReasonError) -> ResponseReturnValue:
    db.session.rollback()
    return jsonify(error=error.key, message=error.message, field=error.field), error.status


def _published(portal: Portal) -> ResponseReturnValue:
    """Commit the change, write it to the CRM and answer the new list with what happened."""
    db.session.commit()
    written = reasons.publish(portal, client_for(portal))
    key = "reasons_saved" if written else "reasons_saved_crm_later"
    return _listing(portal, written=written, message=i18n.translate(key, portal.language))


@bp.get("")
def get_reasons() -> ResponseReturnValue:
    """The portal's reasons, retired ones last; what an admin changed in the CRM's field is read first."""
    portal = _admin().portal
    crm_read = True
    if not (portal.settings or {}).get(reasons.PUSH_PENDING):
        try:
            reasons.pull_from_crm(portal, client_for(portal))
        except PortalNeedsReinstall:
            db.session.rollback()
            crm_read = False
        except CrmError:
            db.session.rollback()
            crm_read = False
    return _listing(portal, crm_read=crm_read)


@bp.post("")
def add_reason() -> ResponseReturnValue:
    """Add a reason at the end of the active ones: {"name_ru": ..., "name_en": ...}."""
    access = _admin()
    portal = access.portal
    body = _body()
    if body is None:
        return _bad_body(portal)
    try:
        reasons.add(portal, access.identity.user_id, body.get("name_ru"), body.get("name_en"))
    except reasons.ReasonError as error:
        return _refused(error)
    return _published(portal)


@bp.put("/order")
def put_order() -> ResponseReturnValue:
    """The active reasons in a new order: {"codes": [...]}, each active reason once."""
    access = _admin()
    portal = access.portal
    body = _body()
    codes = body.get("codes") if body is not None else None
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        return _bad_body(portal)
    try:
        reasons.reorder(portal, access.identity.user_id, codes)
    except reasons.ReasonError as error:
        return _refused(error)
    return _published(portal)


@bp.put("/<code>")
def rename_reason(code: str) -> ResponseReturnValue:
    """New names for a reason: {"name_ru": ..., "name_en": ...}."""
    access = _admin()
    portal = access.portal
    body = _body()
    if body is None:
        return _bad_body(portal)
    try:
        reasons.rename(portal, access.identity.user_id, code, body.get("name_ru"), body.get("name_en"))
    except reasons.ReasonError as error:
        return _refused(error)
    return _published(portal)


@bp.post("/<code>/retire")
def retire_reason(code: str) -> ResponseReturnValue:
    """Retire a reason: kept in history, reports and the CRM's field, refused for new refusals."""
    access = _admin()
    try:
        reasons.set_retired(access.portal, access.identity.user_id, code, True)
    except reasons.ReasonError as error:
        return _refused(error)
    return _published(access.portal)


@bp.post("/<code>/restore")
def restore_reason(code: str) -> ResponseReturnValue:
    """Offer a retired reason again, at the end of the active ones."""
    access = _admin()
    try:
        reasons.set_retired(access.portal, access.identity.user_id, code, False)
    except reasons.ReasonError as error:
        return _refused(error)
    return _published(access.portal)
