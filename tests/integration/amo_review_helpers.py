"""The QA review on an amoCRM account: the widget's lead-card tab opens our page, which acts through the API."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from app.db import db
from app.models import RefusalCase
from tests.integration.amo import APP_URL, MANAGER, Amo, fill_refusal, new_lead
from tests.integration.review_helpers import the_case

LOST = 143
_CONFIG = re.compile(r'<script id="rc-config" type="application/json">(.*?)</script>', re.S)


def widget_session(amo: Amo, user_id: int, lead_id: int | str | None = None) -> Any:
    """What the widget's `$authorizedAjax` call does when a user opens our tab in a lead card."""
    return amo.client.post(
        "/amocrm/widget/session",
        headers={
            "X-Auth-Token": amo.sandbox.widget_token(amo.account, user_id, APP_URL),
            "Origin": f"https://{amo.account.domain}",
        },
        json={"lead_id": "" if lead_id is None else str(lead_id)},
    )


def open_lead_tab(amo: Amo, user_id: int, lead_id: int | str | None = None) -> Any:
    """The iframe loads the URL the session answered with."""
    answer = widget_session(amo, user_id, lead_id)
    assert answer.status_code == 200, answer.get_json()
    return amo.client.get(answer.get_json()["url"].removeprefix(APP_URL))


def page_config(page: Any) -> dict[str, Any]:
    assert page.status_code == 200, page.get_data(as_text=True)
    found = _CONFIG.search(page.get_data(as_text=True))
    assert found, "the page has no config (no case on this lead?)"
    return json.loads(html.unescape(found.group(1)))


class AmoReviewer:
    """A user with the lead-card tab open on a lead: reads the case and acts as the page would."""

    def __init__(self, amo: Amo, user_id: int, lead_id: int | str) -> None:
        self.amo = amo
        self.user_id = user_id
        self.config = page_config(open_lead_tab(amo, user_id, lead_id))
        self.view = self.reload()

    @property
    def headers(self) -> dict[str, str]:
        return {"X-RC-Token": self.config["token"]}

    def reload(self) -> dict[str, Any]:
        answer = self.amo.client.get(self.config["caseUrl"], headers=self.headers)
        assert answer.status_code == 200, answer.get_json()
        self.view = answer.get_json()
        return self.view

    def post(self, action: str, note: str = "", **params: str) -> Any:
        return self.amo.client.post(
            self.config["actionUrl"].replace("ACTION", action),
            json={"version": self.view["version"], "expected": self.view["expected"], "note": note, "params": params},
            headers=self.headers,
        )

    def act(self, action: str, note: str = "", **params: str) -> dict[str, Any]:
        answer = self.post(action, note, **params)
        assert answer.status_code == 200, answer.get_json()
        self.amo.settle()
        return self.reload()


def lead_in_review(amo: Amo, manager: int = MANAGER, **lead: Any) -> tuple[int, RefusalCase]:
    """A manager closes a lead as lost with a reason: it lands in Conditional refusal with an open case."""
    lead_id = new_lead(amo, manager=manager, **lead)
    fill_refusal(amo, lead_id, manager, "price", "Клиент сказал, что дорого")
    amo.settle()
    amo.sandbox.act(amo.account, manager).move_lead(lead_id, LOST)
    amo.settle()
    db.session.expire_all()
    return lead_id, the_case(lead_id)


def lead_field(amo: Amo, lead_id: int, name: str) -> Any:
    """One of our custom fields on the lead in amoCRM, decoded to our code for enumerations."""
    spec = amo.our_portal().settings["amo_fields"][name]
    values = amo.sandbox.lead(amo.account, lead_id)["cf"].get(int(spec["field"])) or []
    if not values:
        return None
    if spec.get("enum"):
        codes = {enum_id: code for code, enum_id in spec["enum"].items()}
        return codes.get(values[0].get("enum_id"))
    return values[0].get("value")
