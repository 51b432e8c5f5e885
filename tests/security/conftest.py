"""Shared pieces of the security tests: an installed portal row and the page tokens of its people."""

from __future__ import annotations

from flask import Flask

from app.core.models import Portal
from app.core.security import Identity, issue_token
from tests.helpers import make_portal

ADMIN, HEAD, OTHER_HEAD, MANAGER = "1", "9", "10", "2"


def installed_portal(member_id: str = "member-sec", **fields: object) -> Portal:
    """An installed Bitrix24 portal with two heads of sales (9 and 10)."""
    return make_portal(
        member_id,
        status=fields.pop("status", "installed"),
        application_token=fields.pop("application_token", "app-token-sec"),
        settings=fields.pop("settings", {"guard": {"heads": [HEAD, OTHER_HEAD]}}),
        **fields,
    )


def headers(portal: Portal, user_id: str, *, admin: bool = False) -> dict[str, str]:
    """The X-RC-Token header of a page opened by this user (an admin when `admin`)."""
    return {"X-RC-Token": issue_token(Identity(portal.id, user_id, is_admin=admin))}


def gunicorn_env(app: Flask) -> dict[str, str]:
    """The environment a gunicorn started by a test runs the app with (same database and Redis)."""
    return {
        "DATABASE_URL": app.config["DATABASE_URL"],
        "REDIS_URL": app.config["REDIS_URL"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "INSTANCE_PATH": app.instance_path,
    }
