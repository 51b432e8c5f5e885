"""Stage requirements on the pages: the admin's settings section (pipelines, stages and the CRM's deal fields
by label) and the heads' report section "moves refused for missing fields" with its CSV."""

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
from app.domain import directory, reports, requirements
from app.web.api import save_settings
from app.web.permissions import ADMIN, crm_unavailable, require_role
from app.web.reports_api import HEADS_ONLY, section_csv

log = logging.getLogger(__name__)
bp = Blueprint("requirements_api", __name__, url_prefix="/api")
TABLE = "missing_fields"


@bp.get("/stage-requirements")
def get_requirements() -> ResponseReturnValue:
    """The setting, every pipeline with its stages, and the deal fields to choose from (admins only)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the settings").portal
    crm = client_for(portal)
    try:
        requirements.forget_fields(portal.id)
        fields = requirements.deal_fields(portal.id, crm)
        pipelines = directory.pipelines(portal.id, crm)
    except CrmError as error:
        crm_unavailable(error)
    refusal_stages = set((portal.settings or {}).get("refusal_stages", {}).values())
    return jsonify(
        settings=requirements.stage_requirements(portal),
        pipelines=[
            {
                "id": pipeline.id,
                "name": pipeline.name,
                "stages": [
                    {"id": stage.id, "name": stage.name, "semantics": stage.semantics}
                    for stage in sorted(pipeline.stages, key=lambda stage: stage.sort)
                    if stage.semantics != "failure" and stage.id not in refusal_stages
                ],
            }
            for pipeline in pipelines
        ],
        fields=[{"code": field.code, "label": field.label, "kind": field.kind} for field in fields],
    )


def _store(portal: Portal, changes: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - {requirements.SECTION})
    if unknown or requirements.SECTION not in changes:
        raise ValidationError({key: ["unknown field"] for key in unknown} or {requirements.SECTION: ["required"]})
    try:
        return requirements.update_stage_requirements(portal, changes[requirements.SECTION], client_for(portal))
    except CrmError as error:
        crm_unavailable(error)


@bp.put("/stage-requirements")
def put_requirements() -> ResponseReturnValue:
    """Store `{"stage_requirements": {stage id: {"required": [codes]}}}` (admins only); 400 names each stage
    whose fields are wrong or unknown to the CRM."""
    return save_settings(
        _store,
        lambda _portal, stored: stored,
        forbidden="only a portal administrator can change the settings",
        invalid="invalid stage requirements",
        audit_action="change stage requirements",
    )


# ------------------------------------------------------------------------------------------ report


def missing_fields_table(
    portal: Portal, period: reports.Period, names: reports.Names, language: str | None = None
) -> reports.Table:
    """Moves refused for missing fields in the period: per manager and stage, with the fields most often
    missing (in `language`, else the portal's)."""
    language = language or portal.language
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    stage_names: dict[str, str] = {}
    try:
        for pipeline in directory.pipelines(portal.id, client_for(portal)):
            for stage in pipeline.stages:
                stage_names[stage.id] = f"{pipeline.name}: {stage.name}" if pipeline.name else stage.name
    except CrmError:  # names are cosmetic: the counts come from the audit trail
        log.warning("stage names for the report are unavailable", extra={"portal_id": portal.id})
    rows: list[list[reports.Cell]] = []
    total = 0
    for item in requirements.refusal_counts(portal.id, period.start, period.end):
        fields = ", ".join(f"{label} ({count})" for label, count in item["fields"].items())
        rows.append(
            [
                names.users.get(item["manager_id"], item["manager_id"]),
                stage_names.get(item["stage_id"], item["stage_id"]),
                item["count"],
                fields,
            ]
        )
        total += item["count"]
    return reports.Table(
        name=TABLE,
        title=t("req_report_title"),
        columns=[t("req_report_manager"), t("req_report_stage"), t("req_report_count"), t("req_report_fields")],
        rows=rows,
        total=[t("req_report_total"), "", total, ""] if rows else None,
    )


@bp.get("/reports/missing_fields.csv")
def missing_fields_csv() -> ResponseReturnValue:
    """The report section as a CSV download (heads only)."""
    return section_csv(TABLE, missing_fields_table)


@bp.app_context_processor
def inject_report() -> dict[str, object]:
    """`missing_fields_report(period)` for the reports tab's partial (b24/missing_fields_report.html): the
    table of the caller's portal (the reports view already checked that he is a head)."""

    def missing_fields_report(period: reports.Period) -> reports.Table:
        access = require_role("head", ADMIN, forbidden=HEADS_ONLY)
        return missing_fields_table(access.portal, period, reports.lookup_names(access.portal), access.language)

    return {"missing_fields_report": missing_fields_report}
