"""Stage playbook: per pipeline stage, the seller's steps and the criteria to move on, and what a deal still lacks.

CRM-agnostic: only the CrmClient port and the database.

* The portal setting `stage_playbook` (portal.settings["stage_playbook"]) is a JSON object keyed by stage id,
  each value `{"steps": text, "criteria": text}` (plain text, one step a line). The admin sets it on the
  settings page next to the stage requirements. amoCRM's won status (142) is one id in every pipeline, so
  its playbook is shared by all of them.
* A preset (`PRESET`): our own example of a Russian B2B sale in nine statuses — seven working stages,
  «Отложено» and won, each with the seller's steps and the criteria to move on. It can be installed into a
  pipeline: its working stages are created in the CRM where the pipeline has none of that code or name
  (`ensure_stage`) and put in the preset's order before the app's Conditional refusal and «Отложено» stages
  (`order_stages`); «Отложено» is the app's own stage (app.domain.postpone), used where the portal has it and
  never created here; stages the pipeline already had keep their place. Their texts are stored.
* `deal_view` is what the deal's tab shows for the deal's current stage: its steps and criteria, the next stage,
  the fields that stage requires and this deal has not filled in (`app.domain.requirements`), and, when the
  next-step rule is on (`app.domain.taskcontrol`), whether the deal has an open task. A deal waiting in
  «Условный отказ» or «Отложено» gets `waiting` instead of a next stage (app.domain.playbook_waiting).
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
from app.domain import directory, playbook_waiting, postpone, requirements, stages, taskcontrol
from app.domain.catalog import POSTPONE_STAGE, POSTPONE_STAGE_CODE, Label

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
        "pb_preset": ("Шаблон: 9 статусов B2B-продажи", "Preset: a B2B sale in 9 statuses"),
        "pb_preset_hint": (
            "Пример, составленный в приложении для B2B-продаж: семь рабочих стадий, «Отложено» и «Успешно», у "
            "каждой шаги продавца и критерии перехода. Это не готовый регламент: после установки поправьте тексты "
            "под свой процесс. Кнопка создаёт в выбранной воронке стадии шаблона, которых в ней ещё нет, и "
            "заполняет их шаги и критерии; «Отложено» заполняется, только если эта стадия приложения уже есть в "
            "воронке (вторая не создаётся).",
            "An example written for this app for a B2B sale: seven working stages, Postponed and won, each with "
            "the seller's steps and the criteria to move on. It is not a ready-made sales policy: edit the texts "
            "for your process after installing. The button creates the preset's stages the chosen pipeline does "
            "not have yet and fills in their steps and criteria; Postponed is filled in only if the app's stage "
            "is already in the pipeline (no second one is created).",
        ),
        "pb_preset_postponed": (
            "если в воронке есть стадия «Отложено»",
            "if the pipeline has the Postponed stage",
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
    """One status of the preset: a working stage (created by `code` / either name), the app's «Отложено» stage
    (`postponed`: used where the portal has it, never created here) or the pipeline's won stage (`won`)."""

    code: str
    name: Label
    steps: Label
    criteria: Label
    won: bool = False
    postponed: bool = False


def _lines(*pairs: tuple[str, str]) -> Label:
    """A multi-line text, one (Russian, English) pair a line."""
    return Label("\n".join(ru for ru, _ in pairs), "\n".join(en for _, en in pairs))


