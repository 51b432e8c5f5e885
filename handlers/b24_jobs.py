"""Job-side processing of stored Bitrix24 calls (the wire format stays in handlers/)."""

from __future__ import annotations

import logging

from marshmallow import ValidationError

from app.core import inbox
from app.core.db import db
from app.core.models import InboxItem, Portal
from app.core.queue import enqueue
from app.crm.bitrix24 import Bitrix24Rest
from app.crm.factory import client_for
from app.crm.port import AUTOMATION
from app.domain import deal_events
from app.domain.robots import REGISTRY, RobotInvocation
from handlers.b24_payloads import B24Event, parse_event, parse_robot_call
from installers import bitrix24 as installer

log = logging.getLogger(__name__)


def process_uninstall(item: InboxItem) -> None:
    """ONAPPUNINSTALL: mark the portal uninstalled; data[CLEAN]=1 removes its data."""
    event = parse_event(item.body)
    clean = str(event.data.get("CLEAN", "0")) == "1"
    assert item.portal_id is not None
    installer.uninstall(item.portal_id, keep_inbox_id=item.id, clean=clean)


def process_update(item: InboxItem) -> None:
    """ONAPPUPDATE: bindings are dropped on update, so run the installer again (repair)."""
    assert item.portal_id is not None
    enqueue("default", "app.jobs.install_bitrix24", item.portal_id)


def process_robot(item: InboxItem) -> None:
    """Run a robot's handler and send its return values back to the waiting workflow."""
    call = parse_robot_call(item.body)
    robot = REGISTRY[call.code]
    assert item.portal_id is not None
    invocation = RobotInvocation(
        portal_id=item.portal_id,
        code=call.code,
        deal_id=call.deal_id,
        properties=call.properties,
        user_id=call.auth.user_id,
        event_token=call.event_token or "",
    )
    values = robot.handler(invocation)
    if call.event_token:
        Bitrix24Rest(item.portal_id).call(
            "bizproc.event.send",
            {"event_token": call.event_token, "return_values": values, "log_message": f"Refusal Control: {call.code}"},
        )


GROUPED_EVENTS = ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY")


def deal_event(item: InboxItem, event: B24Event | None = None) -> deal_events.DealEvent | None:
    """The domain's view of a stored deal event (None for a body that names no deal); `event`: its body already
    parsed."""
    event = event if event is not None else parse_event(item.body)
    if event.event not in GROUPED_EVENTS or not event.entity_id:
        return None
    stage = event.data.get("FIELDS", {}).get("STAGE_ID") if isinstance(event.data.get("FIELDS"), dict) else None
    return deal_events.DealEvent(
        event.entity_id,
        is_new=event.event == "ONCRMDEALADD",
        automation=not event.auth.has_user_token,
        routing=event.event != "ONCRMDEALMOVETOCATEGORY",
        stamp=int(event.ts) if event.ts.isdigit() else None,
        stage_id=str(stage) if stage else None,
        ref=item.id,
    )


def _waiting(item: InboxItem) -> list[deal_events.DealEvent]:
    """The portal's other deal events already stored and not yet decided (bodies that do not parse are left to
    their own jobs, which record why)."""
    found = []
    for row in inbox.waiting_rows(item):
        try:
            event = deal_event(row)
        except ValidationError:
            continue
        if event is not None:
            found.append(event)
    return found


def process_deal_event(item: InboxItem) -> None:
    """A deal changed: re-read it and let the guard decide (robot-made changes carry no user token), together
    with the portal's other deal events already waiting."""
    event = parse_event(item.body)
    assert item.portal_id is not None
    portal = db.session.get(Portal, item.portal_id)
    if portal is None or portal.status != "installed" or not event.entity_id:
        return
    if event.event == "ONCRMDEALDELETE":
        # auth[user_id] is who deleted the deal; a robot, workflow or agent sends no user token.
        by = (event.auth.user_id or None) if event.auth.has_user_token else AUTOMATION
        deal_events.deal_deleted(portal, client_for(portal), event.entity_id, by=by)
        return
    lead = deal_event(item, event)
    assert lead is not None
    deal_events.deals_changed(
        portal,
        client_for(portal),
        lead,
        waiting=lambda: _waiting(item),
        settled=lambda: inbox.is_done(item.id),
        claimed=inbox.claim_rows,
        finished=inbox.finish_rows,
    )


def register_processors() -> None:
    """Tell the inbox which function handles which stored Bitrix24 call."""
    inbox.PROCESSORS[("b24", "ONAPPUNINSTALL")] = process_uninstall
    inbox.PROCESSORS[("b24", "ONAPPUPDATE")] = process_update
    inbox.PROCESSORS[("b24", "robot")] = process_robot
    for event in (*GROUPED_EVENTS, "ONCRMDEALDELETE"):
        inbox.PROCESSORS[("b24", event)] = process_deal_event
    inbox.GROUP_KINDS["b24"] = GROUPED_EVENTS
