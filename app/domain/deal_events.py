"""One way for a deal event, whatever the CRM: the exchange's rules, then the guard's.

Handlers translate their CRM's wire format into these calls and nothing else; the rules re-read the deal
from the CRM and never trust a payload.
"""

from __future__ import annotations

from app.core.models import Portal
from app.crm.port import CrmClient
from app.domain import exchange, guard


def deal_changed(
    portal: Portal, crm: CrmClient, deal_id: str, *, is_new: bool, automation: bool = False, routing: bool = True
) -> None:
    """A deal was created or changed: route or watch it on the exchange (unless `routing` is off, as for a
    move to another pipeline), then let the guard decide. `automation`: the change carried no user's token."""
    if routing:
        exchange.on_deal_event(portal, crm, deal_id, is_new=is_new, automation=automation)
    guard.Guard(portal, crm).decide(deal_id, automation=automation)


def deal_deleted(portal_id: int, deal_id: str) -> None:
    """A deal was deleted: forget what we remembered of it."""
    guard.forget_deal(portal_id, deal_id)
