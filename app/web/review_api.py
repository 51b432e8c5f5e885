"""JSON endpoints of the QA review: the case in the deal tab, its actions and recordings, the QA queue.

Identity comes from the signed X-RC-Token header; every case is looked up within the caller's portal
(another portal's case is a 404). Managers may read; only QA staff and heads may act.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from app.core.db import db
from app.core.models import RefusalCase
from app.core.validation import json_body
from app.crm.errors import AmoNotFound, CrmError, NotFound
from app.crm.factory import client_for
from app.domain import audit, review
from app.web.api import save_settings
from app.web.permissions import ADMIN, crm_unavailable, require_role

bp = Blueprint("review_api", __name__, url_prefix="/api/review")


class _Expected(Schema):
    class Meta:
        unknown = EXCLUDE

    stage_id = fields.String(required=True)
    responsible_id = fields.String(required=True)


class ActionSchema(Schema):
    """An action as the tab sends it."""

    class Meta:
        unknown = EXCLUDE

    version = fields.Integer(required=True, strict=True)
    expected = fields.Nested(_Expected, required=True)
    note = fields.String(load_default="", validate=validate.Length(max=4000))
    params = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


def _crm_failed(error: CrmError) -> ResponseReturnValue:
    crm_unavailable(error)


@bp.get("/cases/<int:case_id>")
def get_case(case_id: int) -> ResponseReturnValue:
    """The case as the tab shows it, with the actions this user may take."""
    access = require_role()
    identity, portal = access.identity, access.portal
    case = access.own(RefusalCase, case_id)
    try:
        view = review.case_view(portal, client_for(portal), case, identity.user_id, identity.is_admin, access.language)
    except CrmError as error:
        return _crm_failed(error)
    return jsonify(view)


@bp.post("/cases/<int:case_id>/actions/<action>")
def act(case_id: int, action: str) -> ResponseReturnValue:
    """Carry out one action on the case; 403 for managers, 409 when the case or the deal moved on."""
    access = require_role()
    identity, portal = access.identity, access.portal
    access.own(RefusalCase, case_id)
    body = json_body()
    if not isinstance(body, dict):
        return jsonify(error="bad_request", message="expected a JSON object"), 400
    try:
        loaded = ActionSchema().load(body)
    except ValidationError as error:
        return jsonify(error="bad_request", message="invalid action", fields=error.messages), 400
    action_request = review.ActionRequest(
        action=action,
        version=loaded["version"],
        expected_stage_id=loaded["expected"]["stage_id"],
        expected_responsible_id=loaded["expected"]["responsible_id"],
        note=loaded["note"],
        params=loaded["params"],
    )
    crm = client_for(portal)
    try:
        case = review.Review(portal, crm, identity.user_id).perform(case_id, action_request)
    except review.ReviewError as error:
        db.session.rollback()
        return jsonify(error=error.code, message=error.message), error.status
    except CrmError as error:
        db.session.rollback()
        return _crm_failed(error)
    try:
        text = review.action_text(portal, crm, case, action, access.language)
    except CrmError:
        text = ""
    return jsonify(ok=True, state=case.state, text=text)


@bp.get("/cases/<int:case_id>/calls/<call_id>/recording")
def recording(case_id: int, call_id: str) -> ResponseReturnValue:
    """Stream a call recording of the case's deal, fetched from the portal server-side."""
    access = require_role()
    identity, portal = access.identity, access.portal
    case = access.own(RefusalCase, case_id)
    access.require(
        *review.REVIEWER_ROLES,
        ADMIN,
        forbidden="only QA staff, heads and the deal's manager can listen to its calls",
        unless=identity.user_id == case.manager_id,
    )
    crm = client_for(portal)
    try:
        call = next((c for c in crm.list_deal_calls(case.deal_id) if c.id == call_id), None)
        if call is None or not call.recording_url:
            abort(404, description="no such recording")
        stream = crm.open_recording(call)
    except (NotFound, AmoNotFound):
        abort(404, description="the recording is gone from the CRM")
    except CrmError as error:
        if error.code in ("FOREIGN_URL", "NOT_A_RECORDING"):
            message = f"the recording link was not fetched: {error.description}"
            return jsonify(error="recording_refused", message=message), 422
        return _crm_failed(error)
    audit.record(portal.id, identity.user_id, "listen", "recording streamed", deal_id=case.deal_id, call_id=call_id)
    db.session.commit()

    def body() -> Iterator[bytes]:
        try:
            yield from stream.chunks
        finally:
            stream.close()

    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if stream.length is not None:
        headers["Content-Length"] = str(stream.length)
    return Response(stream_with_context(body()), mimetype=stream.content_type, headers=headers)


@bp.get("/queue")
def queue() -> ResponseReturnValue:
    """Open cases, overdue first; filters pipeline, manager, qa, state. QA staff, heads and admins see every
    case; anyone else (a sales manager) only his own («Мои отказы»)."""
    access = require_role()
    portal = access.portal
    crm = client_for(portal)
    filters = {key: request.args.get(key, "").strip() for key in ("pipeline", "manager", "qa", "state")}
    if filters["state"] and filters["state"] not in RefusalCase.OPEN_STATES:
        return jsonify(error="bad_request", message=f"state must be one of {', '.join(RefusalCase.OPEN_STATES)}"), 400
    if not access.has(*review.REVIEWER_ROLES, ADMIN):
        filters["manager"] = access.user_id
    try:
        return jsonify(review.queue_view(portal, crm, filters, access.language))
    except CrmError as error:
        return _crm_failed(error)


def _settings_dict(settings: review.ReviewSettings) -> dict[str, Any]:
    return {
        "callback_interval_minutes": settings.callback_interval_minutes,
        "callback_attempts": settings.callback_attempts,
    }


@bp.get("/settings")
def get_settings() -> ResponseReturnValue:
    """Callback interval and attempts (admins only)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the settings").portal
    return jsonify(settings=_settings_dict(review.review_settings(portal)))


@bp.put("/settings")
def put_settings() -> ResponseReturnValue:
    """Validate and store the callback settings (admins only)."""
    return save_settings(
        review.update_review_settings,
        lambda _portal, settings: _settings_dict(settings),
        forbidden="only a portal administrator can change the settings",
        invalid="invalid settings",
        audit_action="change review settings",
        audit_details=lambda _changes, settings: _settings_dict(settings),
    )
