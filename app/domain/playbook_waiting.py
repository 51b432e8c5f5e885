"""The deal tab for a deal that waits instead of working: in «Условный отказ» (under QA review) or in «Отложено».

CRM-agnostic: the database and the deal the port read. `waiting_view` answers None for a working or closed
stage; otherwise what the tab shows in place of the seller's next stage: a title, the facts (the review's state,
the refusal reason and comment; or the postpone reason and the return date) and what happens next, all in the
page's language. app.domain.playbook.deal_view adds it as `waiting`.
"""

from __future__ import annotations

from typing import Any

from app.core import i18n
from app.core.models import Portal, Postponement, RefusalCase
from app.core.timezones import zone_name
from app.crm.port import Deal, Pipeline
from app.domain import postpone, reasons, review

i18n.register(
    {
        "pbw_refusal_title": ("Сделка на проверке ОКК", "The deal is under QA review"),
        "pbw_refusal_state": ("Проверка", "Review"),
        "pbw_refusal_reason": ("Причина отказа", "Refusal reason"),
        "pbw_refusal_comment": ("Комментарий к отказу", "Refusal comment"),
        "pbw_refusal_since": ("На проверке с", "Under review since"),
        "pbw_refusal_no_case": (
            "Проверка по сделке ещё не открыта: она откроется, когда приложение обработает перевод сделки.",
            "The review is not open yet: it opens once the app has processed the move.",
        ),
        "pbw_refusal_awaiting_review": (
            "Сейчас: сотрудник ОКК прослушивает записи звонков по сделке и проверяет причину отказа.",
            "Now: a QA officer listens to the deal's call recordings and checks the refusal reason.",
        ),
        "pbw_refusal_callback_scheduled": (
            "Сейчас: записи причину не подтвердили — ОКК звонит клиенту и спрашивает, отказывался ли он.",
            "Now: the recordings did not confirm the reason — QA calls the client to ask whether he refused.",
        ),
        "pbw_refusal_confirmed": (
            "Сейчас: отказ подтверждён — ОКК закроет сделку как проигранную или предложит её клиенту снова.",
            "Now: the refusal is confirmed — QA will close the deal as lost or offer it to the client again.",
        ),
        "pbw_refusal_unreachable": (
            "Сейчас: клиент не ответил на звонки ОКК — решение примет руководитель продаж.",
            "Now: the client did not answer QA's calls — a head of sales decides.",
        ),
        "pbw_refusal_outcomes": (
            "Если клиент подтвердит отказ, сделку закроют как проигранную. Если окажется, что клиент не отказывался, "
            "сделку передадут в продажи другому менеджеру, а менеджеру, допустившему утечку, назначат штраф "
            "в размере стоимости лида.",
            "If the client confirms the refusal, the deal is closed as lost. If it turns out the client did not "
            "refuse, the deal goes back to sales under another manager, and the manager who leaked it is fined the "
            "lead's cost.",
        ),
        "pbw_refusal_withdraw": (
            "Передумали? Переведите сделку обратно на рабочую стадию — проверка будет отозвана.",
            "Changed your mind? Move the deal back to a working stage: the review is withdrawn.",
        ),
        "pbw_postponed_title": ("Сделка отложена", "The deal is postponed"),
        "pbw_postponed_reason": ("Причина переноса", "Postpone reason"),
        "pbw_postponed_date": ("Дата возврата", "Return date"),
        "pbw_postponed_since": ("Отложена", "Postponed on"),
        "pbw_postponed_task": (
            "{day} ответственный за сделку получит задачу «Вернуться к сделке» — свяжитесь с клиентом.",
            '{day}: the deal\'s responsible gets the task "Return to the deal" — get back to the client.',
        ),
        "pbw_postponed_task_any": (
            "В день возврата ответственный за сделку получит задачу «Вернуться к сделке» — свяжитесь с клиентом.",
            'On the return date the deal\'s responsible gets the task "Return to the deal" — get back to the client.',
        ),
        "pbw_postponed_moves": (
            "В тот же день сделка вернётся на стадию «{stage}».",
            'On that day the deal moves back to the stage "{stage}".',
        ),
        "pbw_postponed_stays": (
            "Сделка останется в «Отложено»: после разговора с клиентом переведите её на рабочую стадию сами.",
            "The deal stays in Postponed: after talking to the client, move it to a working stage yourself.",
        ),
        "pbw_postponed_no_date": (
            "Дата возврата не указана: сделка не вернётся в работу сама.",
            "No return date is set: the deal will not come back to work by itself.",
        ),
        "pbw_postponed_early": (
            "Вернуть сделку раньше можно в любой момент: переведите её на рабочую стадию. Отложенная сделка — "
            "не отказ: проверки ОКК и штрафа нет.",
            "You can bring the deal back earlier at any time: move it to a working stage. A postponed deal is not "
            "a refusal: there is no QA review and no fine.",
        ),
    }
)


