"""Stage playbook: per pipeline stage, the seller's steps and the criteria to move on, and what a deal still lacks.

CRM-agnostic: only the CrmClient port and the database.

* The portal setting `stage_playbook` (portal.settings["stage_playbook"]) is a JSON object keyed by stage id,
  each value `{"steps": text, "criteria": text}` (plain text, one step a line). The admin sets it on the
  settings page next to the stage requirements. amoCRM's won status (142) is one id in every pipeline, so
  its playbook is shared by all of them.
* A preset of nine statuses (`PRESET`: eight working stages and won, each with steps and criteria) can be
  installed into a pipeline: its working stages are created in the CRM where the pipeline has none of that
  code or name (`ensure_stage`), put in the preset's order before the app's own stages, Conditional refusal
  then «Отложено» (`order_stages`), and their texts stored; stages the pipeline already had keep their place.
* `deal_view` is what the deal's tab shows for the deal's current stage: its steps and criteria, the next stage,
  the fields that stage requires and this deal has not filled in (`app.domain.requirements`), and, when the
  next-step rule is on (`app.domain.taskcontrol`), whether the deal has an open task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.models import Portal
from app.crm.port import CrmClient, Deal, Pipeline, Stage, StageSpec
from app.domain import directory, postpone, requirements, stages, taskcontrol
from app.domain.catalog import Label

SECTION = "stage_playbook"
MAX_STAGES = 200
MAX_TEXT = 2000
MAX_ID = 100
PRESET_COLOR = "#39A8EF"

i18n.register(
    {
        "pb_settings": ("Шаги продавца и критерии перехода", "Seller's steps and criteria to move on"),
        "pb_settings_hint": (
            "Для каждой стадии: что делает продавец и что должно быть выполнено, чтобы перевести сделку дальше. "
            "Текст виден в карточке сделки, на вкладке приложения.",
            "For each stage: what the seller does and what must be true before the deal moves on. The text is "
            "shown in the deal card, on the app's tab.",
        ),
        "pb_steps": ("Шаги и действия", "Steps and actions"),
        "pb_criteria": ("Критерии перехода на следующую стадию", "Criteria to move to the next stage"),
        "pb_preset": ("Шаблон: 9 статусов продажи", "Preset: 9 sales statuses"),
        "pb_preset_hint": (
            "Создаёт в выбранной воронке стадии шаблона (которых в ней ещё нет) и заполняет их шаги и критерии.",
            "Creates the preset's stages in the chosen pipeline (those it does not have yet) and fills in their "
            "steps and criteria.",
        ),
        "pb_preset_install": ("Установить шаблон в воронку", "Install the preset into the pipeline"),
        "pb_preset_done": (
            "Шаблон установлен: стадий создано — {count}.",
            "Preset installed: stages created: {count}.",
        ),
        "pb_tab_title": ("Стадия сделки: что делать", "The deal's stage: what to do"),
        "pb_tab_stage": ("Текущая стадия", "Current stage"),
        "pb_tab_next": ("Следующая стадия", "Next stage"),
        "pb_tab_missing": ("Чего не хватает для перехода", "Still missing to move on"),
        "pb_tab_missing_fields": ("Не заполнены поля: {fields}", "Fields not filled in: {fields}"),
        "pb_tab_no_task": (
            "Нет открытой задачи: поставьте следующий шаг, иначе сделку нельзя перевести дальше.",
            "No open task: set the next step, otherwise the deal cannot move on.",
        ),
        "pb_tab_ready": ("Всё готово для перехода на следующую стадию.", "Everything is ready for the next stage."),
        "pb_tab_none": (
            "Для этой стадии шаги ещё не заданы: их задаёт администратор в настройках приложения.",
            "No steps are set for this stage yet: an administrator sets them in the app's settings.",
        ),
        "pb_tab_final": ("Сделка закрыта.", "The deal is closed."),
        "pb_tab_loading": ("Загрузка…", "Loading…"),
        "pb_tab_failed": ("Не удалось загрузить шаги стадии.", "Could not load the stage's steps."),
    }
)


@dataclass(frozen=True)
class PresetStage:
    """One status of the preset: a working stage (created by `code` / either name) or the pipeline's won stage."""

    code: str
    name: Label
    steps: Label
    criteria: Label
    won: bool = False


