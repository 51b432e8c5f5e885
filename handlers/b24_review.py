"""Bitrix24 edge of the QA review: the deal-card tab (placement CRM_DEAL_DETAIL_TAB).

The first request is the CRM's frame POST. It is verified (the application token stored for
`member_id`, and the user confirmed by the portal itself with `AUTH_ID`); the page then carries the
identity in a short-lived signed token sent as a header. No cookies; framing only by the portal.
"""

from __future__ import annotations

import json

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from app.domain import review
from handlers.b24_payloads import B24Frame
from handlers.bitrix24 import VerifiedFrame, allow_framing_by_portal, frame_language, frame_refused, verify_frame

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
    verified = verify_frame(installed_only=True, check=_deal_tab_frame)
    if not isinstance(verified, VerifiedFrame):
        return verified
    portal = verified.portal
    deal_id = deal_id_from_options(verified.frame.placement_options)
    case = review.latest_case_for(portal.id, deal_id) if deal_id else None
    return render_template(
        "b24/deal_tab.html",
        lang=frame_language(verified.frame, portal),
        token=verified.token(deal_id or ""),
        case=case,
        deal_id=deal_id,
        portal=portal,
        user=verified.user,
    )


def _deal_tab_frame(frame: B24Frame) -> ResponseReturnValue | None:
    """400 unless the frame is this placement with a deal ID in its options."""
    if frame.placement != PLACEMENT:
        return frame_refused(400, "wrong_placement", f"this page is the {PLACEMENT} placement")
    if deal_id_from_options(frame.placement_options) is None:
        return frame_refused(400, "wrong_placement", "PLACEMENT_OPTIONS has no deal ID")
    return None
