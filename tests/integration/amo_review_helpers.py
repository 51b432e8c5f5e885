"""The QA review on an amoCRM account: the widget's lead-card tab opens our page, which acts through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.core.db import db
from app.core.models import RefusalCase
from tests.integration.amo import APP_URL, MANAGER, Amo, fill_refusal, new_lead
from tests.integration.review_helpers import page_config, the_case

if TYPE_CHECKING:
    from tests.scenarios.steps import Reviewer

__all__ = ["amo_reviewer", "lead_in_review", "open_lead_tab", "page_config", "widget_session"]

LOST = 143


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


def amo_reviewer(amo: Amo, user_id: int, lead_id: int | str) -> Reviewer:
    """A user with the lead-card tab open on a lead (the scenario suite's Reviewer)."""
    from tests.scenarios.driver import AmoDriver
    from tests.scenarios.steps import Reviewer

    return Reviewer(AmoDriver(amo), user_id, str(lead_id))


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
