"""Checks of what amoCRM sends us: the OAuth state, the uninstall signature, the widget's disposable token."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from redis.exceptions import RedisError

from app.core.queue import get_redis
from app.core.security import same_secret, session_start

log = logging.getLogger(__name__)

STATE_MAX_AGE = 3600
TICKET_MAX_AGE = 120
JTI_KEY = "rc:amo:jti:{jti}"
TICKET_KEY = "rc:amo:ticket:{nonce}"


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def issue_state() -> str:
    """A signed, expiring `state` for the authorisation link."""
    return _serializer("amo-oauth-state").dumps({"n": secrets.token_urlsafe(12)})


def state_valid(state: str) -> bool:
    """Whether `state` is one we issued within the last hour."""
    try:
        _serializer("amo-oauth-state").loads(state, max_age=STATE_MAX_AGE)
    except (BadSignature, SignatureExpired):
        return False
    return True


def uninstall_signature_valid(client_uuid: str, account_id: str, signature: str) -> bool:
    """``client_uuid`` is our client id and ``signature`` = HMAC-SHA256(secret, "client_id|account_id")."""
    client_id = current_app.config["AMO_CLIENT_ID"]
    secret = current_app.config["AMO_CLIENT_SECRET"]
    if not client_id or not secret or not same_secret(client_uuid, client_id) or not account_id.isdigit():
        return False
    expected = hmac.new(secret.encode(), f"{client_id}|{account_id}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, (signature or "").lower())


def widget_audience() -> str:
    """The `aud` amoCRM puts in disposable tokens: scheme://host of the redirect URI (else of PUBLIC_URL)."""
    base = current_app.config["AMO_REDIRECT_URI"] or current_app.config["PUBLIC_URL"]
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def widget_claims(token: str) -> dict[str, Any] | None:
    """The claims of a valid, first-seen disposable token; None when forged, expired, foreign or replayed."""
    secret = current_app.config["AMO_CLIENT_SECRET"]
    if not token or not secret:
        return None
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=widget_audience(),
            options={"require": ["exp", "jti", "account_id", "client_uuid"]},
            leeway=30,
        )
    except jwt.PyJWTError as error:
        log.info("widget token refused", extra={"reason": type(error).__name__})
        return None
    if not same_secret(str(claims.get("client_uuid") or ""), current_app.config["AMO_CLIENT_ID"]):
        return None
    if not str(claims.get("account_id") or "").isdigit() or not str(claims.get("jti") or ""):
        return None
    ttl = max(60, int(claims["exp"]) - int(time.time()) + 60)
    try:
        first = get_redis().set(JTI_KEY.format(jti=claims["jti"]), "1", nx=True, ex=ttl)
    except RedisError:
        log.warning("widget token refused: replay store unavailable")
        return None
    if not first:
        log.warning("widget token replayed", extra={"account_id": claims.get("account_id")})
        return None
    return claims


def issue_ticket(portal_id: int, user_id: str, is_admin: bool, lead_id: str = "", issued_at: int | None = None) -> str:
    """A single-use, two-minute ticket that lets the widget's iframe open our page.

    `issued_at` is when amoCRM last vouched for the user (now, for a verified widget token; the page token's
    own start when a page trades its token for a ticket): the page token the ticket becomes keeps it, so
    trading tokens for tickets never extends a session (app/core/security.py).
    """
    payload = {
        "p": portal_id,
        "u": user_id,
        "a": is_admin,
        "l": lead_id,
        "o": int(time.time()) if issued_at is None else issued_at,
        "n": secrets.token_urlsafe(12),
    }
    return _serializer("amo-ticket").dumps(payload)


def redeem_ticket(ticket: str) -> dict[str, Any] | None:
    """The ticket's payload the first time it is shown within two minutes, else None."""
    try:
        payload = _serializer("amo-ticket").loads(ticket, max_age=TICKET_MAX_AGE)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("p"), int):
        return None
    if session_start(payload.get("o")) is None:
        return None
    try:
        first = get_redis().set(TICKET_KEY.format(nonce=payload.get("n")), "1", nx=True, ex=TICKET_MAX_AGE + 60)
    except RedisError:
        return None
    return payload if first else None
