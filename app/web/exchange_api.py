"""JSON endpoints of the lead exchange page and its settings (identity from the signed X-RC-Token header)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from app.core import i18n
from app.core.db import db
from app.core.models import ExchangeLot, Portal, utcnow
from app.core.timezones import portal_zone, zone_name
from app.core.validation import json_body
from app.crm.errors import CrmError
from app.crm.factory import client_for
from app.crm.port import CrmClient
from app.domain import abc, audit, directory, exchange, reports
from app.web.api import save_settings
from app.web.errors import page_language
from app.web.permissions import ADMIN, require_role

bp = Blueprint("exchange_api", __name__, url_prefix="/api/exchange")


def _decimal_arg(name: str) -> Decimal | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return Decimal(raw.replace(",", ".").replace(" ", ""))
    except InvalidOperation:
        abort(400, description=f"{name}: not a number")


def _sources(portal: Portal) -> dict[str, str]:
    """The portal's lead sources by id (empty when the CRM does not answer: the ids are shown then)."""
    try:
        return {source.id: source.name for source in reports.lead_sources(portal)}
    except CrmError:
        return {}


def _lot_json(
    portal: Portal, crm: CrmClient, lot: ExchangeLot, now: datetime, sources: dict[str, str], abc_class: str = ""
) -> dict[str, Any]:
    amount = Decimal(lot.amount or "0")
    return {
        "id": lot.id,
        "deal_id": lot.deal_id,
        "title": lot.title,
        "url": crm.deal_url(lot.deal_id),
        "pipeline_id": lot.pipeline_id,
        "amount": str(amount),
        "amount_text": i18n.money(amount, lot.currency, page_language()),
        "source_id": lot.source_id,
        "source_name": sources.get(lot.source_id or "", lot.source_id or "—"),
        "department_id": lot.department_id,
        "pooled_at": lot.pooled_at.isoformat(),
        "pooled_text": i18n.when(lot.pooled_at, page_language(), zone_name(portal)),
        "age_hours": int((now - lot.pooled_at).total_seconds() // 3600),
        "status": lot.status,
        "abc_class": abc_class,
    }


@bp.get("/lots")
def list_lots() -> ResponseReturnValue:
    """Open pool deals the user may take (class A, B, C, then unclassified, each oldest first; filters: source,
    pipeline, min/max amount), and his own."""
    access = require_role()
    identity, portal = access.identity, access.portal
    crm = client_for(portal)
    source = request.args.get("source", "").strip()
    pipeline = request.args.get("pipeline", "").strip()
    low, high = _decimal_arg("min_amount"), _decimal_arg("max_amount")
    role = access.role
    try:
        member_of = next(
            (set(u.department_ids) for u in directory.users(portal.id, crm) if u.id == identity.user_id), set()
        )
    except CrmError as error:
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    now = utcnow()
    sources = _sources(portal)
    lots = []
    for lot, abc_class in exchange.open_lots(portal.id, source=source, pipeline=pipeline):
        if lot.department_id and role not in ("admin", "head") and lot.department_id not in member_of:
            continue
        amount = Decimal(lot.amount or "0")
        if (low is not None and amount < low) or (high is not None and amount > high):
            continue
        lots.append(_lot_json(portal, crm, lot, now, sources, abc_class))
    mine = db.session.scalars(
        sa.select(ExchangeLot)
        .where(
            ExchangeLot.portal_id == portal.id,
            ExchangeLot.status == ExchangeLot.TAKEN,
            ExchangeLot.holder_id == identity.user_id,
        )
        .order_by(ExchangeLot.taken_at)
    ).all()
    classes = abc.classes_of(portal.id, [lot.deal_id for lot in mine])
    return jsonify(
        lots=lots,
        mine=[_lot_json(portal, crm, lot, now, sources, classes.get(lot.deal_id, "")) for lot in mine],
        role=role,
        sources=[{"id": key, "name": name} for key, name in sources.items()],
    )


@bp.post("/lots/<int:lot_id>/claim")
def claim_lot(lot_id: int) -> ResponseReturnValue:
    """Take a pool deal: one winner; the others get 409 «already taken»; the cap holds."""
    access = require_role()
    identity, portal = access.identity, access.portal
    lot = access.own(ExchangeLot, lot_id)
    crm = client_for(portal)
    if access.role == "qa":
        abort(403, description="QA staff do not take deals from the exchange")
    try:
        taken = exchange.claim(portal, crm, lot, identity.user_id)
    except exchange.ClaimRefused as refused:
        return jsonify(error=refused.code, message=refused.message), refused.status
    except CrmError as error:
        db.session.rollback()
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    return jsonify(ok=True, claim_id=taken.id, deal_id=taken.deal_id)


@bp.post("/lots/<int:lot_id>/return")
def return_lot(lot_id: int) -> ResponseReturnValue:
    """Give a taken deal back to the exchange with a reason (the holder, a head or an admin)."""
    access = require_role()
    identity, portal = access.identity, access.portal
    lot = access.own(ExchangeLot, lot_id)
    body = json_body()
    reason = str(body.get("reason") or "").strip() if isinstance(body, dict) else ""
    if not reason:
        return jsonify(error="bad_request", message="a reason is required"), 400
    access.require(
        ADMIN,
        "head",
        forbidden="only the manager holding the deal, a head or an admin can return it",
        unless=lot.holder_id == identity.user_id,
    )
    crm = client_for(portal)
    try:
        returned = exchange.return_to_pool(portal, crm, lot, identity.user_id, reason[:1000])
    except exchange.ClaimRefused as refused:
        return jsonify(error=refused.code, message=refused.message), refused.status
    except CrmError as error:
        db.session.rollback()
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    return jsonify(ok=True, claim_id=returned.id)


@bp.get("/settings")
def get_settings() -> ResponseReturnValue:
    """Routing settings per pipeline, with the people, departments and pipelines to pick from (admins)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the exchange settings").portal
    crm = client_for(portal)
    try:
        users = directory.users(portal.id, crm)
        pipelines = directory.pipelines(portal.id, crm)
        departments = crm.list_departments()
    except CrmError as error:
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    return jsonify(
        settings=exchange.settings_as_dict(portal),
        users=[{"id": u.id, "name": u.name, "active": u.active, "departments": list(u.department_ids)} for u in users],
        departments=[{"id": d.id, "name": d.name, "head_id": d.head_id} for d in departments],
        pipelines=[{"id": p.id, "name": p.name} for p in pipelines],
        sources=[{"id": key, "name": name} for key, name in _sources(portal).items()],
    )


@bp.put("/settings")
def put_settings() -> ResponseReturnValue:
    """Validate and store routing settings (admins only); 400 names each wrong field."""
    return save_settings(
        exchange.update_exchange_settings,
        lambda portal, _stored: exchange.settings_as_dict(portal),
        forbidden="only a portal administrator can change the exchange settings",
        invalid="invalid settings",
        audit_action="change exchange settings",
        audit_details=lambda _changes, _stored: {},
    )


def _month_bounds(raw: str, portal: Portal) -> tuple[date, date]:
    if not raw:
        first = exchange.portal_day(portal, utcnow()).replace(day=1)
    else:
        try:
            year, month = (int(part) for part in raw.split("-"))
            first = date(year, month, 1)
        except ValueError:
            abort(400, description="month: expected YYYY-MM")
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, following - timedelta(days=1)


@bp.get("/rota")
def get_rota() -> ResponseReturnValue:
    """A department's duty days in a month (admins and heads)."""
    portal = require_role(ADMIN, "head", forbidden="only an admin or a head can see the duty rota").portal
    department_id = request.args.get("department_id", "").strip()
    if not department_id:
        return jsonify(error="bad_request", message="department_id is required"), 400
    first, last = _month_bounds(request.args.get("month", "").strip(), portal)
    days = exchange.rota(portal.id, department_id, first, last)
    return jsonify(
        department_id=department_id,
        month=first.strftime("%Y-%m"),
        days={day.isoformat(): user for day, user in sorted(days.items())},
    )


@bp.put("/rota")
def put_rota() -> ResponseReturnValue:
    """Set duty days of a department: {"department_id": "2", "days": {"2026-05-01": "3", "2026-05-02": null}}."""
    access = require_role(ADMIN, forbidden="only a portal administrator can edit the duty rota")
    identity, portal = access.identity, access.portal
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("days"), dict) or not body.get("department_id"):
        return jsonify(
            error="bad_request", message="expected {department_id, days: {YYYY-MM-DD: user id or null}}"
        ), 400
    crm = client_for(portal)
    try:
        active = {u.id for u in directory.users(portal.id, crm) if u.active}
    except CrmError as error:
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    days: dict[date, str | None] = {}
    problems: dict[str, str] = {}
    for raw_day, user in body["days"].items():
        try:
            day = date.fromisoformat(str(raw_day))
        except ValueError:
            problems[str(raw_day)] = "not a date (YYYY-MM-DD)"
            continue
        if user in (None, ""):
            days[day] = None
        elif str(user) not in active:
            problems[str(raw_day)] = f"no active user {user}"
        else:
            days[day] = str(user)
    if problems:
        return jsonify(error="bad_request", message="invalid rota", fields=problems), 400
    department_id = str(body["department_id"])
    exchange.set_rota(portal.id, department_id, days)
    assignments = {day.isoformat(): user for day, user in sorted(days.items())}
    audit.record(portal.id, identity.user_id, "edit duty rota", "saved", department_id=department_id, days=assignments)
    db.session.commit()
    return jsonify(ok=True, saved=len(days))


