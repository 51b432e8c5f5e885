"""Bitrix24 edge of the QA review: the deal-card tab (placement CRM_DEAL_DETAIL_TAB).

The first request is the CRM's frame POST. It is verified (the application token stored for
`member_id`, and the user confirmed by the portal itself with `AUTH_ID`); the page then carries the
identity in a short-lived signed token sent as a header. No cookies; framing only by the portal.
"""

from __future__ import annotations

import json

from flask import Blueprint, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app import review
from app.security import Identity, issue_token, same_secret
from handlers import b24_verify
from handlers.b24_payloads import parse_frame
from handlers.bitrix24 import _bad_request, _portal, _unauthorized, allow_framing_by_portal

PLACEMENT = "CRM_DEAL_DETAIL_TAB"

bp = Blueprint("b24_review", __name__, url_prefix="/b24/placement")
bp.after_request(allow_framing_by_portal)


def deal_id_from_options(raw: str) -> str | None:
    """`PLACEMENT_OPTIONS` is a JSON string like '{"ID":"8061"}'; the deal id, or None."""
    try:
        options = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(options, dict):
        return None
    deal_id = str(options.get("ID", "")).strip()
    return deal_id if deal_id.isdigit() else None


@bp.post("/deal-tab")
def deal_tab() -> ResponseReturnValue:
    """The review tab of a deal card."""
    try:
        frame = parse_frame(request.form.to_dict(), request.args.to_dict())
    except ValidationError as error:
        return _bad_request(error)
    portal = _portal(frame.member_id)
    if portal is None:
        return _unauthorized("unknown portal")
    if not same_secret(frame.application_token, portal.application_token):
        return _unauthorized("application token does not match")
    if portal.status == "uninstalled":
        return _unauthorized("the app is not installed on this portal")
    if frame.placement != PLACEMENT:
        return jsonify(error="bad_request", message=f"this page is the {PLACEMENT} placement"), 400
    deal_id = deal_id_from_options(frame.placement_options)
    if deal_id is None:
        return jsonify(error="bad_request", message="PLACEMENT_OPTIONS has no deal ID"), 400
    user = b24_verify.current_user(portal, frame.auth_id)
    if user is None:
        return _unauthorized("the portal did not confirm the user")
    g.portal_id = portal.id
    g.frame_origin = f"https://{portal.domain}"
    case = review.latest_case_for(portal.id, deal_id)
    token = issue_token(Identity(portal_id=portal.id, user_id=user.user_id, is_admin=user.is_admin))
    return render_template("b24/deal_tab.html", lang=portal.language, token=token, case=case, deal_id=deal_id)
