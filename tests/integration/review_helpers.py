"""Steps of the QA review through the deal tab's HTTP API, against the sandbox portal."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import sqlalchemy as sa

from app.db import db
from app.models import RefusalCase
from tests.integration.b24 import B24, fill_refusal, new_deal

MANAGER, OTHER_MANAGER, QA, QA2, HEAD = 2, 3, 7, 8, 9
_CONFIG = re.compile(r'<script id="rc-config" type="application/json">(.*?)</script>', re.S)


def tab_form(b24: B24, user_id: int, deal_id: int | str) -> dict[str, str]:
    """The frame POST Bitrix24 sends when a user opens the review tab of a deal card."""
    return b24.frame(
        user_id,
        PLACEMENT="CRM_DEAL_DETAIL_TAB",
        PLACEMENT_OPTIONS=json.dumps({"ID": str(deal_id), "URI": f"/crm/deal/details/{deal_id}/?IFRAME=Y"}),
    )


def open_tab(b24: B24, user_id: int, deal_id: int | str) -> Any:
    return b24.client.post(
        f"/b24/placement/deal-tab?DOMAIN={b24.portal.domain}&LANG=ru", data=tab_form(b24, user_id, deal_id)
    )


def tab_config(b24: B24, user_id: int, deal_id: int | str) -> dict[str, Any]:
    """Open the tab and read the page's config (token and URLs)."""
    page = open_tab(b24, user_id, deal_id)
    assert page.status_code == 200, page.get_data(as_text=True)
    found = _CONFIG.search(page.get_data(as_text=True))
    assert found, "the tab has no case"
    return json.loads(html.unescape(found.group(1)))


class Reviewer:
    """A user with the tab open on a deal: reads the case, acts as the page would."""

    def __init__(self, b24: B24, user_id: int, deal_id: int | str) -> None:
        self.b24 = b24
        self.user_id = user_id
        self.config = tab_config(b24, user_id, deal_id)
        self.view = self.reload()

    @property
    def headers(self) -> dict[str, str]:
        return {"X-RC-Token": self.config["token"]}

    def reload(self) -> dict[str, Any]:
        answer = self.b24.client.get(self.config["caseUrl"], headers=self.headers)
        assert answer.status_code == 200, answer.get_json()
        self.view = answer.get_json()
        return self.view

    def post(self, action: str, note: str = "", view: dict[str, Any] | None = None, **params: str) -> Any:
        """Submit an action with what the page showed (`view`, the last loaded one by default)."""
        shown = view or self.view
        return self.b24.client.post(
            self.config["actionUrl"].replace("ACTION", action),
            json={"version": shown["version"], "expected": shown["expected"], "note": note, "params": params},
            headers=self.headers,
        )

    def act(self, action: str, note: str = "", **params: str) -> dict[str, Any]:
        """Submit, expect success, let the CRM echo settle, reload."""
        answer = self.post(action, note, **params)
        assert answer.status_code == 200, answer.get_json()
        self.b24.settle()
        return self.reload()


def case_in_review(b24: B24, manager: int = MANAGER, stage: str = "PREPARATION") -> tuple[int, RefusalCase]:
    """A manager closes a deal as lost with a reason: it lands in Conditional refusal with an open case."""
    deal_id = new_deal(b24, manager=manager, stage=stage)
    fill_refusal(b24, deal_id, manager, "price", "Клиент сказал, что дорого")
    b24.settle()
    b24.sandbox.act(b24.portal, manager).move_deal(
        deal_id, "LOSE" if ":" not in stage else stage.split(":")[0] + ":LOSE"
    )
    b24.settle()
    return deal_id, the_case(deal_id)


def the_case(deal_id: int | str) -> RefusalCase:
    db.session.expire_all()
    case = db.session.scalars(
        sa.select(RefusalCase).where(RefusalCase.deal_id == str(deal_id)).order_by(RefusalCase.id.desc())
    ).first()
    assert case is not None
    return case


def deal_field(b24: B24, deal_id: int, name: str) -> Any:
    """A custom field of ours on the deal in the CRM, decoded to our code for enumerations."""
    spec = b24.our_portal().settings["b24_fields"][name]
    raw = b24.sandbox.deal(b24.portal, deal_id).get(spec["field"])
    enum = {str(item): code for code, item in (spec.get("enum") or {}).items()}
    return enum.get(str(raw), raw) if enum else raw