# Our own example of a Russian B2B sale in nine statuses (seven working stages, «Отложено», won), written for
# this app on the usual structure of such playbooks: per status, what the seller does and what must be true to
# move on. Not a copy of any published text; the admin edits it for his process after installing.
PRESET: tuple[PresetStage, ...] = (
    PresetStage(
        "RC_PB_LEAD",
        Label("Новое обращение", "New inquiry"),
        _lines(
            (
                "Взять обращение в работу в течение 15 минут в рабочее время",
                "Take the inquiry within 15 minutes in working hours",
            ),
            (
                "Проверить по ИНН и телефону, нет ли компании в CRM (дубль — объединить)",
                "Check by tax number (INN) and phone whether the company is already in the CRM (merge a duplicate)",
            ),
            (
                "Позвонить, представиться, узнать повод обращения",
                "Call, introduce yourself, find out why they contacted us",
            ),
            ("Заполнить компанию, контакт, источник и ИНН", "Fill in the company, the contact, the source and the INN"),
        ),
        Label(
            "Состоялся разговор с представителем компании; компания, контакт и источник заполнены",
            "You have spoken to someone at the company; the company, the contact and the source are filled in",
        ),
    ),
    PresetStage(
        "RC_PB_QUALIFY",
        Label("Квалификация", "Qualification"),
        _lines(
            (
                "Выяснить задачу клиента, объём и желаемые сроки",
                "Find out the client's task, the volume and the timing",
            ),
            (
                "Узнать бюджет и порядок закупки (прямой договор, тендер, 44-ФЗ/223-ФЗ)",
                "Ask about the budget and the buying process (direct contract, tender, 44-FZ/223-FZ)",
            ),
            ("Определить ЛПР и тех, кто влияет на решение", "Find the decision maker and who influences the decision"),
            ("Назначить встречу или видеозвонок с ЛПР", "Set a meeting or video call with the decision maker"),
        ),
        Label(
            "Есть задача, бюджет и сроки; ЛПР известен; встреча с ЛПР назначена (задача в CRM)",
            "There is a task, a budget and a timeline; the decision maker is known; a meeting with him is set "
            "(a task in the CRM)",
        ),
    ),
    PresetStage(
        "RC_PB_NEEDS",
        Label("Встреча и презентация", "Meeting and presentation"),
        _lines(
            (
                "Провести встречу: расспросить о текущем решении, проблемах и критериях выбора",
                "Hold the meeting: ask about the current solution, the problems and the selection criteria",
            ),
            (
                "Показать решение на задачах клиента, а не весь каталог",
                "Show the solution on the client's own tasks, not the whole catalogue",
            ),
            ("Ответить на вопросы и возражения", "Answer questions and objections"),
            (
                "Отправить резюме встречи письмом и договориться о сроке КП",
                "Email a summary of the meeting and agree on when the proposal is due",
            ),
        ),
        Label(
            "Потребность и критерии выбора подтверждены клиентом письменно; согласован срок КП",
            "The need and the selection criteria are confirmed by the client in writing; the proposal's date is agreed",
        ),
    ),
    PresetStage(
        "RC_PB_OFFER",
        Label("Коммерческое предложение", "Proposal"),
        _lines(
            (
                "Подготовить КП под критерии клиента: состав, цена, сроки, условия оплаты и поставки",
                "Prepare the proposal on the client's criteria: scope, price, deadlines, payment and delivery terms",
            ),
            (
                "Согласовать скидку с руководителем, если она больше стандартной",
                "Agree a discount above the standard one with your head of sales",
            ),
            (
                "Отправить КП ЛПР и поставить задачу: звонок по КП через 1–2 дня",
                "Send it to the decision maker and set a task: call about it in 1–2 days",
            ),
        ),
        Label(
            "КП получено ЛПР, есть обратная связь; сумма сделки заполнена",
            "The decision maker has the proposal and gave feedback; the deal amount is filled in",
        ),
    ),
    PresetStage(
        "RC_PB_NEGOTIATE",
        Label("Переговоры и согласование", "Negotiation"),
        _lines(
            (
                "Согласовать цену, объём, сроки и условия оплаты",
                "Agree on the price, the volume, the deadlines and the payment terms",
            ),
            (
                "Отработать возражения; при запросе скидки подключить руководителя",
                "Handle objections; bring in your head of sales when a discount is asked for",
            ),
            (
                "Пройти согласование у клиента (закупки, безопасность, юристы)",
                "Get through the client's approvals (procurement, security, lawyers)",
            ),
            ("Запросить реквизиты для договора", "Ask for the company details for the contract"),
        ),
        Label(
            "Условия согласованы с ЛПР; реквизиты получены; клиент готов подписать договор",
            "The terms are agreed with the decision maker; the company details are in; the client is ready to sign",
        ),
    ),
    PresetStage(
        "RC_PB_CONTRACT",
        Label("Договор", "Contract"),
        _lines(
            ("Подготовить договор по шаблону компании", "Draw up the contract on the company's template"),
            (
                "Согласовать протокол разногласий, если он есть",
                "Settle the client's change list (protocol of disagreements), if any",
            ),
            (
                "Подписать договор (ЭДО или оригиналы)",
                "Get the contract signed (electronic document exchange or originals)",
            ),
        ),
        Label("Договор подписан обеими сторонами", "The contract is signed by both parties"),
    ),
    PresetStage(
        "RC_PB_INVOICE",
        Label("Счёт и оплата", "Invoice and payment"),
        _lines(
            (
                "Выставить счёт и отправить его бухгалтерии клиента",
                "Issue the invoice and send it to the client's accounts department",
            ),
            (
                "Поставить задачу на контроль оплаты в срок по договору",
                "Set a task to check the payment by the contract's due date",
            ),
            ("За 2 дня до срока напомнить клиенту об оплате", "Remind the client 2 days before the due date"),
        ),
        Label(
            "Оплата поступила (или получено гарантийное письмо при отсрочке)",
            "The payment has arrived (or a letter of guarantee for deferred payment)",
        ),
    ),
    PresetStage(
        POSTPONE_STAGE_CODE,
        POSTPONE_STAGE,
        _lines(
            (
                "Указать причину переноса и дату, когда вернуться к клиенту",
                "Set the postpone reason and the date to get back to the client",
            ),
            (
                "Договориться с клиентом о дате следующего контакта",
                "Agree with the client on the date of the next contact",
            ),
            (
                "В день возврата позвонить и вернуть сделку на рабочую стадию",
                "On the return date call the client and move the deal back to a working stage",
            ),
        ),
        Label(
            "Клиент снова готов обсуждать покупку — сделка возвращается на стадию, где остановилась",
            "The client is ready to talk about buying again — the deal goes back to the stage where it stopped",
        ),
        postponed=True,
    ),
    PresetStage(
        "WON",
        Label("Успешно реализовано", "Deal won"),
        _lines(
            (
                "Передать заказ в исполнение и проконтролировать отгрузку",
                "Hand the order over for delivery and follow the shipment",
            ),
            (
                "Подписать закрывающие документы (акт или УПД)",
                "Get the closing documents signed (certificate of completion or UPD)",
            ),
            ("Попросить отзыв и рекомендации", "Ask for a review and referrals"),
            ("Поставить задачу на повторную продажу", "Set a task for a repeat sale"),
        ),
        Label(
            "Заказ исполнен, закрывающие документы подписаны",
            "The order is delivered and the closing documents are signed",
        ),
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
            "postponed": item.postponed,
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
    stages (Conditional refusal, then «Отложено»), and store their steps and criteria, «Отложено»'s only where
    the app has that stage in the pipeline (the texts of other stages are kept). The caller commits.

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
            if not item.won and not item.postponed:
                stage_ids[item.code] = crm.ensure_stage(pipeline.id, preset_spec(item, language))
        working = [stage_ids[item.code] for item in PRESET if not item.won and not item.postponed]
        own = [stages.known_stage(portal, pipeline.id), postpone.known_stage(portal, pipeline.id)]
        crm.order_stages(pipeline.id, [*working, *[stage_id for stage_id in own if stage_id]])
    postponed = postpone.known_stage(portal, pipeline.id)
    if postponed and postponed in before:
        stage_ids[POSTPONE_STAGE_CODE] = postponed
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
    closed deal or a stage the playbook does not follow (Conditional refusal, «Отложено»). «Отложено» is never
    the next stage: a deal goes there only when it is put off."""
    postponed = postpone.known_stage(portal, pipeline.id)
    if stage_id == postponed:
        return None
    ordered = playbook_stages(portal, pipeline)
    index = next((i for i, stage in enumerate(ordered) if stage.id == stage_id), None)
    if index is None or ordered[index].semantics != "process":
        return None
    later = [stage for stage in ordered[index + 1 :] if stage.semantics == "process" and stage.id != postponed]
    if later:
        return later[0]
    return next((stage for stage in ordered if stage.semantics == "success"), None)


def deal_view(
    portal: Portal, crm: CrmClient, deal: Deal, language: str | None = None, *, facts: bool = True
) -> dict[str, Any]:
    """What the deal's tab shows: the current stage with its steps and criteria, the next stage, the fields it
    requires that this deal lacks, and whether an open task is needed and present; for a deal in «Условный
    отказ» or «Отложено», `waiting` (what applies there, in `language`, the portal's by default; the deal's own
    facts there only when `facts`)."""
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
        "waiting": playbook_waiting.waiting_view(portal, pipeline, deal, language or portal.language, facts=facts),
    }