PRESET: tuple[PresetStage, ...] = (
    PresetStage(
        "RC_PB_LEAD",
        Label("Новое обращение", "New inquiry"),
        Label(
            "Взять обращение в работу в течение 15 минут\nПроверить, нет ли клиента в базе\n"
            "Позвонить клиенту и представиться",
            "Take the inquiry within 15 minutes\nCheck whether the client is already in the CRM\n"
            "Call the client and introduce yourself",
        ),
        Label(
            "Состоялся разговор с клиентом, контакт и источник заполнены",
            "You have spoken to the client; the contact and the source are filled in",
        ),
    ),
    PresetStage(
        "RC_PB_QUALIFY",
        Label("Квалификация", "Qualification"),
        Label(
            "Выяснить потребность, бюджет и срочность\nОпределить, кто принимает решение\nЗаписать ответы в карточку",
            "Find out the need, the budget and the urgency\nFind out who decides\nRecord the answers in the card",
        ),
        Label(
            "Есть потребность и бюджет; назначена встреча или звонок с тем, кто принимает решение",
            "There is a need and a budget; a meeting or call with the decision maker is set",
        ),
    ),
    PresetStage(
        "RC_PB_NEEDS",
        Label("Выявление потребностей", "Needs analysis"),
        Label(
            "Провести встречу или звонок\nРасспросить о задачах, сроках и критериях выбора\n"
            "Зафиксировать договорённости",
            "Hold the meeting or call\nAsk about the client's goals, deadlines and selection criteria\n"
            "Write down what was agreed",
        ),
        Label(
            "Задачи клиента и критерии выбора записаны и подтверждены клиентом",
            "The client's goals and selection criteria are written down and confirmed by the client",
        ),
    ),
    PresetStage(
        "RC_PB_DEMO",
        Label("Презентация", "Presentation"),
        Label(
            "Показать решение под задачи клиента\nОтветить на вопросы и возражения\nДоговориться о предложении",
            "Show the solution for the client's goals\nAnswer questions and objections\nAgree on a proposal",
        ),
        Label("Клиент подтвердил интерес и ждёт предложение", "The client confirmed interest and expects a proposal"),
    ),
    PresetStage(
        "RC_PB_OFFER",
        Label("Коммерческое предложение", "Proposal"),
        Label(
            "Подготовить и отправить КП в течение рабочего дня\nПоставить задачу: звонок по КП через 1–2 дня",
            "Prepare and send the proposal within a working day\nSet a task: call about it in 1–2 days",
        ),
        Label(
            "Клиент получил КП и дал обратную связь; сумма сделки заполнена",
            "The client has the proposal and gave feedback; the deal amount is filled in",
        ),
    ),
    PresetStage(
        "RC_PB_NEGOTIATE",
        Label("Переговоры", "Negotiation"),
        Label(
            "Согласовать цену, сроки и условия\nОтработать возражения\nПодключить руководителя при скидке",
            "Agree on the price, deadlines and terms\nHandle objections\nBring in your head of sales for a discount",
        ),
        Label("Условия согласованы, клиент готов подписать договор", "Terms agreed; the client is ready to sign"),
    ),
    PresetStage(
        "RC_PB_CONTRACT",
        Label("Договор", "Contract"),
        Label(
            "Подготовить договор\nСогласовать правки с юристами клиента\nПолучить подписанный договор",
            "Draw up the contract\nAgree on the changes with the client's lawyers\nGet the signed contract",
        ),
        Label("Договор подписан обеими сторонами", "The contract is signed by both parties"),
    ),
    PresetStage(
        "RC_PB_INVOICE",
        Label("Счёт выставлен", "Invoice issued"),
        Label(
            "Выставить счёт\nПоставить задачу на контроль оплаты\nНапомнить клиенту о сроке оплаты",
            "Issue the invoice\nSet a task to check the payment\nRemind the client of the due date",
        ),
        Label("Оплата поступила", "The payment has arrived"),
    ),
    PresetStage(
        "WON",
        Label("Успешно реализовано", "Deal won"),
        Label(
            "Передать заказ в исполнение\nПопросить отзыв и рекомендации\nПоставить задачу на повторную продажу",
            "Hand the order over for delivery\nAsk for a review and referrals\nSet a task for a repeat sale",
        ),
        Label("Клиент получил заказ и доволен", "The client has the order and is satisfied"),
        won=True,
    ),
)


