"""Checks against Bitrix24 itself: who an OAuth token belongs to, and who the frame's user is."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from flask import current_app

from app.core.models import Portal
from app.crm.hosts import ForeignHost, origin_of, require_same_origin

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class AppInfo:
    """What the OAuth server says about a token: the installation it belongs to."""

    member_id: str
    domain: str
    client_endpoint: str
    user_id: str | None


@dataclass(frozen=True)
class FrameUser:
    """The user who opened one of our pages, as confirmed by the portal."""

    user_id: str
    name: str
    is_admin: bool


def _json(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def rest_base_of(endpoint: str) -> str | None:
    """`endpoint` as a REST base we may call ("https://host[:port]/rest/"), or None when it is not a clean
    https URL (userinfo, an IP literal trick, whitespace, percent-encoding...: see app.crm.hosts)."""
    if origin_of(endpoint) is None:
        return None
    return endpoint if endpoint.endswith("/") else endpoint + "/"


def app_info(access_token: str) -> AppInfo | None:
    """Ask the configured OAuth server (never a host from the request) which installation a token is for."""
    server = current_app.config["B24_OAUTH_SERVER"]
    try:
        url = require_same_origin(f"{server}/rest/app.info/", server, what="access tokens")
    except ForeignHost:
        log.warning("B24_OAUTH_SERVER is not a plain https URL; no token is sent to it")
        return None
    try:
        response = requests.get(url, params={"auth": access_token}, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as error:
        log.warning("app.info unreachable", extra={"error": type(error).__name__})
        return None
    body = _json(response)
    if response.status_code != 200 or body is None or not isinstance(body.get("result"), dict):
        return None
    result = body["result"]
    client_id = current_app.config["B24_CLIENT_ID"]
    if client_id and result.get("client_id") != client_id:
        log.warning("app.info names another application")
        return None
    install = result.get("install") if isinstance(result.get("install"), dict) else {}
    endpoint = rest_base_of(str(install.get("client_endpoint") or ""))
    if not install.get("member_id") or endpoint is None:
        return None
    return AppInfo(
        member_id=str(install["member_id"]),
        domain=str(install.get("domain") or ""),
        client_endpoint=endpoint,
        user_id=str(result["user_id"]) if result.get("user_id") is not None else None,
    )


def token_belongs_to(access_token: str, member_id: str) -> bool:
    """True when the OAuth server confirms the token was issued for this portal and our app."""
    info = app_info(access_token)
    return info is not None and info.member_id == member_id


def current_user(portal: Portal, auth_id: str) -> FrameUser | None:
    """Confirm the frame's user through the portal's own REST (at the address we stored, not the request's)."""
    return user_at(portal.rest_base or "", auth_id)


def user_at(rest_base: str, auth_id: str) -> FrameUser | None:
    """Who `auth_id` belongs to and whether he is a portal administrator (`user.current`, `user.admin`),
    asked at `rest_base`: a REST base the OAuth server confirmed, never one a request named."""
    try:
        url = require_same_origin(f"{rest_base}batch.json", rest_base, what="access tokens")
    except ForeignHost:
        log.warning("the portal's REST base is not a plain https URL; the user is not checked")
        return None
    payload = {"halt": 0, "cmd": {"user": "user.current", "admin": "user.admin"}, "auth": auth_id}
    try:
        response = requests.post(url, json=payload, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as error:
        log.warning("portal unreachable for user check", extra={"error": type(error).__name__})
        return None
    body = _json(response)
    if response.status_code != 200 or body is None or not isinstance(body.get("result"), dict):
        return None
    results = body["result"].get("result")
    if not isinstance(results, dict) or not isinstance(results.get("user"), dict):
        return None
    user = results["user"]
    name = " ".join(part for part in (user.get("NAME"), user.get("LAST_NAME")) if part) or str(user.get("ID", ""))
    return FrameUser(
        user_id=str(user.get("ID", "")), name=name, is_admin=results.get("admin") in (True, "true", "Y", 1)
    )
