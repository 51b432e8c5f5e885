"""Steps of the QA review through the deal tab's HTTP API, against the sandbox portal."""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from app.core.db import db
from app.core.models import RefusalCase
from tests.integration.b24 import B24, fill_refusal, new_deal

if TYPE_CHECKING:
    from tests.scenarios.steps import Reviewer

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


def page_config(page: Any) -> dict[str, Any]:
    """The config (token and API URLs) our review page carries, on either CRM."""
    assert page.status_code == 200, page.get_data(as_text=True)
    found = _CONFIG.search(page.get_data(as_text=True))
    assert found, "the page has no case config"
    return json.loads(html.unescape(found.group(1)))


def tab_config(b24: B24, user_id: int, deal_id: int | str) -> dict[str, Any]:
    """Open the tab and read the page's config (token and URLs)."""
    return page_config(open_tab(b24, user_id, deal_id))


def reviewer(b24: B24, user_id: int, deal_id: int | str) -> Reviewer:
    """A user with the review tab open on a Bitrix24 deal (the scenario suite's Reviewer)."""
    from tests.scenarios.driver import B24Driver
    from tests.scenarios.steps import Reviewer

    return Reviewer(B24Driver(b24), user_id, str(deal_id))


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
