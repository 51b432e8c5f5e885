"""Stage requirements: the deal fields that must be filled in before a deal may enter a stage.

CRM-agnostic: only the CrmClient port and the database.

* The portal setting `stage_requirements` (portal.settings["stage_requirements"]) is a JSON object keyed by
  stage id, each value `{"required": [field codes]}`; codes are the CRM's (Bitrix24 `OPPORTUNITY`,
  `UF_CRM_…`; amoCRM `name`, `price` or a custom field's id). Set on the settings page or with
  `flask settings set <portal> stage_requirements='{...}'`. amoCRM's won and lost statuses (142, 143) are
  shared by every pipeline, so a requirement on 142 holds for won in all of them.
* `stage_requirements_rule` (a guard rule, registered in create_app): a move FORWARD (to a later in-progress
  stage of the same pipeline, or to won) into a stage whose required fields are not all filled goes back to
  the stage it came from, and the mover (the deal's responsible for a robot or an import) gets a notice
  naming the missing fields by their CRM labels. Everyone is held to it (managers, heads, QA, robots,
  imports) except exempt users (and robots when the portal exempts them). Backward moves, moves to another
  pipeline and to lost (the guard's) are not checked. `first_seen_rule` holds a deal created or imported
  straight into such a stage to the same rule, as a move from the stage before it in the CRM's history,
  else from its pipeline's first stage. Every refusal is audited ("enter stage", "reverted", with the
  missing fields) and counted by `refusal_counts` for the reports.
* A field is filled by its kind: text not blank, a number or amount other than zero, a date present, a list
  item chosen, a flag set, a link to a user or record present.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import ValidationError
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.models import Portal
from app.core.queue import get_redis
from app.crm.port import AUTOMATION, CrmClient, Deal, DealField
from app.domain import audit, directory, effects, guard
from app.domain.requirement_refusals import ATTEMPTED, OUTCOME
from app.domain.requirement_refusals import refusal_counts as refusal_counts

SECTION = "stage_requirements"
MAX_STAGES = 200
MAX_FIELDS = 50
MAX_CODE = 100
FIELDS_CACHE_SECONDS = 600

i18n.register(
    {
        "req_blocked": (
            "Сделку «{title}» нельзя перевести на стадию «{stage}»: не заполнены поля {fields}. Она возвращена "
            "на прежнюю стадию: заполните эти поля и переведите сделку снова. {link}",
            'The deal "{title}" cannot move to "{stage}": these fields are not filled in: {fields}. It was '
            "returned to its previous stage: fill them in and move it again. {link}",
        ),
        "req_settings": ("Обязательные поля стадий", "Stage requirements"),
        "req_settings_hint": (
            "Сделку нельзя перевести вперёд на стадию, пока не заполнены отмеченные поля: правило действует "
            "для менеджеров, руководителей, роботов и импорта (кроме исключений). Движение назад и в проигрыш "
            "не проверяется.",
            "A deal cannot move forward into a stage until the checked fields are filled in: the rule holds for "
            "managers, heads, robots and imports (except exempt users). Moves back and to lost are not checked.",
        ),
        "req_settings_pipeline": ("Воронка", "Pipeline"),
        "req_settings_stage": ("Стадия", "Stage"),
        "req_settings_none": ("Нет обязательных полей", "No required fields"),
        "req_settings_count": ("Обязательных полей: {count}", "Required fields: {count}"),
        "req_settings_filter": ("Найти поле", "Find a field"),
        "req_settings_no_match": ("Нет полей с таким названием", "No field by that name"),
        "req_report_title": ("Переходы, отклонённые из-за незаполненных полей", "Moves refused for missing fields"),
        "req_report_manager": ("Менеджер", "Manager"),
        "req_report_stage": ("Стадия", "Stage"),
        "req_report_count": ("Отклонено переходов", "Moves refused"),
        "req_report_fields": ("Чаще всего не заполнены", "Most often missing"),
        "req_report_empty": ("За период таких переходов не было.", "No such moves in the period."),
        "req_report_total": ("Всего", "Total"),
    }
)


# ------------------------------------------------------------------------------------------ settings


def _clean_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be a non-empty string")
    if "\x00" in value or len(value) > MAX_CODE:
        raise ValidationError(f"{what} must be at most {MAX_CODE} characters, without NUL")
    return value.strip()


def validate(value: Any) -> dict[str, dict[str, list[str]]]:
    """The setting in its stored form, or a ValidationError naming what is wrong (per stage where it can).

    Stages with no required fields are dropped; codes keep their order, duplicates once."""
    if not isinstance(value, Mapping):
        raise ValidationError({SECTION: ['a JSON object keyed by stage id: {"STAGE": {"required": ["FIELD"]}}']})
    if len(value) > MAX_STAGES:
        raise ValidationError({SECTION: [f"at most {MAX_STAGES} stages"]})
    cleaned: dict[str, dict[str, list[str]]] = {}
    errors: dict[str, list[str]] = {}
    for raw_stage, spec in value.items():
        try:
            stage_id = _clean_id(raw_stage, "a stage id")
        except ValidationError as error:
            errors[str(raw_stage)[:MAX_CODE] or "(empty)"] = [str(m) for m in error.messages]
            continue
        if not isinstance(spec, Mapping) or set(spec) - {"required"}:
            errors[stage_id] = ['expected {"required": [field codes]} (no other keys)']
            continue
        required = spec.get("required", [])
        if not isinstance(required, list):
            errors[stage_id] = ["required must be a list of field codes"]
            continue
        try:
            codes = list(dict.fromkeys(_clean_id(code, "a field code") for code in required))
        except ValidationError as error:
            errors[stage_id] = [str(m) for m in error.messages]
            continue
        if len(codes) > MAX_FIELDS:
            errors[stage_id] = [f"at most {MAX_FIELDS} fields per stage"]
            continue
        if codes:
            cleaned[stage_id] = {"required": codes}
    if errors:
        raise ValidationError({SECTION: errors})
    return cleaned


def stage_requirements(portal: Portal) -> dict[str, dict[str, list[str]]]:
    """The stored setting (empty when none); a stored value that no longer validates counts as none."""
    stored = (portal.settings or {}).get(SECTION) or {}
    try:
        return validate(stored)
    except ValidationError:
        return {}


def required_for(portal: Portal, stage_id: str) -> list[str]:
    """The field codes a deal needs to enter this stage."""
    return list(stage_requirements(portal).get(stage_id, {}).get("required", []))


def check_against_crm(value: Mapping[str, Mapping[str, Sequence[str]]], portal: Portal, crm: CrmClient) -> None:
    """Refuse stages and field codes the CRM does not have (a ValidationError naming each)."""
    stages = {stage.id for pipeline in directory.pipelines(portal.id, crm) for stage in pipeline.stages}
    codes = {field.code for field in deal_fields(portal.id, crm)}
    wanted = {code for spec in value.values() for code in spec.get("required", [])}
    if not wanted <= codes:  # a field added in the CRM a moment ago: read the list again, once
        forget_fields(portal.id)
        codes = {field.code for field in deal_fields(portal.id, crm)}
    if not set(value) <= stages:
        directory.forget_pipelines(portal.id)
        stages = {stage.id for pipeline in directory.pipelines(portal.id, crm) for stage in pipeline.stages}
    errors: dict[str, list[str]] = {}
    for stage_id, spec in value.items():
        problems = [] if stage_id in stages else [f"no stage {stage_id!r} in this CRM"]
        unknown = [code for code in spec.get("required", []) if code not in codes]
        if unknown:
            problems.append(f"no deal field {', '.join(unknown)} in this CRM")
        if problems:
            errors[stage_id] = problems
    if errors:
        raise ValidationError({SECTION: errors})


def update_stage_requirements(portal: Portal, value: Any, crm: CrmClient | None = None) -> dict[str, Any]:
    """Validate (against the CRM's stages and fields when `crm` is given) and store the whole setting; the
    caller commits. Raises ValidationError."""
    cleaned = validate(value)
    if crm is not None:
        check_against_crm(cleaned, portal, crm)
    stored = dict(portal.settings or {})
    stored[SECTION] = cleaned
    portal.settings = stored
    flag_modified(portal, "settings")
    return cleaned


# ------------------------------------------------------------------------------------------ fields


def _fields_key(portal_id: int) -> str:
    return f"rc:cache:{portal_id}:deal-fields"


def deal_fields(portal_id: int, crm: CrmClient) -> list[DealField]:
    """The CRM's deal fields with labels, cached for a few minutes."""
    key = _fields_key(portal_id)
    cached = get_redis().get(key)
    if cached is not None:
        return [DealField(**item) for item in json.loads(cached)]
    found = crm.list_deal_fields()
    get_redis().set(key, json.dumps([asdict(item) for item in found]), ex=FIELDS_CACHE_SECONDS)
    return found


def forget_fields(portal_id: int) -> None:
    """Drop the cached field list (the settings page reloads it)."""
    get_redis().delete(_fields_key(portal_id))


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.split("|", 1)[0].strip().replace(",", ".").replace(" ", ""))
    except (InvalidOperation, ValueError):
        return None