@bp.get("/stats")
def stats() -> ResponseReturnValue:
    """Per manager: taken, returned, auto-returned in [from, to) (dates; admins and heads)."""
    portal = require_role(ADMIN, "head", forbidden="only an admin or a head can see exchange statistics").portal
    try:
        start = date.fromisoformat(request.args.get("from", "")) if request.args.get("from") else None
        end = date.fromisoformat(request.args.get("to", "")) if request.args.get("to") else None
    except ValueError:
        return jsonify(error="bad_request", message="from/to: expected YYYY-MM-DD"), 400
    zone = portal_zone(portal)  # the dates are the portal's calendar days
    end_at = datetime.combine(end, datetime.min.time(), zone) if end else utcnow() + timedelta(seconds=1)
    start_at = datetime.combine(start, datetime.min.time(), zone) if start else end_at - timedelta(days=30)
    rows = exchange.claim_stats(portal.id, start_at, end_at)
    return jsonify(
        managers=[
            {
                "manager_id": r.manager_id,
                "taken": r.taken,
                "returned": r.returned,
                "auto_returned": r.auto_returned,
                "won": r.won,
                "lost": r.lost,
                "mean_wait_hours": None if r.mean_wait_seconds is None else round(r.mean_wait_seconds / 3600, 1),
            }
            for r in rows
        ]
    )


def duty_panel(portal: Portal) -> list[exchange.DutyWeek]:
    """The main page's duty rota for everyone: today's and this week's manager on duty per duty department."""
    return exchange.duty_overview(portal, client_for(portal))


@bp.app_context_processor
def inject_duty_panel() -> dict[str, object]:
    """Templates ask `duty_panel(portal)` for the rota shown on the main page."""
    return {"duty_panel": duty_panel}
