"""An amoCRM account (the sandbox) wired to the app under test, and the steps people take in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.core.db import db
from app.core.models import Portal
from app.crm.amocrm.adapter import NOTICE_MARK
from sandbox.amocrm import Account, AmoSandbox, flask_client_transport
from tests.conftest import run_jobs

APP_URL = "https://app.example.test"
MANAGER, OTHER_MANAGER, QA, HEAD = 2, 3, 7, 9


def make_amo(app: Flask, subdomain: str = "acme", account_id: int = 30441694) -> tuple[AmoSandbox, Account]:
    """A sandbox account whose integration is this app (its client id, secret and redirect URI)."""
    sandbox = AmoSandbox(transport=flask_client_transport(app.test_client()))
    account = sandbox.seed_account(subdomain=subdomain, account_id=account_id, redirect_uri=f"{APP_URL}/amocrm/oauth")
    account.rate_limit = None  # tests of the 7 req/s limit switch it back on
    app.config.update(
        AMO_CLIENT_ID=account.client_id,
        AMO_CLIENT_SECRET=account.client_secret,
        AMO_REDIRECT_URI=account.redirect_uri,
        PUBLIC_URL=APP_URL,
        AMO_RATE=500.0,
        AMO_BURST=500,
    )
    return sandbox, account


@dataclass
class Amo:
    """The sandbox, one of its accounts, and the app's client."""

    app: Flask
    client: FlaskClient
    sandbox: AmoSandbox
    account: Account

    def state(self) -> str:
        """The signed state our install link carries."""
        response = self.client.get("/amocrm/install")
        assert response.status_code == 302
        return parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]

    def authorize(self, **extra: str) -> Any:
        """The admin allows access: amoCRM redirects the browser to our /amocrm/oauth."""
        query = {
            "code": self.sandbox.authorization_code(self.account),
            "state": self.state(),
            "referer": self.account.domain,
            "client_id": self.account.client_id,
            **extra,
        }
        return self.client.get("/amocrm/oauth", query_string=query)

    def install(self) -> Portal:
        """OAuth, then the installer job."""
        response = self.authorize()
        assert response.status_code == 200, response.get_data(as_text=True)
        self.work()
        portal = self.our_portal()
        assert portal.status == "installed", portal.status_detail
        return portal

    def our_portal(self) -> Portal:
        db.session.expire_all()
        portal = db.session.scalar(
            sa.select(Portal).where(Portal.crm == Portal.AMOCRM, Portal.external_id == str(self.account.id))
        )
        assert portal is not None
        return portal

    def deliver(self) -> list[Any]:
        return self.sandbox.deliver()

    def work(self) -> None:
        run_jobs(self.app)
        db.session.expire_all()

    def settle(self, rounds: int = 5) -> None:
        """Deliver webhooks and run jobs until nothing is left (our writes fire webhooks back)."""
        for _ in range(rounds):
            delivered = self.deliver()
            self.work()
            if not delivered and not self.sandbox.pending_hooks():
                return

    def status(self, lead_id: int) -> int:
        return self.sandbox.status_of(self.account, lead_id)[1]

    def statuses(self, pipeline: int | None = None) -> dict[str, int]:
        """Status ids of a pipeline (default the main one) by name; "refusal" is ours once installed."""
        pipeline_id = pipeline or self.account.main_pipeline()
        named = {s["name"]: s["id"] for s in self.account.pipelines[pipeline_id]["statuses"].values()}
        named["refusal"] = named.get("Условный отказ", 0)
        return named

    def pipelines(self) -> list[int]:
        return sorted(self.account.pipelines, key=lambda pid: self.account.pipelines[pid]["sort"])


def fill_refusal(amo: Amo, lead_id: int, user_id: int, reason: str | None = "price", comment: str = "") -> None:
    """The manager fills in the refusal fields in the lead card."""
    fields = amo.our_portal().settings["amo_fields"]
    values: dict[int, Any] = {fields["refusal_comment"]["field"]: comment}
    if reason is not None:
        values[fields["refusal_reason"]["field"]] = {"enum_id": fields["refusal_reason"]["enum"][reason]}
    amo.sandbox.act(amo.account, user_id).set_fields(lead_id, values)


def new_lead(
    amo: Amo, manager: int = MANAGER, status: str = "Переговоры", title: str = "Поставка станков", **kw
) -> int:
    """A manager creates a lead; the app sees it (snapshot) before anything else happens."""
    pipeline = kw.pop("pipeline", None)
    lead_id = amo.sandbox.act(amo.account, manager).create_lead(
        title, status_id=amo.statuses(pipeline)[status], price=150000, **kw
    )
    amo.settle()
    return lead_id


def notice_tasks(amo: Amo, user_id: int) -> list[dict[str, Any]]:
    """The notices a user got (amoCRM has no notification API): tasks linked to the lead they are about, marked
    as the app's notices, and tasks without a lead for the others."""
    return [
        t
        for t in amo.sandbox.tasks_for(amo.account, user_id=user_id)
        if t["entity_type"] is None or str(t["text"]).endswith(NOTICE_MARK)
    ]


def qa_tasks(amo: Amo, lead_id: int) -> list[dict[str, Any]]:
    """The lead's tasks, not the app's notices."""
    return [t for t in amo.sandbox.tasks_for(amo.account, lead_id=lead_id) if not str(t["text"]).endswith(NOTICE_MARK)]
