"""Signed short-lived identity tokens for the pages inside the CRM, and constant-time checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from flask import abort, current_app, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

TOKEN_HEADER = "X-RC-Token"  # noqa: S105 - a header name, not a secret
TOKEN_MAX_AGE_SECONDS = 2 * 3600


@dataclass(frozen=True)
class Identity:
    """Who is using a page: the portal (tenant) and the CRM user."""

    portal_id: int
    user_id: str
    is_admin: bool = False


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="rc-identity")


def issue_token(identity: Identity) -> str:
    """A signed token the page sends back in the X-RC-Token header."""
    payload: dict[str, Any] = {"p": identity.portal_id, "u": identity.user_id, "a": identity.is_admin}
    return _serializer().dumps(payload)


def read_token(token: str, max_age: int = TOKEN_MAX_AGE_SECONDS) -> Identity | None:
    """The identity in a token, or None when it is forged, malformed or expired."""
    try:
        payload = _serializer().loads(token, max_age=max_age)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("p"), int):
        return None
    return Identity(portal_id=payload["p"], user_id=str(payload.get("u", "")), is_admin=bool(payload.get("a")))


def require_identity() -> Identity:
    """The identity of the current request, from the X-RC-Token header; 401 without a valid one."""
    token = request.headers.get(TOKEN_HEADER, "")
    identity = read_token(token) if token else None
    if identity is None:
        abort(401, description="missing or expired session token; reopen the app from the CRM")
    return identity


def same_secret(given: str | None, stored: str | None) -> bool:
    """Constant-time comparison that is false whenever either side is missing."""
    if not given or not stored:
        return False
    return hmac.compare_digest(given.encode(), stored.encode())
