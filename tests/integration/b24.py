"""A Bitrix24 portal (the sandbox) wired to the app under test, and the steps people take in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.core.db import db
from app.core.models import Portal
from sandbox import Sandbox
from sandbox.state import Portal as SandboxPortal
from tests.conftest import run_jobs

APP_URL = "https://app.example.test"


@dataclass
class B24:
    """The sandbox, one of its portals, and the app's client."""

    app: Flask
    client: FlaskClient
    sandbox: Sandbox
    portal: SandboxPortal

    @property
    def member_id(self) -> str:
        return self.portal.member_id

    def frame(self, user_id: int | None = None, **extra: str) -> dict[str, str]:
        """The form Bitrix24 POSTs when it opens one of our pages for a user."""
        tokens = self.sandbox.issue_tokens(self.portal, user_id)
        return {
            "AUTH_ID": tokens["access_token"],
            "AUTH_EXPIRES": "3600",
            "REFRESH_ID": tokens["refresh_token"],
            "SERVER_ENDPOINT": tokens["server_endpoint"],
            "member_id": self.portal.member_id,
            "APPLICATION_TOKEN": self.portal.application_token,
            "status": "L",
            "PLACEMENT": "DEFAULT",
            **extra,
        }

    def open_install_page(self) -> Any:
        """The admin installs the app from the Market: access is granted, then the install frame is POSTed."""
        with self.sandbox.lock:
            self.portal.revoked = False
        return self.client.post(f"/b24/install?DOMAIN={self.portal.domain}&LANG=ru", data=self.frame())

    def install(self) -> Portal:
        """The whole install: frame, installer job, installFinish (events start), ONAPPINSTALL."""
        page = self.open_install_page()
        assert page.status_code == 200, page.get_data(as_text=True)
        self.work()
        self.sandbox.install_app(self.portal, install_url=f"{APP_URL}/b24/events")
        self.deliver()
        return self.our_portal()

    def our_portal(self) -> Portal:
        """Our row for this portal, fresh from the database."""
        db.session.expire_all()
        portal = db.session.scalar(sa.select(Portal).where(Portal.external_id == self.portal.member_id))
        assert portal is not None
        return portal

    def deliver(self) -> list[Any]:
        """Bitrix24 sends the events waiting in its queue."""
        return self.sandbox.deliver()

    def work(self) -> None:
        """Our workers run everything queued."""
        run_jobs(self.app)
        db.session.expire_all()

    def settle(self, rounds: int = 4) -> None:
        """Deliver events and run jobs until nothing is left (our writes fire events back)."""
        for _ in range(rounds):
            delivered = self.deliver()
            self.work()
            if not delivered and not self.sandbox.pending_events():
                return

    def stage(self, deal_id: int) -> str:
        return self.sandbox.stage_of(self.portal, deal_id)


def configure_guard(portal: Portal, **changes: Any) -> None:
    """Set the guard settings as an admin would: QA 7 and 8, head 9 by default."""
    from app.domain.settings import update_guard_settings

    update_guard_settings(portal, {"qa_users": ["7", "8"], "heads": ["9"], **changes})
    db.session.commit()


def fill_refusal(b24: B24, deal_id: int, user_id: int, reason: str | None = "price", comment: str = "") -> None:
    """The manager fills in the refusal fields in the deal card."""
    fields = b24.our_portal().settings["b24_fields"]
    values: dict[str, Any] = {fields["refusal_comment"]["field"]: comment}
    if reason is not None:
        values[fields["refusal_reason"]["field"]] = fields["refusal_reason"]["enum"][reason]
    b24.sandbox.act(b24.portal, user_id).update_deal(deal_id, values)


def new_deal(b24: B24, manager: int = 2, stage: str = "PREPARATION", title: str = "Поставка станков") -> int:
    """A manager creates a deal; the app sees it (snapshot) before anything else happens."""
    category = stage.split(":")[0].removeprefix("C") if ":" in stage else "0"
    deal_id = b24.sandbox.act(b24.portal, manager).create_deal(
        TITLE=title,
        CATEGORY_ID=category,
        STAGE_ID=stage,
        ASSIGNED_BY_ID=manager,
        OPPORTUNITY="150000.00",
        SOURCE_ID="WEB",
    )
    b24.settle()
    return deal_id
