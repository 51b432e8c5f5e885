"""Reports for heads of sales, the penalty appeal, and the admin's CPL and report-schedule settings."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, abort, jsonify, make_response, render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from marshmallow import ValidationError
from redis.exceptions import RedisError

from app.core import i18n
from app.core.db import db
from app.core.models import Portal
from app.core.queue import enqueue
from app.core.timezones import zone_label
from app.core.validation import json_body
from app.crm.errors import CrmError
from app.crm.factory import client_for
from app.domain import abc, directory, exchange, ledger, penalties, recovery, reports, review_text
from app.domain.settings import guard_settings
from app.web import charts
from app.web.api import save_settings
from app.web.permissions import ADMIN, require_role

log = logging.getLogger(__name__)
bp = Blueprint("reports_api", __name__, url_prefix="/api")
CSV_TABLES = (*reports.TABLES, "ledger", *recovery.TABLES, "exchange", *abc.TABLES)
ADMIN_ONLY = "only a portal administrator can change these settings"

i18n.register(
    {
        "appeal_own_fine": (
            "Свой штраф отменить нельзя: попросите другого руководителя отдела продаж или администратора портала.",
            "You cannot cancel your own fine: ask another head of sales or the portal administrator.",
        ),
    }
)


def page_role(portal: Portal, user_id: str) -> str:
    """The user's role on this portal (head, qa, exempt, manager); `manager` when the CRM cannot say."""
    try:
        return directory.role_of(portal.id, client_for(portal), guard_settings(portal), user_id)
    except (CrmError, ValueError):
        log.warning("role check failed", extra={"portal_id": portal.id})
        return "manager"


def is_head(portal: Portal, user_id: str) -> bool:
    """Whether the user is a head of sales on this portal (False when the CRM cannot say)."""
    return page_role(portal, user_id) == "head"


HEADS_ONLY = "reports and penalty appeals are for heads of sales and the portal administrator"


def _period(portal: Portal) -> reports.Period:
    try:
        return reports.parse_period(portal, request.args.get("from"), request.args.get("to"))
    except reports.PeriodError as error:
        abort(400, description=str(error))


@bp.get("/reports")
def report_data() -> ResponseReturnValue:
    """Every figure of the period as JSON (heads only)."""
    access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
    portal = access.portal
    period = _period(portal)
    names = reports.lookup_names(portal)
    report = reports.build_report(portal, period, names, access.language)
    stats = exchange.claim_stats(portal.id, period.start, period.end)
    return jsonify(
        {
            **reports.report_json(report),
            "recovery": recovery.recovery_json(recovery.build(portal, period, names, access.language)),
            "exchange": [{**asdict(row), "name": names.users.get(row.manager_id, row.manager_id)} for row in stats],
        }
    )


def _chart(
    draw: Callable[[str, list[str], list[charts.Series]], Markup],
    name: str,
    title: str,
    categories: list[str],
    series: list[charts.Series],
    language: str,
) -> Markup:
    """The chart, or, when the period gives it nothing but zeros, its title and a sentence saying so."""
    if not categories or not charts.has_data(series):
        return charts.empty(name, title, i18n.translate("chart_empty", language))
    return draw(title, categories, series)


def _charts(report: reports.Report, language: str) -> dict[str, Any]:
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    return {
        "trend": _chart(
            charts.line_chart,
            "trend",
            t("chart_trend"),
            [date.fromisoformat(row["week"]).strftime("%d.%m") for row in report.weeks],
            [
                charts.Series(t("chart_cases"), [row["cases"] for row in report.weeks], "cases"),
                charts.Series(t("col_confirmed"), [row["confirmed"] for row in report.weeks], "confirmed"),
                charts.Series(t("col_leaks"), [row["leaks"] for row in report.weeks], "leaks"),
            ],
            language,
        ),
        "managers": _chart(
            charts.bar_chart,
            "managers",
            t("chart_managers"),
            [row["name"] for row in report.managers],
            [
                charts.Series(t("chart_cases"), [row["cases"] for row in report.managers], "cases"),
                charts.Series(t("col_leaks"), [row["leaks"] for row in report.managers], "leaks"),
            ],
            language,
        ),
        "reasons": _chart(
            charts.bar_chart,
            "reasons",
            t("chart_reasons"),
            [row["name"] for row in report.reasons],
            [
                charts.Series(t("col_claimed"), [row["claimed"] for row in report.reasons], "claimed"),
                charts.Series(t("col_confirmed"), [row["confirmed"] for row in report.reasons], "confirmed"),
            ],
            language,
        ),
    }


@bp.get("/reports/view")
def report_view() -> ResponseReturnValue:
    """The reports tab's content for the period: tables, SVG charts and the ledger (heads only)."""
    access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
    identity, portal = access.identity, access.portal
    period = _period(portal)
    names = reports.lookup_names(portal)
    language = access.language
    report = reports.build_report(portal, period, names, language)
    pipelines = _pipeline_names(portal)
    return render_template(
        "b24/report.html",
        lang=language,
        timezone=reports.zone_name(portal),
        timezone_label=zone_label(reports.zone_name(portal), language, period.end),
        period=period,
        report=report,
        tables=reports.tables(report, language),
        charts=_charts(report, language),
        ledger=ledger.ledger_rows(portal.id, period.start, period.end),
        users=names.users,
        viewer=identity.user_id,
        rule_text=lambda rule: review_text.cpl_rule_text(rule, language, names.sources, pipelines),
        **_team_sections(portal, period, names, language),
    )