def is_filled(deal_field: DealField, values: Sequence[str]) -> bool:
    """Whether a field counts as filled in for a requirement, by its kind."""
    texts = [text.strip() for text in values if text and text.strip()]
    if not texts:
        return False
    if deal_field.kind in ("number", "money"):
        return any((number := _number(text)) is not None and number != 0 for text in texts)
    if deal_field.kind == "boolean":
        return any(text.lower() in ("1", "y", "true", "yes") for text in texts)
    if deal_field.kind == "link":
        return any(text != "0" for text in texts)
    return True


def missing_fields(deal: Deal, required: Sequence[str], fields: Sequence[DealField]) -> list[DealField]:
    """The required fields the deal has not filled in, in the order they were required (a code the CRM no
    longer lists is checked as text, under its code)."""
    by_code = {field.code: field for field in fields}
    missing = []
    for code in required:
        deal_field = by_code.get(code) or DealField(code=code, label=code, kind="string")
        if not is_filled(deal_field, deal.values.get(code, ())):
            missing.append(deal_field)
    return missing


# ------------------------------------------------------------------------------------------ the rule


def _is_forward(deal_guard: guard.Guard, deal: Deal, previous_stage: str, previous_pipeline: str) -> bool:
    if previous_pipeline != deal.pipeline_id or deal.stage_semantics == "failure":
        return False
    before = directory.stage(deal_guard.portal.id, deal_guard.crm, previous_stage)
    if before is None or before.semantics != "process":
        return False
    if deal.stage_semantics == "success":
        return True
    after = directory.stage(deal_guard.portal.id, deal_guard.crm, deal.stage_id)
    return after is not None and after.sort > before.sort