# ------------------------------------------------------------------------------------------ settings


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    if "\x00" in value or len(value) > MAX_TEXT:
        raise ValidationError(f"{what} must be at most {MAX_TEXT} characters, without NUL")
    return value.replace("\r\n", "\n").strip()


def validate(value: Any) -> dict[str, dict[str, str]]:
    """The setting in its stored form, or a ValidationError naming each wrong stage; stages with neither text
    are dropped."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            {SECTION: ['a JSON object keyed by stage id: {"STAGE": {"steps": "…", "criteria": "…"}}']}
        )
    if len(value) > MAX_STAGES:
        raise ValidationError({SECTION: [f"at most {MAX_STAGES} stages"]})
    cleaned: dict[str, dict[str, str]] = {}
    errors: dict[str, list[str]] = {}
    for raw_stage, spec in value.items():
        stage_id = raw_stage.strip() if isinstance(raw_stage, str) else ""
        if not stage_id or len(stage_id) > MAX_ID or "\x00" in stage_id:
            errors[str(raw_stage)[:MAX_ID] or "(empty)"] = [f"a stage id of 1 to {MAX_ID} characters"]
            continue
        if not isinstance(spec, Mapping) or set(spec) - {"steps", "criteria"}:
            errors[stage_id] = ['expected {"steps": text, "criteria": text} (no other keys)']
            continue
        try:
            steps, criteria = _text(spec.get("steps"), "steps"), _text(spec.get("criteria"), "criteria")
        except ValidationError as error:
            errors[stage_id] = [str(message) for message in error.messages]
            continue
        if steps or criteria:
            cleaned[stage_id] = {"steps": steps, "criteria": criteria}
    if errors:
        raise ValidationError({SECTION: errors})
    return cleaned


def stage_playbook(portal: Portal) -> dict[str, dict[str, str]]:
    """The stored setting (empty when none); a stored value that no longer validates counts as none."""
    try:
        return validate((portal.settings or {}).get(SECTION) or {})
    except ValidationError:
        return {}


def _store(portal: Portal, cleaned: dict[str, dict[str, str]]) -> None:
    stored = dict(portal.settings or {})
    stored[SECTION] = cleaned
    portal.settings = stored
    flag_modified(portal, "settings")


def update_stage_playbook(portal: Portal, value: Any, crm: CrmClient | None = None) -> dict[str, dict[str, str]]:
    """Validate (against the CRM's stages when `crm` is given) and store the whole setting; the caller commits."""
    cleaned = validate(value)
    if crm is not None and cleaned:
        known = {stage.id for pipeline in directory.pipelines(portal.id, crm) for stage in pipeline.stages}
        if not set(cleaned) <= known:
            directory.forget_pipelines(portal.id)
            known = {stage.id for pipeline in directory.pipelines(portal.id, crm) for stage in pipeline.stages}
        unknown = {stage_id: ["no such stage in this CRM"] for stage_id in cleaned if stage_id not in known}
        if unknown:
            raise ValidationError({SECTION: unknown})
    _store(portal, cleaned)
    return cleaned


# ------------------------------------------------------------------------------------------ the preset


def preset_spec(item: PresetStage, language: str) -> StageSpec:
    """A preset working stage as the CRMs are asked for it (named in the portal's language, found by either)."""
    return StageSpec(
        code=item.code, name=item.name.in_language(language), names=(item.name.ru, item.name.en), color=PRESET_COLOR
    )


def preset_view(language: str) -> list[dict[str, Any]]:
    """The preset's statuses with their texts in one language (the settings page shows them)."""
    return [
        {
            "code": item.code,
            "name": item.name.in_language(language),
            "steps": item.steps.in_language(language),
            "criteria": item.criteria.in_language(language),
            "won": item.won,
        }
        for item in PRESET
    ]


@dataclass(frozen=True)
class Installed:
    """What installing the preset did: each preset status's stage id, and the stages it created."""

    stage_ids: dict[str, str]
    created: list[str]


def install_preset(portal: Portal, crm: CrmClient, pipeline_id: str) -> Installed:
    """Create the preset's working stages in one pipeline where missing, order them before the app's own
    stages, and store their steps and criteria (the texts of other stages are kept). The caller commits.

    Raises ValidationError for a pipeline the CRM does not have."""
    language = portal.language
    directory.forget_pipelines(portal.id)
    pipeline = _pipeline(portal, crm, pipeline_id)
    if pipeline is None:
        raise ValidationError({"pipeline_id": [f"no pipeline {pipeline_id!r} in this CRM"]})
    before = {stage.id for stage in pipeline.stages}
    stage_ids: dict[str, str] = {}
    with stages.stages_lock(portal.id):
        for item in PRESET:
            if not item.won:
                stage_ids[item.code] = crm.ensure_stage(pipeline.id, preset_spec(item, language))
        own = [stages.known_stage(portal, pipeline.id), postpone.known_stage(portal, pipeline.id)]
        working = [stage_ids[item.code] for item in PRESET if not item.won]
        crm.order_stages(pipeline.id, [*working, *(stage for stage in own if stage)])
    directory.forget_pipelines(portal.id)
    won = next((stage for stage in pipeline.stages if stage.semantics == "success"), None)
    if won is not None:
        stage_ids["WON"] = won.id
    texts = stage_playbook(portal)
    for item in PRESET:
        if item.code in stage_ids:
            texts[stage_ids[item.code]] = {
                "steps": item.steps.in_language(language),
                "criteria": item.criteria.in_language(language),
            }
    _store(portal, validate(texts))
    return Installed(stage_ids=stage_ids, created=[sid for sid in stage_ids.values() if sid not in before])


def _pipeline(portal: Portal, crm: CrmClient, pipeline_id: str) -> Pipeline | None:
    return next((p for p in directory.pipelines(portal.id, crm) if p.id == pipeline_id), None)


# ------------------------------------------------------------------------------------------ the deal's tab


def playbook_stages(portal: Portal, pipeline: Pipeline) -> list[Stage]:
    """The stages of a pipeline a playbook is kept for, in order: working stages (the app's Conditional
    refusal and «Отложено» left out) and won."""
    own = set(((portal.settings or {}).get(stages.SETTING) or {}).values())
    own |= set(((portal.settings or {}).get(postpone.STAGES) or {}).values())
    return [
        stage
        for stage in sorted(pipeline.stages, key=lambda stage: stage.sort)
        if stage.semantics != "failure" and stage.id not in own
    ]


def next_stage(portal: Portal, pipeline: Pipeline, stage_id: str) -> Stage | None:
    """The stage a deal in `stage_id` moves on to: the next working stage, after the last one won; None for a
    closed deal or a stage the playbook does not follow (Conditional refusal, «Отложено»)."""
    ordered = playbook_stages(portal, pipeline)
    index = next((i for i, stage in enumerate(ordered) if stage.id == stage_id), None)
    if index is None or ordered[index].semantics != "process":
        return None
    later = [stage for stage in ordered[index + 1 :] if stage.semantics == "process"]
    if later:
        return later[0]
    return next((stage for stage in ordered if stage.semantics == "success"), None)


def deal_view(portal: Portal, crm: CrmClient, deal: Deal) -> dict[str, Any]:
    """What the deal's tab shows: the current stage with its steps and criteria, the next stage, the fields it
    requires that this deal lacks, and whether an open task is needed and present."""
    pipeline = _pipeline(portal, crm, deal.pipeline_id)
    stage = next((s for s in pipeline.stages if s.id == deal.stage_id), None) if pipeline else None
    texts = stage_playbook(portal).get(deal.stage_id, {})
    following = next_stage(portal, pipeline, deal.stage_id) if pipeline else None
    missing: list[dict[str, str]] = []
    needs_task = False
    has_task: bool | None = None
    if following is not None:
        required = requirements.required_for(portal, following.id)
        if required:
            fields = requirements.deal_fields(portal.id, crm)
            missing = [
                {"code": field.code, "label": field.label}
                for field in requirements.missing_fields(deal, required, fields)
            ]
        settings = taskcontrol.taskcontrol_settings(portal)
        needs_task = settings.require_task_to_advance and settings.checks(deal.pipeline_id)
        if needs_task:
            has_task = bool(crm.open_deal_tasks(deal.id))
    return {
        "deal_id": deal.id,
        "stage": {
            "id": deal.stage_id,
            "name": stage.name if stage else deal.stage_id,
            "semantics": deal.stage_semantics,
        },
        "steps": texts.get("steps", ""),
        "criteria": texts.get("criteria", ""),
        "next_stage": {"id": following.id, "name": following.name} if following else None,
        "missing_fields": missing,
        "needs_task": needs_task,
        "has_open_task": has_task,
        "ready": following is not None and not missing and (not needs_task or bool(has_task)),
    }