def _team_sections(portal: Portal, period: reports.Period, names: reports.Names, language: str) -> dict[str, Any]:
    """The sections of the reports page that follow the team's results: the revenue returned from false
    refusals (figures and tables), the lead exchange per manager, and the deals by ABC class."""
    saved = recovery.build(portal, period, names, language)
    return {
        "recovery": saved,
        "recovery_tables": recovery.tables(saved, language),
        "exchange_table": _exchange_table(portal, period, names, language),
        "abc_table": abc.table(abc.by_class(portal.id, period), language),
    }


def _exchange_table(portal: Portal, period: reports.Period, names: reports.Names, language: str) -> reports.Table:
    rows = exchange.claim_stats(portal.id, period.start, period.end)
    return exchange.stats_table(rows, names.users, language)


def _pipeline_names(portal: Portal) -> dict[str, str]:
    """Pipelines by id for the CPL rules of fines (empty when the CRM does not answer)."""
    try:
        return {pipeline.id: pipeline.name for pipeline in directory.pipelines(portal.id, client_for(portal))}
    except CrmError:
        return {}


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading `'` when it starts like a formula (OWASP)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def csv_bytes(table: reports.Table, language: str) -> bytes:
    """A table as CSV that Excel opens with Cyrillic intact: UTF-8 with a BOM, `;` and decimal commas for
    Russian, `,` and decimal points for English.

    Formula injection: every *text* cell (deal titles, names, reasons, notes, headers; str in the table)
    that starts with `=`, `+`, `-`, `@`, a tab or a CR is prefixed with `'`, so `=HYPERLINK(...)` or
    `-2+3` typed into a deal title is shown as text, never evaluated. Numbers are cells the reports write
    themselves (int and Decimal: counts, rates, fine amounts, a reversal's negative amount): they are
    written as plain numbers, `-500,00` included, so the sheet still adds them up; nothing a user typed can
    reach a cell as a number.
    """
    russian = language != "en"
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";" if russian else ",", lineterminator="\r\n")

    def text(value: reports.Cell) -> str:
        if value is None:
            return ""
        if isinstance(value, Decimal):
            return str(value).replace(".", ",") if russian else str(value)
        if isinstance(value, int):
            return str(value)
        return neutralise(str(value))

    writer.writerow([text(column) for column in table.columns])
    for row in table.rows:
        writer.writerow([text(cell) for cell in row])
    if table.total is not None:
        writer.writerow([text(cell) for cell in table.total])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


@bp.get("/reports/<name>.csv")
def report_csv(name: str) -> ResponseReturnValue:
    """One table of the period as a CSV download (heads only), in the language of the page that asked for it
    (`X-RC-Lang`): its headers, names, separators and decimal commas."""
    access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
    portal = access.portal
    if name not in CSV_TABLES:
        abort(404, description=f"no table {name!r}; tables: {', '.join(CSV_TABLES)}")
    period = _period(portal)
    names = reports.lookup_names(portal)
    language = access.language
    if name == "ledger":
        rows = ledger.ledger_rows(portal.id, period.start, period.end)
        table = reports.ledger_table(rows, names, language, period.timezone)
    elif name in recovery.TABLES:
        table = recovery.tables(recovery.build(portal, period, names, language), language)[name]
    elif name == "exchange":
        table = _exchange_table(portal, period, names, language)
    elif name in abc.TABLES:
        table = abc.table(abc.by_class(portal.id, period), language)
    else:
        table = reports.tables(reports.build_report(portal, period, names, language), language)[name]
    return csv_download(name, period, table, language)