def stage_requirements_rule(
    deal_guard: guard.Guard, deal: Deal, previous_stage: str, previous_pipeline: str, mover: str, role: str
) -> guard.Decision | None:
    """A forward move into a stage whose required fields are not filled goes back, with a notice naming them."""
    portal = deal_guard.portal
    required = required_for(portal, deal.stage_id)
    if not required or role == "exempt":
        return None
    if not _is_forward(deal_guard, deal, previous_stage, previous_pipeline):
        return None
    missing = missing_fields(deal, required, deal_fields(portal.id, deal_guard.crm))
    if not missing:
        return None
    stage = directory.stage(portal.id, deal_guard.crm, deal.stage_id)
    stage_name = stage.name if stage is not None else deal.stage_id
    labels = [field.label for field in missing]
    key = f"requirements:{deal.id}:{deal.stage_id}:{guard._stamp(deal)}"
    guard.remember(portal.id, deal, stage_id=previous_stage)
    effects.plan_effect(portal.id, deal.id, f"{key}:move", "move", {"stage_id": previous_stage})
    recipient = deal.responsible_id if mover in ("", AUTOMATION) else mover
    message = i18n.translate("req_blocked", portal.language).format(
        title=deal.title,
        stage=stage_name,
        fields=", ".join(f"«{label}»" for label in labels),
        link=deal_guard.crm.deal_url(deal.id),
    )
    effects.plan_effect(portal.id, deal.id, f"{key}:notice", "notify", {"user_id": recipient, "message": message})
    audit.record(
        portal.id,
        mover or AUTOMATION,
        ATTEMPTED,
        OUTCOME,
        "required fields are not filled in",
        deal_id=deal.id,
        violation=True,
        back_to=previous_stage,
        stage_id=deal.stage_id,
        pipeline_id=deal.pipeline_id,
        manager_id=recipient,
        missing=[field.code for field in missing],
        missing_labels=labels,
    )
    return guard.Decision("reverted", "required fields missing")


def first_seen_rule(deal_guard: guard.Guard, deal: Deal, mover: str, role: str) -> guard.Decision | None:
    """A deal first seen in a stage with requirements (created or imported straight into it, or moved there
    while its events were lost) is judged as a move from the stage it was in before (the CRM's stage
    history), else from its pipeline's first stage. A deal created before the app was installed is left
    where it is: requirements hold for entering a stage, not for being in it."""
    if not required_for(deal_guard.portal, deal.stage_id) or role == "exempt":
        return None
    portal, crm = deal_guard.portal, deal_guard.crm
    installed = portal.installed_at
    if deal.created_at is None or (installed is not None and deal.created_at < installed.replace(microsecond=0)):
        return None
    previous = crm.stage_before(deal.id, deal.stage_id)
    known = directory.stage(portal.id, crm, previous) if previous else None
    if known is None or known.pipeline_id != deal.pipeline_id or known.semantics != "process":
        first = directory.first_stage(portal.id, crm, deal.pipeline_id)
        previous = first.id if first is not None else None
    if not previous or previous == deal.stage_id:
        return None
    return stage_requirements_rule(deal_guard, deal, previous, deal.pipeline_id, mover, role)
