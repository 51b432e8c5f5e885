"""Stage playbook on the pages: the admin's settings section (steps and criteria per pipeline and stage, the
nine-status preset) and the deal tab's view of the deal's current stage (app.domain.playbook)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app.core.models import Portal
from app.crm.errors import AmoNotFound, CrmError, NotFound
from app.crm.factory import client_for
from app.domain import directory, playbook
from app.web.api import save_settings
from app.web.errors import page_language
from app.web.permissions import ADMIN, crm_unavailable, require_role

bp = Blueprint("playbook_api", __name__, url_prefix="/api")
ADMINS_ONLY = "only a portal administrator can change the settings"
NOT_THIS_DEAL = "this page was opened for another deal; open the deal's own card"


def _pipelines(portal: Portal) -> list[dict[str, Any]]:
    try:
        pipelines = directory.pipelines(portal.id, client_for(portal))
    except CrmError as error:
        crm_unavailable(error)
    return [
        {
            "id": pipeline.id,
            "name": pipeline.name,
            "stages": [
                {"id": stage.id, "name": stage.name, "semantics": stage.semantics}
                for stage in playbook.playbook_stages(portal, pipeline)
            ],
        }
        for pipeline in pipelines
    ]


@bp.get("/stage-playbook")
def get_playbook() -> ResponseReturnValue:
    """The setting, every pipeline with its stages, and the preset's statuses (admins only)."""
    portal = require_role(ADMIN, forbidden="only a portal administrator can see the settings").portal
    directory.forget_pipelines(portal.id)
    return jsonify(
        settings=playbook.stage_playbook(portal),
        pipelines=_pipelines(portal),
        preset=playbook.preset_view(page_language()),
    )


def _store(portal: Portal, changes: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - {playbook.SECTION})
    if unknown or playbook.SECTION not in changes:
        raise ValidationError({key: ["unknown field"] for key in unknown} or {playbook.SECTION: ["required"]})
    try:
        return playbook.update_stage_playbook(portal, changes[playbook.SECTION], client_for(portal))
    except CrmError as error:
        crm_unavailable(error)


@bp.put("/stage-playbook")
def put_playbook() -> ResponseReturnValue:
    """Store `{"stage_playbook": {stage id: {"steps": text, "criteria": text}}}` (admins only); 400 names each
    wrong stage."""
    return save_settings(
        _store,
        lambda _portal, stored: stored,
        forbidden=ADMINS_ONLY,
        invalid="invalid stage playbook",
        audit_action="change stage playbook",
    )


def _install(portal: Portal, changes: dict[str, Any]) -> playbook.Installed:
    pipeline_id = changes.get("pipeline_id")
    if set(changes) - {"pipeline_id"}:
        raise ValidationError({key: ["unknown field"] for key in sorted(set(changes) - {"pipeline_id"})})
    if not isinstance(pipeline_id, str) or not pipeline_id.strip():
        raise ValidationError({"pipeline_id": ["required: the id of a pipeline"]})
    try:
        return playbook.install_preset(portal, client_for(portal), pipeline_id.strip())
    except CrmError as error:
        crm_unavailable(error)


@bp.post("/stage-playbook/preset")
def install_preset() -> ResponseReturnValue:
    """Install the nine-status preset into `{"pipeline_id": id}` (admins only): creates its stages where the
    pipeline lacks them and stores their steps and criteria; answers the stage ids and which were created."""
    return save_settings(
        _install,
        lambda portal, installed: {
            "stage_ids": installed.stage_ids,
            "created": installed.created,
            "settings": playbook.stage_playbook(portal),
            "pipelines": _pipelines(portal),
        },
        forbidden=ADMINS_ONLY,
        invalid="the preset was not installed",
        audit_action="install stage playbook preset",
        audit_details=lambda changes, installed: {
            "pipeline_id": changes.get("pipeline_id"),
            "created": installed.created,
        },
    )


@bp.get("/deals/<deal_id>/playbook")
def deal_playbook(deal_id: str) -> ResponseReturnValue:
    """The deal tab's view: the deal's stage, its steps and criteria, and what the deal still lacks to move on.

    Only for the deal whose card tab the caller's token was issued for (the CRM opened that tab for him): 403
    for any other id, so a user of the portal cannot read other deals by changing the id. The waiting deal's
    own facts (the refusal reason and comment, the postpone reason and date) go to its responsible manager and
    to QA staff, heads, exempt users and admins; anyone else reads only what happens in that stage."""
    access = require_role()
    portal = access.portal
    if not deal_id.isdigit():
        abort(404, description="no such deal")
    if access.identity.deal_id != deal_id:
        abort(403, description=NOT_THIS_DEAL)
    crm = client_for(portal)
    try:
        deal = crm.get_deal(deal_id)
        facts = deal.responsible_id == access.user_id or access.has(ADMIN, "qa", "head", "exempt")
        return jsonify(playbook.deal_view(portal, crm, deal, page_language(), facts=facts))
    except (NotFound, AmoNotFound):
        abort(404, description="no such deal")
    except CrmError as error:
        crm_unavailable(error)
