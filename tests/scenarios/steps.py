"""Steps shared by the scenario tests: a case in review, a reviewer with our tab open, moments in portal time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from werkzeug.test import TestResponse

from app.core.db import db
from app.core.models import RefusalCase, utcnow
from tests.scenarios.driver import MANAGER, CrmDriver, page_config


def the_case(deal_id: str) -> RefusalCase:
    """The deal's latest refusal case, fresh from the database."""
    db.session.expire_all()
    case = db.session.scalars(
        sa.select(RefusalCase).where(RefusalCase.deal_id == str(deal_id)).order_by(RefusalCase.id.desc())
    ).first()
    assert case is not None
    return case


def case_in_review(crm: CrmDriver, manager: int = MANAGER, stage: str = "working") -> tuple[str, RefusalCase]:
    """A manager closes a deal as lost with a reason: it lands in Conditional refusal with an open case."""
    deal_id = crm.new_deal(manager=manager, stage=stage)
    crm.fill_refusal(deal_id, manager, "price", "Клиент сказал, что дорого")
    crm.settle()
    crm.move(deal_id, "lost", by=manager)
    crm.settle()
    return deal_id, the_case(deal_id)


def local(minutes: float = 0, seconds: float = 0) -> str:
    """A moment from now as the tab's date-time field sends it (portal time, Moscow)."""
    moment = utcnow() + timedelta(minutes=minutes, seconds=seconds)
    return moment.astimezone(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%dT%H:%M:%S")


class Reviewer:
    """A user with our review tab open on a deal (Bitrix24 deal tab, amoCRM lead-card widget tab): reads the
    case and acts as the page would."""

    def __init__(self, crm: CrmDriver, user_id: int, deal_id: str) -> None:
        self.crm = crm
        self.user_id = user_id
        self.config = page_config(crm.open_review_page(user_id, deal_id))
        self.view = self.reload()

    @property
    def headers(self) -> dict[str, str]:
        return {"X-RC-Token": self.config["token"]}

    def reload(self) -> dict[str, Any]:
        answer = self.crm.client.get(self.config["caseUrl"], headers=self.headers)
        assert answer.status_code == 200, answer.get_json()
        self.view = answer.get_json()
        return self.view

    def post(self, action: str, note: str = "", view: dict[str, Any] | None = None, **params: str) -> TestResponse:
        """Submit an action with what the page showed (`view`, the last loaded one by default)."""
        shown = view or self.view
        return self.crm.client.post(
            self.config["actionUrl"].replace("ACTION", action),
            json={"version": shown["version"], "expected": shown["expected"], "note": note, "params": params},
            headers=self.headers,
        )

    def act(self, action: str, note: str = "", **params: str) -> dict[str, Any]:
        """Submit, expect success, let the CRM echo settle, reload."""
        answer = self.post(action, note, **params)
        assert answer.status_code == 200, answer.get_json()
        self.crm.settle()
        return self.reload()

    def get(self, url: str) -> TestResponse:
        """A GET of our API with this page's token."""
        return self.crm.client.get(url, headers=self.headers)
