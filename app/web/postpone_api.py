"""«Отложено» on the pages: the admin's settings section (the stage a postponed deal of each pipeline comes back
to on its day) and the heads' report section "postponed deals" (postponed, came back, won after return) with its
CSV."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app.core import i18n
from app.core.models import Portal
from app.crm.errors import CrmError
from app.crm.factory import client_for
from app.domain import directory, postpone, reports
from app.web.api import save_settings
from app.web.permissions import ADMIN, crm_unavailable, require_role
from app.web.reports_api import HEADS_ONLY, section_csv

log = logging.getLogger(__name__)
bp = Blueprint("postpone_api", __name__, url_prefix="/api")
TABLE = "postponed"


@bp.get("/postpone-settings")
def get_postpone_settings() -> ResponseReturnValue:
    """The setting and every pipeline with the working stages a deal may come back to (admins only)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the settings").portal
    crm = client_for(portal)
    try:
        pipelines = directory.pipelines(portal.id, crm)
        allowed = postpone.returnable_stages(portal, crm)
    except CrmError as error:
        crm_unavailable(error)
    return jsonify(
        settings={postpone.RETURN_STAGE: postpone.return_stages(portal)},
        pipelines=[
            {
                "id": pipeline.id,
                "name": pipeline.name,
                "stages": [{"id": stage_id, "name": name} for stage_id, name in allowed.get(pipeline.id, [])],
            }
            for pipeline in pipelines
        ],
    )


def _store(portal: Portal, changes: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(changes) - {postpone.RETURN_STAGE})
    if unknown or postpone.RETURN_STAGE not in changes:
        raise ValidationError({key: ["unknown field"] for key in unknown} or {postpone.RETURN_STAGE: ["required"]})
    try:
        return postpone.update_return_stages(portal, changes[postpone.RETURN_STAGE], client_for(portal))
    except CrmError as error:
        crm_unavailable(error)


@bp.put("/postpone-settings")
def put_postpone_settings() -> ResponseReturnValue:
    """Store `{"postpone_return_stage": {pipeline id: stage id}}` (admins only); 400 names each pipeline whose
    stage is not one of its working stages."""
    return save_settings(
        _store,
        lambda _portal, stored: {postpone.RETURN_STAGE: stored},
        forbidden="only a portal administrator can change the settings",
        invalid="invalid postpone settings",
        audit_action="change postpone settings",
    )


# ------------------------------------------------------------------------------------------ report


def postponed_table(portal: Portal, period: reports.Period, names: reports.Names, language: str) -> reports.Table:
    """Deals postponed in the period, per manager: how many, came back, won after return (with the amount),
    still waiting; in the page's language."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    rows: list[list[reports.Cell]] = []
    for item in postpone.report_rows(portal.id, period.start, period.end):
        rows.append(
            [
                names.users.get(item["manager_id"], item["manager_id"]),
                item["postponed"],
                item["returned"],
                item["won"],
                item["won_amount"],
                item["currency"] or "RUB",
                item["waiting"],
            ]
        )
    return reports.Table(
        name=TABLE,
        title=t("postpone_report_title"),
        columns=[
            t("postpone_report_manager"),
            t("postpone_report_postponed"),
            t("postpone_report_returned"),
            t("postpone_report_won"),
            t("postpone_report_won_amount"),
            t("col_currency"),
            t("postpone_report_waiting"),
        ],
        rows=rows,
    )


@bp.get("/reports/postponed.csv")
def postponed_csv() -> ResponseReturnValue:
    """The report section as a CSV download (heads only)."""
    return section_csv(TABLE, postponed_table)


@bp.app_context_processor
def inject_report() -> dict[str, object]:
    """`postponed_report(period)` for the reports tab's partial (b24/postponed_report.html)."""

    def postponed_report(period: reports.Period) -> reports.Table:
        access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
        return postponed_table(access.portal, period, reports.lookup_names(access.portal), access.language)

    return {"postponed_report": postponed_report}
