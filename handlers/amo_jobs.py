"""Job-side processing of stored amoCRM webhooks (the wire format stays in handlers/)."""

from __future__ import annotations

import logging

from app import exchange, inbox, refusals
from app.crm.errors import AmoNotFound
from app.crm.factory import client_for
from app.db import db
from app.models import InboxItem, Portal
from handlers.amo_payloads import LeadChange

log = logging.getLogger(__name__)


def process_lead(item: InboxItem) -> None:
    """A lead changed: the lead exchange and duty rota route it (a new lead) or watch its responsible, then
    the guard decides; both re-read the lead (the mover comes from the re-read lead's updated_by)."""
    _account_id, change = LeadChange.from_json(item.body)
    portal = db.session.get(Portal, item.portal_id) if item.portal_id is not None else None
    if portal is None or portal.status != "installed":
        return
    crm = client_for(portal)
    event = exchange.DEAL_ADDED if change.action == "add" else exchange.DEAL_UPDATED
    try:
        exchange.on_deal_event(portal, crm, event, change.lead_id)
        refusals.Guard(portal, crm).decide(change.lead_id)
    except AmoNotFound:
        db.session.rollback()
        refusals.forget_deal(portal.id, change.lead_id)


def process_lead_delete(item: InboxItem) -> None:
    """A lead was deleted: forget its snapshot."""
    _account_id, change = LeadChange.from_json(item.body)
    if item.portal_id is not None:
        refusals.forget_deal(item.portal_id, change.lead_id)


def register_processors() -> None:
    """Tell the inbox which function handles which stored amoCRM call."""
    inbox.PROCESSORS[("amo", "lead")] = process_lead
    inbox.PROCESSORS[("amo", "lead_delete")] = process_lead_delete