def _refusal_stages(portal: Portal) -> set[str]:
    return set(((portal.settings or {}).get("refusal_stages") or {}).values())


def _fact(key: str, label: str, value: str) -> dict[str, str]:
    return {"key": key, "label": label, "value": value}


def _refusal(portal: Portal, deal: Deal, language: str) -> dict[str, Any]:
    t = i18n.STRINGS
    case = review.latest_case_for(portal.id, deal.id)
    if case is None or case.state not in RefusalCase.OPEN_STATES:
        return {
            "kind": "refusal",
            "title": i18n.translate("pbw_refusal_title", language),
            "facts": [],
            "next": [i18n.translate("pbw_refusal_no_case", language)],
        }
    zone = zone_name(portal)
    state_key = f"review_state_{case.state}"
    # After step 1 found the recordings do not confirm the reason, the case still awaits review, but the tab's
    # header already says a call is needed: say the same here, and what happens now.
    needs_call = case.state == RefusalCase.AWAITING_REVIEW and review.recordings_verdict(case) in review.STEP1[1:]
    now_key = "pbw_refusal_callback_scheduled" if needs_call else f"pbw_refusal_{case.state}"
    rows = [
        _fact(
            "state",
            i18n.translate("pbw_refusal_state", language),
            review.state_label(case, language) if state_key in t else case.state,
        ),
        _fact(
            "reason", i18n.translate("pbw_refusal_reason", language), reasons.name_of(portal.id, case.reason, language)
        ),
    ]
    if case.comment:
        rows.append(_fact("comment", i18n.translate("pbw_refusal_comment", language), case.comment))
    rows.append(
        _fact("since", i18n.translate("pbw_refusal_since", language), i18n.when(case.opened_at, language, zone))
    )
    return {
        "kind": "refusal",
        "title": i18n.translate("pbw_refusal_title", language),
        "facts": rows,
        "next": [
            i18n.translate(now_key, language),
            i18n.translate("pbw_refusal_outcomes", language),
            i18n.translate("pbw_refusal_withdraw", language),
        ],
    }


def _postponed(portal: Portal, pipeline: Pipeline | None, deal: Deal, language: str, facts: bool) -> dict[str, Any]:
    row: Postponement | None = postpone.open_postponement(portal.id, deal.id)
    reason = row.reason if row is not None else deal.postpone_reason
    due = row.due_date if row is not None else deal.postpone_date
    rows = [
        _fact("reason", i18n.translate("pbw_postponed_reason", language), postpone.reason_name(reason, language)),
        _fact("date", i18n.translate("pbw_postponed_date", language), i18n.day(due, language)),
    ]
    if row is not None:
        rows.append(
            _fact(
                "since",
                i18n.translate("pbw_postponed_since", language),
                i18n.day(row.postponed_at, language, zone_name(portal)),
            )
        )
    if due is None:
        lines = [i18n.translate("pbw_postponed_no_date", language)]
    else:
        task = i18n.translate("pbw_postponed_task", language).format(day=i18n.day(due, language))
        lines = [task if facts else i18n.translate("pbw_postponed_task_any", language)]
        back = postpone.return_stages(portal).get(deal.pipeline_id)
        names = {stage.id: stage.name for stage in pipeline.stages} if pipeline is not None else {}
        if back and back in names:
            lines.append(i18n.translate("pbw_postponed_moves", language).format(stage=names[back]))
        else:
            lines.append(i18n.translate("pbw_postponed_stays", language))
    lines.append(i18n.translate("pbw_postponed_early", language))
    return {
        "kind": "postponed",
        "title": i18n.translate("pbw_postponed_title", language),
        "facts": rows,
        "next": lines,
    }


def waiting_view(
    portal: Portal, pipeline: Pipeline | None, deal: Deal, language: str, *, facts: bool = True
) -> dict[str, Any] | None:
    """What the tab shows for a deal in «Условный отказ» or «Отложено» (None in any other stage); without
    `facts`, only what happens there (no reason, comment or date of this deal)."""
    view: dict[str, Any] | None = None
    if deal.stage_id in _refusal_stages(portal):
        view = _refusal(portal, deal, language)
    elif deal.stage_id and deal.stage_id == postpone.known_stage(portal, deal.pipeline_id):
        view = _postponed(portal, pipeline, deal, language, facts)
    if view is not None and not facts:
        view["facts"] = []
    return view
