"""A sandbox Bitrix24 portal wired to the app for the security tests, with the transport it is reached through.

The portal is reached in-process through a `responses` mock (tests/integration/conftest.py's wiring), so
every outbound request the app makes, with the token it carries, is visible in `env.transport.calls`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses
from flask import Flask

from app.core.models import Portal
from sandbox.events import form_body
from sandbox.mount import responses_sandbox
from tests.integration.b24 import B24, configure_guard, new_deal
from tests.integration.conftest import make_b24

ADMIN, MANAGER = 1, 2
FORM = "application/x-www-form-urlencoded"


@dataclass
class Env:
    """The B24 harness plus the `responses` mock every outbound request goes through."""

    b24: B24
    transport: responses.RequestsMock

    def snapshot(self) -> dict[str, Any]:
        """Everything a takeover would change on our portal row."""
        portal: Portal = self.b24.our_portal()
        return {
            "application_token": portal.application_token,
            "access_token": portal.access_token,
            "refresh_token": portal.refresh_token,
            "rest_base": portal.rest_base,
            "domain": portal.domain,
            "status": portal.status,
            "settings": portal.settings,
        }

    def event(self, event: str, auth: dict[str, Any], **data: Any) -> Any:
        """POST an event body to /b24/events as Bitrix24 would."""
        body = form_body({"event": event, "event_handler_id": "1", "data": data, "ts": "1764070000", "auth": auth})
        return self.b24.client.post("/b24/events", data=body, content_type=FORM)

    def auth_block(self, user_id: int) -> dict[str, Any]:
        """A genuine `auth[...]` block for `user_id` (fresh tokens from the portal's OAuth server)."""
        return dict(self.b24.sandbox._auth_block(self.b24.portal, user_id, refresh=True))


@contextmanager
def sandbox_env(app: Flask) -> Iterator[Env]:
    """A seeded sandbox portal, not yet installed (the body of each module's `env` fixture)."""
    sandbox, portal = make_b24(app)
    with responses_sandbox(sandbox) as mock:
        yield Env(B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal), mock)


def install_and_guard(env: Env) -> Env:
    """The portal with the app installed by its admin and the guard configured (QA 7, 8; head 9)."""
    env.b24.install()
    configure_guard(env.b24.our_portal())
    return env


def guard_reverts_an_illegal_move(b24: B24) -> None:
    """A manager closes a deal as lost without a reason: the guard moves it back (it still works)."""
    deal_id = new_deal(b24, manager=MANAGER)
    b24.sandbox.act(b24.portal, MANAGER).move_deal(deal_id, "LOSE")
    b24.settle()
    assert b24.stage(deal_id) == "PREPARATION", "the guard no longer reverts an illegal move"


def sent_token(call: Any) -> str | None:
    """The `auth` token a recorded request carried (query string, form or JSON body), or None."""
    request = call.request
    query = parse_qs(urlsplit(request.url).query)
    if "auth" in query:
        return query["auth"][0]
    body = request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return None
    if body.lstrip().startswith("{"):
        try:
            decoded = json.loads(body)
        except ValueError:
            return None
        return decoded.get("auth") if isinstance(decoded, dict) else None
    form = parse_qs(body)
    return form["auth"][0] if "auth" in form else None
