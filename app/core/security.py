"""Signed short-lived identity tokens for the pages inside the CRM, and constant-time checks.

Sessions: a page token names the portal, the user, whether the CRM said he is an administrator, and the
moment his session started (`o`: when the CRM last confirmed who he is: a verified Bitrix24 frame, a verified
amoCRM widget token). A token traded for another (the amoCRM page's ticket, then its token) keeps that
moment, so no chain of re-issues outlives TOKEN_MAX_AGE_SECONDS after the CRM last vouched for the user.

Roles are re-read on every request, never carried:
- heads of sales, QA staff and exempt users come from the portal's stored settings at each request
  (app/domain/directory.role_of);
- the administrator bit: the CRM tells it only when it vouches for a user (Bitrix24's `user.admin` at frame
  time, amoCRM's `is_admin` claim in the widget token). Each such answer is recorded on the portal
  (`settings["session_admins"]`, written only when it changes), and a request is an admin's only when his
  token says so *and* the portal's record still lists him. So a user the CRM stops calling an administrator
  loses the rights of every token he holds as soon as the CRM tells us (his next frame or widget open), and
  in any case when his session ends; his settings are refused with 403.
- an uninstalled portal's tokens stop working: 401 on every API.

A deal card's tab token also names the deal the CRM opened the tab for (`d`: the Bitrix24 frame's
PLACEMENT_OPTIONS ID, the amoCRM widget's lead); endpoints about one deal (the stage playbook) answer only for
that deal. A token traded for another keeps no deal unless the new page is that deal's tab again.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, replace
from typing import Any

from flask import abort, current_app, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import Portal

TOKEN_HEADER = "X-RC-Token"  # noqa: S105 - a header name, not a secret
TOKEN_MAX_AGE_SECONDS = 2 * 3600
CLOCK_SKEW_SECONDS = 60
ADMINS_KEY = "session_admins"


@dataclass(frozen=True)
class Identity:
    """Who is using a page: the portal (tenant) and the CRM user.

    `issued_at`: epoch seconds when the CRM last vouched for the user (the session's start); None means now.
    `deal_id`: the deal whose card tab the page is ("" for any other page).
    """

    portal_id: int
    user_id: str
    is_admin: bool = False
    issued_at: int | None = None
    deal_id: str = ""


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="rc-identity")


def session_start(issued_at: Any) -> int | None:
    """`issued_at` when it is a session start still within TOKEN_MAX_AGE_SECONDS, else None."""
    if not isinstance(issued_at, int) or isinstance(issued_at, bool):
        return None
    now = time.time()
    if issued_at > now + CLOCK_SKEW_SECONDS or now - issued_at > TOKEN_MAX_AGE_SECONDS:
        return None
    return issued_at


def admins(portal: Portal) -> set[str]:
    """The users the CRM last confirmed as administrators of this portal."""
    return {str(user) for user in (portal.settings or {}).get(ADMINS_KEY, [])}


def remember_admin(portal_id: int, user_id: str, is_admin: bool) -> None:
    """Record what the CRM just said about the user's administrator rights (written only on a change)."""
    portal = db.session.get(Portal, portal_id)
    if portal is None or not user_id or (user_id in admins(portal)) == is_admin:
        return
    db.session.refresh(portal, with_for_update=True)
    current = admins(portal)
    if (user_id in current) == is_admin:
        return
    current = current | {user_id} if is_admin else current - {user_id}
    portal.settings = {**(portal.settings or {}), ADMINS_KEY: sorted(current)}
    flag_modified(portal, "settings")
    db.session.commit()


def issue_token(identity: Identity) -> str:
    """A signed token the page sends back in the X-RC-Token header.

    `identity.is_admin` is what the CRM confirmed when it vouched for the user at `identity.issued_at` (now
    when None); it is recorded on the portal (`remember_admin`), and requests re-read that record.
    """
    issued_at = int(time.time()) if identity.issued_at is None else identity.issued_at
    remember_admin(identity.portal_id, identity.user_id, identity.is_admin)
    payload: dict[str, Any] = {"p": identity.portal_id, "u": identity.user_id, "a": identity.is_admin, "o": issued_at}
    if identity.deal_id:
        payload["d"] = identity.deal_id
    return _serializer().dumps(payload)


def read_token(token: str, max_age: int = TOKEN_MAX_AGE_SECONDS) -> Identity | None:
    """The identity in a token, or None when it is forged, malformed, expired, or its session (however often
    re-issued) started more than TOKEN_MAX_AGE_SECONDS ago."""
    try:
        payload = _serializer().loads(token, max_age=max_age)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("p"), int):
        return None
    issued_at = session_start(payload.get("o"))
    if issued_at is None:
        return None
    return Identity(
        portal_id=payload["p"],
        user_id=str(payload.get("u", "")),
        is_admin=bool(payload.get("a")),
        issued_at=issued_at,
        deal_id=str(payload.get("d") or ""),
    )


def require_session() -> tuple[Identity, Portal]:
    """The identity of the current request, from the X-RC-Token header, and its portal: 401 without a valid
    token or when the app was uninstalled from the portal, 404 when the portal row is gone; `is_admin` only
    while the portal's record still lists the user."""
    token = request.headers.get(TOKEN_HEADER, "")
    identity = read_token(token) if token else None
    if identity is None:
        abort(401, description="missing or expired session token; reopen the app from the CRM")
    portal = db.session.get(Portal, identity.portal_id)
    if portal is None:
        abort(404, description="portal not found")
    if portal.status == "uninstalled":
        abort(401, description="the app is not installed on this portal; install it again from the CRM")
    return replace(identity, is_admin=identity.is_admin and identity.user_id in admins(portal)), portal


def require_identity() -> Identity:
    """The identity of the current request (`require_session` without the portal)."""
    return require_session()[0]


def same_secret(given: str | None, stored: str | None) -> bool:
    """Constant-time comparison that is false whenever either side is missing."""
    if not given or not stored:
        return False
    return hmac.compare_digest(given.encode(), stored.encode())