def csv_download(name: str, period: reports.Period, table: reports.Table, language: str) -> Response:
    """A table as a CSV attachment named after it and the period."""
    filename = f"refusal-control-{name}-{period.first.isoformat()}-{period.last.isoformat()}.csv"
    return Response(
        csv_bytes(table, language),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


SectionTable = Callable[[Portal, reports.Period, reports.Names, str], reports.Table]


def section_csv(name: str, build: SectionTable) -> Response:
    """A report section's table of the period (`from`/`to`) as a CSV download, heads only, in the page's
    language."""
    access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
    period = _period(access.portal)
    table = build(access.portal, period, reports.lookup_names(access.portal), access.language)
    return csv_download(name, period, table, access.language)


@bp.get("/reports/ledger")
def ledger_data() -> ResponseReturnValue:
    """Fines issued in the period with their cancellations (heads only)."""
    portal = require_role("head", ADMIN, forbidden=HEADS_ONLY).portal
    period = _period(portal)
    rows = ledger.ledger_rows(portal.id, period.start, period.end, request.args.get("manager") or None)
    return jsonify(
        period=period.as_dict(),
        rows=[
            {
                "id": row.id,
                "kind": row.kind,
                "manager_id": row.manager_id,
                "deal_id": row.deal_id,
                "deal_title": row.deal_title,
                "amount": str(row.amount),
                "currency": row.currency,
                "rule": row.rule,
                "reason": row.reason,
                "created_by": row.created_by,
                "created_at": row.created_at.isoformat(),
                "reverses_id": row.reverses_id,
                "reversed_by_id": row.reversed_by_id,
            }
            for row in rows
        ],
    )


@bp.post("/penalties/<int:penalty_id>/appeal")
def appeal_penalty(penalty_id: int) -> ResponseReturnValue:
    """Cancel a fine with a reason (heads and admins; nobody his own fine, 403): a reversing row is appended,
    the manager is told."""
    access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
    identity, portal = access.identity, access.portal
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str) or not body["reason"].strip():
        return jsonify(error="bad_request", message="a reason is required to cancel a fine"), 400
    try:
        reversal = penalties.appeal(portal, penalty_id, identity.user_id, body["reason"][:2000])
    except penalties.OwnFineError:
        db.session.rollback()
        own = i18n.translate("appeal_own_fine", portal.language)
        text = i18n.translate("appeal_own_fine", access.language)
        return jsonify(error="forbidden", code="own_fine", message=own, text=text), 403
    except penalties.AppealError as error:
        db.session.rollback()
        if str(error) == "no such penalty":
            abort(404, description="no such penalty")
        return jsonify(error="conflict", message=str(error)), 409
    db.session.commit()
    try:
        enqueue("default", "app.jobs.deliver_penalty_notices", portal.id, reversal.deal_id)
    except RedisError:
        log.warning("penalty notice left for the sweep", extra={"portal_id": portal.id})
    return jsonify(id=reversal.id, reverses_id=reversal.reverses_id, amount=str(reversal.amount)), 201


# -- admin settings ---------------------------------------------------------------------------------


@bp.get("/settings/cpl")
def get_cpl() -> ResponseReturnValue:
    """The CPL table with the portal's lead sources and pipelines to fill it in (admins only)."""
    portal = require_role(ADMIN, forbidden=ADMIN_ONLY).portal
    try:
        crm = client_for(portal)
        sources = reports.lead_sources(portal)
        pipelines = directory.pipelines(portal.id, crm)
    except CrmError as error:
        return jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}"), 502
    return jsonify(
        settings=penalties.cpl_settings(portal),
        sources=[{"id": source.id, "name": source.name} for source in sources],
        pipelines=[{"id": pipeline.id, "name": pipeline.name} for pipeline in pipelines],
    )


@bp.put("/settings/cpl")
def put_cpl() -> ResponseReturnValue:
    """Validate and store the CPL table (admins only); 400 names each wrong field."""
    return save_settings(
        _store_cpl,
        lambda _portal, stored: stored,
        forbidden=ADMIN_ONLY,
        invalid="invalid CPL settings",
        audit_action="change CPL settings",
    )


def _store_cpl(portal: Portal, changes: dict[str, Any]) -> dict[str, Any]:
    """The CPL table after its sources and pipelines are checked against the portal's (502 when the CRM is down)."""
    try:
        known_sources = {source.id for source in reports.lead_sources(portal)}
        known_pipelines = {pipeline.id for pipeline in directory.pipelines(portal.id, client_for(portal))}
    except CrmError as error:
        failed = jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code}")
        abort(make_response(failed, 502))
    problems: dict[str, Any] = {}
    for key, known, what in (
        ("by_source", known_sources, "lead source"),
        ("by_pipeline", known_pipelines, "pipeline"),
    ):
        table = changes.get(key)
        if isinstance(table, dict):
            unknown = {code: [f"no such {what} on the portal"] for code in table if code not in known}
            if unknown:
                problems[key] = unknown
    if problems:
        raise ValidationError(problems)
    return penalties.update_cpl_settings(portal, changes)


@bp.get("/settings/reports")
def get_schedule() -> ResponseReturnValue:
    """The scheduled-report settings (admins only)."""
    portal = require_role(ADMIN, forbidden=ADMIN_ONLY).portal
    return jsonify(settings=reports.report_schedule(portal))


@bp.put("/settings/reports")
def put_schedule() -> ResponseReturnValue:
    """Validate and store the scheduled-report settings (admins only)."""
    return save_settings(
        reports.update_report_schedule,
        lambda _portal, stored: stored,
        forbidden=ADMIN_ONLY,
        invalid="invalid report schedule",
        audit_action="change report schedule",
    )


@bp.app_context_processor
def inject_roles() -> dict[str, object]:
    """Templates ask `page_role(portal, user_id)` / `is_head(...)` for the tabs to show, and `portal_today(portal)`."""
    return {
        "is_head": is_head,
        "page_role": page_role,
        "portal_today": lambda portal: reports.today(portal).isoformat(),
    }
