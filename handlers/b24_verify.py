"""Checks against Bitrix24 itself: who an OAuth token belongs to, and who the frame's user is."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from flask import current_app

from app.models import Portal

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


def app_info(access_token: str) -> AppInfo | None:
    """Ask the configured OAuth server (never a host from the request) which installation a token is for."""
    url = f"{current_app.config['B24_OAUTH_SERVER']}/rest/app.info/"
    try:
        response = requests.get(url, params={"auth": access_token}, timeout=TIMEOUT_SECONDS)
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
    endpoint = str(install.get("client_endpoint") or "")
    if not install.get("member_id") or not endpoint.startswith("https://"):
        return None
    return AppInfo(
        member_id=str(install["member_id"]),
        domain=str(install.get("domain") or ""),
        client_endpoint=endpoint if endpoint.endswith("/") else endpoint + "/",
        user_id=str(result["user_id"]) if result.get("user_id") is not None else None,
    )


def token_belongs_to(access_token: str, member_id: str) -> bool:
    """True when the OAuth server confirms the token was issued for this portal and our app."""
    info = app_info(access_token)
    return info is not None and info.member_id == member_id


def current_user(portal: Portal, auth_id: str) -> FrameUser | None:
    """Confirm the frame's user through the portal's own REST (at the address we stored, not the request's)."""
    url = f"{portal.rest_base}batch.json"
    payload = {"halt": 0, "cmd": {"user": "user.current", "admin": "user.admin"}, "auth": auth_id}
    try:
        response = requests.post(url, json=payload, timeout=TIMEOUT_SECONDS)
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
